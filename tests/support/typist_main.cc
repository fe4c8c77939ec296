// slingshot-typist: a scripted VNC user for demos (a real RFB client,
// libvncclient), and a reader of the notepad's document.
//   slingshot-typist type HOST:PORT TEXT [GAP_MS]   types TEXT one key at a
//       time, waiting for each key's screen update; prints keystroke-to-screen
//       p50 / p99 / max
//   slingshot-typist doc HOST:PORT                   prints the notepad's document
//       (its control port)
//   slingshot-typist screen HOST:PORT TEXT [SECONDS] waits until the screen
//       shown at HOST:PORT (RFB) is the notepad's rendering of TEXT; exits 1
//       with the count of differing pixels if it is not within SECONDS
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "notepad_client.h"
#include "slingshot/cli.h"

using namespace slingshot;
using namespace slingshot::testing;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: slingshot-typist type HOST:PORT TEXT [GAP_MS] | doc HOST:PORT | "
                         "screen HOST:PORT TEXT [SECONDS]\n");
    return 2;
  }
  std::string cmd = argv[1];
  auto addr = cli::ParseHostPort(argv[2]);
  if (!addr.ok()) {
    std::fprintf(stderr, "%s\n", addr.status().ToString().c_str());
    return 2;
  }
  Endpoint ep{addr->first, addr->second};
  if (cmd == "doc") {
    auto d = DocumentText(ep);
    if (!d.ok()) {
      std::fprintf(stderr, "%s\n", d.status().ToString().c_str());
      return 1;
    }
    std::printf("%s\n", d->c_str());
    return 0;
  }
  if (cmd == "screen" && argc >= 4) {
    std::string error;
    auto font = notepad::LoadPsf(GuestDir() + "/notepad.psf", &error);
    if (!font) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    auto s = RfbSession::Connect(ep);
    Status shown = s.ok() ? (*s)->WaitForScreen(*font, argv[3], std::chrono::seconds(argc > 4 ? std::atoi(argv[4]) : 30))
                          : s.status();
    if (!shown.ok()) {
      std::fprintf(stderr, "%s\n", shown.ToString().c_str());
      return 1;
    }
    std::printf("the screen shows the %zu characters\n", std::string(argv[3]).size());
    return 0;
  }
  if (cmd != "type" || argc < 4) return 2;
  std::string text = argv[3];
  int gap = argc > 4 ? std::atoi(argv[4]) : 30;
  auto s = RfbSession::Connect(ep);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
    return 1;
  }
  std::vector<double> ms;
  for (char c : text) {
    (void)(*s)->Drain(5);
    uint32_t key = c == '\n' ? 0xff0d : static_cast<unsigned char>(c);
    auto t = (*s)->KeyToScreenMs(key, 10000);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    ms.push_back(*t);
    std::this_thread::sleep_for(std::chrono::milliseconds(gap));
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) { return ms[std::min(ms.size() - 1, static_cast<size_t>(p * (ms.size() - 1) + 0.5))]; };
  std::printf("typed %zu keys: keystroke to screen p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", ms.size(), pct(0.5),
              pct(0.99), ms.back());
  return 0;
}
