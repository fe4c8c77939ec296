// A user-space link emulator for tests and benchmarks (PLATFORM.md: this
// kernel has no netem). It listens on a loopback port and relays each
// connection to a target, delaying and rate-limiting each direction like a
// link with a bandwidth and a propagation delay:
//   departure = max(arrival, previous departure) + bytes / rate
//   delivery  = departure + one-way delay
// with a bounded queue (so TCP's flow control still works end to end).
//
// Not for production paths: it exists so that benchmarks can compare
// against a known link rate.
#ifndef SLINGSHOT_TESTS_LINK_EMULATOR_H_
#define SLINGSHOT_TESTS_LINK_EMULATOR_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "slingshot/base/mutex.h"
#include "slingshot/base/status.h"

namespace slingshot::testing {

struct LinkProfile {
  double rate_bits_per_s = 50e6;  // per direction
  double rtt_ms = 40;             // round trip: each direction gets half
  size_t queue_bytes = 4 << 20;   // bytes in flight per direction before the reader blocks
  // One bottleneck for all connections (an access link): in each direction
  // every connection's bytes depart behind the others'. Else each
  // connection has a link of its own.
  bool shared = false;
};

class LinkEmulator {
 public:
  // Relays listen_host:port() to target_host:target_port.
  static Result<std::unique_ptr<LinkEmulator>> Start(const std::string& target_host, uint16_t target_port,
                                                     LinkProfile profile,
                                                     const std::string& listen_host = "127.0.0.1",
                                                     uint16_t listen_port = 0);
  ~LinkEmulator();
  uint16_t port() const { return port_; }
  uint64_t bytes_relayed() const { return bytes_; }
  void Stop();

 private:
  LinkEmulator() = default;
  void AcceptLoop();
  void Pump(int from, int to, int direction);  // 0: to the target, 1: back

  std::string target_host_;
  uint16_t target_port_ = 0;
  LinkProfile profile_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> bytes_{0};
  std::thread acceptor_;
  Mutex mu_;
  std::vector<std::thread> pumps_ GUARDED_BY(mu_);
  std::vector<int> fds_ GUARDED_BY(mu_);
  Mutex shared_mu_;
  std::chrono::steady_clock::time_point shared_departure_[2] GUARDED_BY(shared_mu_);
};

}  // namespace slingshot::testing

#endif  // SLINGSHOT_TESTS_LINK_EMULATOR_H_
