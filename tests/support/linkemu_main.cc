// slingshot-linkemu: the test link emulators as a process, for tests and
// benchmarks across network namespaces.
//   slingshot-linkemu LISTEN_HOST:PORT TARGET_HOST:PORT RTT_MS RATE_MBIT
//       relays one TCP port (LinkEmulator), delaying and pacing each way;
//   slingshot-linkemu link TAP_A TAP_B A_TO_B [B_TO_A] [--seed N]
//       creates taps TAP_A and TAP_B and carries every frame between them
//       (TapLink). Each direction is RATE_MBIT:RTT_MS[:LOSS] (half the RTT
//       each way); B_TO_A defaults to A_TO_B. Move the taps where they
//       belong once it prints "ready"; on exit it prints what it carried.
// Runs until SIGTERM/SIGINT.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "link_emulator.h"
#include "slingshot/cli/cli.h"
#include "tap_link.h"

namespace {

using namespace slingshot;

int Fail(const Status& s, int code) {
  std::fprintf(stderr, "slingshot-linkemu: %s\n", s.ToString().c_str());
  return code;
}

int RunLink(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: slingshot-linkemu link TAP_A TAP_B RATE_MBIT:RTT_MS[:LOSS] [B_TO_A] [--seed N]\n");
    return 2;
  }
  std::string b_to_a_text = argv[4];
  uint64_t seed = 1;
  for (int i = 5; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else {
      b_to_a_text = argv[i];
    }
  }
  auto ab = testing::ParseLinkDirection(argv[4]);
  if (!ab.ok()) return Fail(ab.status(), 2);
  auto ba = testing::ParseLinkDirection(b_to_a_text);
  if (!ba.ok()) return Fail(ba.status(), 2);
  cli::BlockStopSignals();
  auto link = testing::TapLink::Create(argv[2], argv[3], *ab, *ba, seed);
  if (!link.ok()) return Fail(link.status(), 1);
  std::printf("link %s <-> %s ready: %s -> %s %s, back %s\n", argv[2], argv[3], argv[2], argv[3], argv[4],
              b_to_a_text.c_str());
  std::fflush(stdout);
  cli::WaitForStopSignal();
  (*link)->Stop();
  auto print = [](const char* from, const char* to, const testing::LinkCounters& c) {
    std::printf("%s -> %s: %" PRIu64 " frames, %" PRIu64 " bytes delivered; %" PRIu64 " lost, %" PRIu64
                " dropped by a full queue\n",
                from, to, c.frames, c.bytes, c.lost, c.queue_drops);
  };
  print(argv[2], argv[3], (*link)->a_to_b());
  print(argv[3], argv[2], (*link)->b_to_a());
  return 0;
}

int RunRelay(char** argv) {
  auto listen = cli::ParseHostPort(argv[1]);
  auto target = cli::ParseHostPort(argv[2]);
  if (!listen.ok()) return Fail(listen.status(), 2);
  if (!target.ok()) return Fail(target.status(), 2);
  testing::LinkProfile p;
  p.rtt_ms = std::atof(argv[3]);
  p.rate_bits_per_s = std::atof(argv[4]) * 1e6;
  cli::BlockStopSignals();
  auto l = testing::LinkEmulator::Start(target->first, target->second, p, listen->first, listen->second);
  if (!l.ok()) return Fail(l.status(), 1);
  std::printf("relaying %s:%u -> %s (rtt %s ms, %s Mbit/s)\n", listen->first.c_str(), (*l)->port(), argv[2], argv[3],
              argv[4]);
  std::fflush(stdout);
  cli::WaitForStopSignal();
  (*l)->Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "link") == 0) return RunLink(argc, argv);
  if (argc == 5) return RunRelay(argv);
  std::fprintf(stderr,
               "usage: slingshot-linkemu LISTEN_HOST:PORT TARGET_HOST:PORT RTT_MS RATE_MBIT\n"
               "       slingshot-linkemu link TAP_A TAP_B RATE_MBIT:RTT_MS[:LOSS] [B_TO_A] [--seed N]\n");
  return 2;
}
