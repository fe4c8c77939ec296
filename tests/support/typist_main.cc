// slingshot-typist: a scripted VNC user for demos (a real RFB client,
// libvncclient), and a reader of the notepad's document.
//   slingshot-typist type HOST:PORT TEXT [GAP_MS] [KEY_TIMEOUT_MS]   types
//       TEXT one key at a time, waiting for each key's screen update (10 s at
//       most by default); prints keystroke-to-screen p50 / p99 / max
//   slingshot-typist key HOST:PORT KEYSYM           presses one key (an X11 keysym,
//       e.g. 0xffc0 for F3) and waits for the screen update it brings
//   slingshot-typist shot HOST:PORT FILE.ppm          saves the screen as a PPM image
//   slingshot-typist doc HOST:PORT                   prints the notepad's document
//       (its control port)
//   slingshot-typist screen HOST:PORT TEXT [SECONDS] waits until the screen
//       shown at HOST:PORT (RFB) is the notepad's rendering of TEXT; exits 1
//       with the count of differing pixels if it is not within SECONDS
//   slingshot-typist session HOST:PORT TEXT_FILE START_DOC_FILE OUT_FILE
//       an editing session, as a user at a VNC viewer: open the document
//       (F3), type TEXT_FILE's characters, save (F2), close (Escape). Each
//       key waits until the screen shows exactly its effect (the notepad's
//       rendering of the document it must hold by then, starting from
//       START_DOC_FILE's text) before the next. A notepad found open is
//       closed first, untimed. OUT_FILE gets one "STEP MS" line per key
//       (open, key, save, close) and a last "task MS" line.
//   slingshot-typist desktop-session HOST:PORT TEXT_FILE OUT_FILE
//       the same session on the desktop guest (image-build/desktop-image.sh):
//       Enter opens the document in nano, TEXT_FILE is typed, Ctrl-O and
//       Enter save, Ctrl-X closes. Its pixels are not known in advance, so
//       each key waits for the first screen update after it, then for the
//       screen to be quiet for 30 ms (x11vnc may send one redraw in two
//       updates) before the next key; "task" is the sum of the keys' times,
//       without those quiet waits.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "notepad_client.h"
#include "slingshot/cli/cli.h"

using namespace slingshot;
using namespace slingshot::testing;
using Clock = std::chrono::steady_clock;

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

// The keysym a viewer sends for a character of typed text.
uint32_t KeyFor(char c) { return c == '\n' ? 0xff0d : static_cast<unsigned char>(c); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * double(v.size() - 1) + 0.5))];
}

int Session(const Endpoint& ep, const std::string& text_file, const std::string& doc_file, const std::string& out_file) {
  std::string text, doc, error;
  if (!ReadFile(text_file, &text) || !ReadFile(doc_file, &doc)) {
    std::fprintf(stderr, "cannot read %s or %s\n", text_file.c_str(), doc_file.c_str());
    return 2;
  }
  auto font = notepad::LoadPsf(GuestDir() + "/notepad.psf", &error);
  if (!font) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  auto s = RfbSession::Connect(ep);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
    return 1;
  }
  std::vector<uint32_t> want(size_t(notepad::kWidth) * notepad::kHeight);
  auto expect = [&](notepad::Mode mode) { notepad::Render(*font, doc, want.data(), mode); };
  std::ofstream out(out_file, std::ios::trunc);
  std::vector<double> keys;
  auto step = [&](const char* name, uint32_t key) -> bool {
    auto ms = (*s)->KeyUntilScreenMs(key, want, 30000);
    if (!ms.ok()) {
      std::fprintf(stderr, "%s (key 0x%x): %s\n", name, key, ms.status().ToString().c_str());
      return false;
    }
    out << name << ' ' << *ms << '\n';
    if (std::string(name) == "key") keys.push_back(*ms);
    return true;
  };
  (void)(*s)->Drain(300);
  expect(notepad::Mode::kClosed);
  if (!(*s)->ScreenEquals(want) && !step("prepare", notepad::kKeyClose)) return 1;
  auto t0 = Clock::now();
  expect(notepad::Mode::kEditing);
  if (!step("open", notepad::kKeyOpen)) return 1;
  for (char c : text) {
    uint32_t key = KeyFor(c);
    notepad::ApplyKey(key, &doc);
    expect(notepad::Mode::kEditing);
    if (!step("key", key)) return 1;
  }
  expect(notepad::Mode::kSaved);
  if (!step("save", notepad::kKeySave)) return 1;
  expect(notepad::Mode::kClosed);
  if (!step("close", notepad::kKeyClose)) return 1;
  double task = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  out << "task " << task << '\n';
  out.close();
  if (!out || keys.empty()) {
    std::fprintf(stderr, "cannot write %s, or no key was typed\n", out_file.c_str());
    return 1;
  }
  std::printf("session: open, %zu keys, save, close in %.0f ms; keystroke to screen p50 %.1f ms, p99 %.1f ms\n",
              keys.size(), task, Percentile(keys, 0.5), Percentile(keys, 0.99));
  return 0;
}

int DesktopSession(const Endpoint& ep, const std::string& text_file, const std::string& out_file) {
  std::string text;
  if (!ReadFile(text_file, &text)) {
    std::fprintf(stderr, "cannot read %s\n", text_file.c_str());
    return 2;
  }
  auto s = RfbSession::Connect(ep);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
    return 1;
  }
  constexpr uint32_t kReturn = 0xff0d, kControl = 0xffe3;
  std::ofstream out(out_file, std::ios::trunc);
  std::vector<double> keys;
  double task = 0;
  auto step = [&](const char* name, uint32_t key, uint32_t modifier = 0) -> bool {
    auto ms = (*s)->KeyToScreenMs(key, 30000, modifier);
    if (!ms.ok()) {
      std::fprintf(stderr, "%s (key 0x%x): %s\n", name, key, ms.status().ToString().c_str());
      return false;
    }
    out << name << ' ' << *ms << '\n';
    task += *ms;
    if (std::string(name) == "key") keys.push_back(*ms);
    return (*s)->Drain(30).ok();
  };
  if (!(*s)->Drain(500).ok()) return 1;
  if (!step("open", kReturn)) return 1;
  for (char c : text) {
    if (!step("key", KeyFor(c))) return 1;
  }
  if (!step("save", 'o', kControl) || !step("save", kReturn) || !step("close", 'x', kControl)) return 1;
  out << "task " << task << '\n';
  out.close();
  if (!out || keys.empty()) {
    std::fprintf(stderr, "cannot write %s, or no key was typed\n", out_file.c_str());
    return 1;
  }
  std::printf("desktop session: open, %zu keys, save, close in %.0f ms of keystroke-to-screen time; p50 %.1f ms, "
              "p99 %.1f ms\n",
              keys.size(), task, Percentile(keys, 0.5), Percentile(keys, 0.99));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: slingshot-typist type HOST:PORT TEXT [GAP_MS] | key HOST:PORT KEYSYM | doc HOST:PORT | "
                         "screen HOST:PORT TEXT [SECONDS] | session HOST:PORT TEXT_FILE START_DOC_FILE OUT_FILE\n");
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
  if (cmd == "desktop-session") {
    if (argc != 5) {
      std::fprintf(stderr, "usage: slingshot-typist desktop-session HOST:PORT TEXT_FILE OUT_FILE\n");
      return 2;
    }
    return DesktopSession(ep, argv[3], argv[4]);
  }
  if (cmd == "session") {
    if (argc != 6) {
      std::fprintf(stderr, "usage: slingshot-typist session HOST:PORT TEXT_FILE START_DOC_FILE OUT_FILE\n");
      return 2;
    }
    return Session(ep, argv[3], argv[4], argv[5]);
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
  if (cmd == "shot" && argc == 4) {
    auto s = RfbSession::Connect(ep);
    Status st = s.ok() ? (*s)->Drain(500) : s.status();
    if (st.ok()) st = (*s)->SavePpm(argv[3]);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
    return 0;
  }
  if (cmd == "key" && argc == 4) {
    auto s = RfbSession::Connect(ep);
    auto t = s.ok() ? (*s)->KeyToScreenMs(static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 0)), 10000)
                    : Result<double>(s.status());
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    std::printf("key to screen %.1f ms\n", *t);
    return 0;
  }
  if (cmd != "type" || argc < 4) return 2;
  std::string text = argv[3];
  int gap = argc > 4 ? std::atoi(argv[4]) : 30;
  int key_timeout_ms = argc > 5 ? std::atoi(argv[5]) : 10000;
  auto s = RfbSession::Connect(ep);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
    return 1;
  }
  std::vector<double> ms;
  for (char c : text) {
    (void)(*s)->Drain(5);
    uint32_t key = KeyFor(c);
    auto t = (*s)->KeyToScreenMs(key, key_timeout_ms);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    ms.push_back(*t);
    std::this_thread::sleep_for(std::chrono::milliseconds(gap));
  }
  std::printf("typed %zu keys: keystroke to screen p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", ms.size(),
              Percentile(ms, 0.5), Percentile(ms, 0.99), *std::max_element(ms.begin(), ms.end()));
  return 0;
}
