// A user-space emulated network link between two TAP devices, for tests and
// benchmarks that put client, surrogates and home in network namespaces
// (PLATFORM.md: this kernel has no netem, so delay and loss cannot come from
// tc). Every Ethernet frame that one side sends is carried to the other:
//   - dropped with probability `loss` (Bernoulli, a seeded generator);
//   - dropped when the direction's queue already holds `queue_bytes`
//     (drop-tail, as a router would; TCP sees congestion as on a real link);
//   - otherwise serialized at `rate` after the frames ahead of it
//       departure = max(arrival, previous departure) + frame bits / rate
//   - and delivered `delay` after its departure.
// Each direction has its own rate, delay, loss and queue, and one thread.
//
// The taps are created in the caller's network namespace; whoever set the
// link up moves them where they belong (`ip link set NAME netns NS`, or into
// a bridge). They vanish with the TapLink.
//
// Unlike LinkEmulator (a TCP relay on one port), this carries anything a
// namespace sends, to any port, which is what a whole replication session
// needs. Not for production paths.
#ifndef SLINGSHOT_TESTS_TAP_LINK_H_
#define SLINGSHOT_TESTS_TAP_LINK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "slingshot/base/status.h"

namespace slingshot::testing {

struct LinkDirection {
  double rate_bits_per_s = 50e6;
  double delay_ms = 20;  // one way
  double loss = 0;       // probability that a frame is dropped, 0..1
  // 0: the larger of 64 KiB and 100 ms at the link's rate.
  size_t queue_bytes = 0;
};

// Parses "RATE_MBIT:RTT_MS[:LOSS]" into one direction (half the RTT each
// way): "2:60", "11:2:0.01".
Result<LinkDirection> ParseLinkDirection(const std::string& text);

struct LinkCounters {
  uint64_t frames = 0;          // delivered
  uint64_t bytes = 0;           // delivered, Ethernet header included
  uint64_t lost = 0;            // dropped by `loss`
  uint64_t queue_drops = 0;     // dropped because the queue was full
};

class TapLink {
 public:
  // Creates taps name_a and name_b (at most 15 characters each) and starts
  // carrying frames. The taps are down until someone sets them up.
  static Result<std::unique_ptr<TapLink>> Create(const std::string& name_a, const std::string& name_b,
                                                 LinkDirection a_to_b, LinkDirection b_to_a, uint64_t seed = 1);
  ~TapLink();
  TapLink(const TapLink&) = delete;
  TapLink& operator=(const TapLink&) = delete;

  LinkCounters a_to_b() const;
  // How late this machine wakes a blocked thread (measured at Create): each
  // direction adds its delay less this, so the delay seen end to end is
  // the one asked for.
  std::chrono::nanoseconds wake_latency() const { return wake_latency_; }
  LinkCounters b_to_a() const;
  void Stop();

 private:
  struct Pipe;
  TapLink() = default;
  void Run(Pipe* p);

  int fd_a_ = -1;
  int fd_b_ = -1;
  int wake_[2] = {-1, -1};  // a pipe that Stop() writes to
  std::unique_ptr<Pipe> ab_, ba_;
  std::thread ab_thread_, ba_thread_;
  std::atomic<bool> stop_{false};
  std::chrono::nanoseconds wake_latency_{0};
};

}  // namespace slingshot::testing

#endif  // SLINGSHOT_TESTS_TAP_LINK_H_
