// slingshot-linkemu: the test link emulator as a process, for tests that
// put it between network namespaces (it runs in one, relays to another).
//   slingshot-linkemu LISTEN_HOST:PORT TARGET_HOST:PORT RTT_MS RATE_MBIT
// Runs until SIGTERM/SIGINT.
#include <cstdio>
#include <cstdlib>

#include "link_emulator.h"
#include "slingshot/cli.h"

int main(int argc, char** argv) {
  using namespace slingshot;
  if (argc != 5) {
    std::fprintf(stderr, "usage: slingshot-linkemu LISTEN_HOST:PORT TARGET_HOST:PORT RTT_MS RATE_MBIT\n");
    return 2;
  }
  auto listen = cli::ParseHostPort(argv[1]);
  auto target = cli::ParseHostPort(argv[2]);
  if (!listen.ok() || !target.ok()) {
    std::fprintf(stderr, "bad address\n");
    return 2;
  }
  testing::LinkProfile p;
  p.rtt_ms = std::atof(argv[3]);
  p.rate_bits_per_s = std::atof(argv[4]) * 1e6;
  cli::BlockStopSignals();
  auto l = testing::LinkEmulator::Start(target->first, target->second, p, listen->first, listen->second);
  if (!l.ok()) {
    std::fprintf(stderr, "%s\n", l.status().ToString().c_str());
    return 1;
  }
  std::printf("relaying %s:%u -> %s (rtt %s ms, %s Mbit/s)\n", listen->first.c_str(), (*l)->port(), argv[2], argv[3],
              argv[4]);
  std::fflush(stdout);
  cli::WaitForStopSignal();
  (*l)->Stop();
  return 0;
}
