// The namespace link emulator (TapLink) gives what it is asked for: the
// benchmarks' network profiles and their physical limits are computed from
// the configured rates and round trips, so the achieved round trip and rate
// must be within 5% of them. Measured with real sockets in two network
// namespaces, and the rate from the receiving interface's own kernel
// counter, not from the emulator. (An accuracy check of test equipment, not
// a speed test of Slingshot.) Needs root, as the e2e tests do.
#include "tap_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "process.h"

namespace slingshot::testing {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A socket created inside network namespace ns (sockets stay in the
// namespace they were made in, whichever thread uses them later).
int SocketIn(const std::string& ns, int type) {
  int fd = -1;
  std::thread([&] {
    int nsfd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) return;
    ::close(nsfd);
    fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  }).join();
  return fd;
}

sockaddr_in Addr(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

uint64_t RxBytes(const std::string& ns, const std::string& dev) {
  std::string out = Shell("ip -n " + ns + " -j -s link show dev " + dev);
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.is_array() || j.empty()) return 0;
  return j[0]["stats64"]["rx"]["bytes"].get<uint64_t>();
}

// Round trips of 8-byte UDP pings from namespace `from` to an echo at
// `to_ip` in namespace `to`, sorted (the first, which waits for ARP, left out).
std::vector<double> Pings(const std::string& from, const std::string& to, const char* to_ip) {
  std::vector<double> rtts;
  int echo = SocketIn(to, SOCK_DGRAM);
  int ping = SocketIn(from, SOCK_DGRAM);
  sockaddr_in eb = Addr(to_ip, 7001);
  if (echo < 0 || ping < 0 || ::bind(echo, reinterpret_cast<sockaddr*>(&eb), sizeof(eb)) != 0) {
    ADD_FAILURE() << "cannot set up the echo in " << to;
    return rtts;
  }
  std::thread echoer([echo] {
    char b[64];
    sockaddr_in peer{};
    for (;;) {
      socklen_t len = sizeof(peer);
      ssize_t n = ::recvfrom(echo, b, sizeof(b), 0, reinterpret_cast<sockaddr*>(&peer), &len);
      if (n <= 0 || b[0] == 'Q') break;
      ::sendto(echo, b, size_t(n), 0, reinterpret_cast<sockaddr*>(&peer), len);
    }
  });
  timeval tv{1, 0};
  setsockopt(ping, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  for (int i = 0; i < 31; ++i) {
    char b[8] = {'P'};
    auto t0 = Clock::now();
    ::sendto(ping, b, sizeof(b), 0, reinterpret_cast<sockaddr*>(&eb), sizeof(eb));
    if (::recv(ping, b, sizeof(b), 0) == sizeof(b) && i > 0) {
      rtts.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::this_thread::sleep_for(2ms);
  }
  ::sendto(ping, "Q", 1, 0, reinterpret_cast<sockaddr*>(&eb), sizeof(eb));
  echoer.join();
  ::close(echo);
  ::close(ping);
  std::sort(rtts.begin(), rtts.end());
  return rtts;
}

struct Case {
  const char* name;
  double rate_mbit;
  double rtt_ms;
};

class TapLinkTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces and taps), as the e2e tests do";
    std::string id = std::to_string(::getpid() % 100000);
    ns_a_ = "sslink-a-" + id;
    ns_b_ = "sslink-b-" + id;
    tap_a_ = "sslA" + id;
    tap_b_ = "sslB" + id;
  }
  void TearDown() override {
    link_.reset();
    Shell("ip netns del " + ns_a_ + " 2>/dev/null; ip netns del " + ns_b_ + " 2>/dev/null");
  }
  // Namespaces A (10.79.0.1) and B (10.79.0.2), joined by the link.
  void Join(LinkDirection a_to_b, LinkDirection b_to_a) {
    auto l = TapLink::Create(tap_a_, tap_b_, a_to_b, b_to_a, 42);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    link_ = std::move(*l);
    int rc = 0;
    std::string out = Shell("set -e; ip netns add " + ns_a_ + "; ip netns add " + ns_b_ + "; ip link set " + tap_a_ +
                                " netns " + ns_a_ + "; ip link set " + tap_b_ + " netns " + ns_b_ + "; ip -n " +
                                ns_a_ + " addr add 10.79.0.1/24 dev " + tap_a_ + "; ip -n " + ns_b_ +
                                " addr add 10.79.0.2/24 dev " + tap_b_ + "; for n in " + ns_a_ + " " + ns_b_ +
                                "; do ip -n $n link set lo up; done; ip -n " + ns_a_ + " link set " + tap_a_ +
                                " up; ip -n " + ns_b_ + " link set " + tap_b_ + " up",
                            &rc);
    ASSERT_EQ(rc, 0) << out;
  }
  // The median ping between two namespaces joined by a veth pair.
  double BaseRtt() {
    std::string va = ns_a_ + "v", vb = ns_b_ + "v";
    int rc = 0;
    std::string out = Shell("set -e; ip netns add " + va + "; ip netns add " + vb + "; ip link add " + tap_a_ +
                                "v netns " + va + " type veth peer name " + tap_b_ + "v netns " + vb + "; ip -n " +
                                va + " addr add 10.79.1.1/24 dev " + tap_a_ + "v; ip -n " + vb +
                                " addr add 10.79.1.2/24 dev " + tap_b_ + "v; ip -n " + va + " link set " + tap_a_ +
                                "v up; ip -n " + vb + " link set " + tap_b_ + "v up",
                            &rc);
    EXPECT_EQ(rc, 0) << out;
    auto rtts = Pings(va, vb, "10.79.1.2");
    Shell("ip netns del " + va + "; ip netns del " + vb);
    return rtts.empty() ? 0 : rtts[rtts.size() / 2];
  }
  std::string ns_a_, ns_b_, tap_a_, tap_b_;
  std::unique_ptr<TapLink> link_;
};

LinkDirection Half(const Case& c) {
  LinkDirection d;
  d.rate_bits_per_s = c.rate_mbit * 1e6;
  d.delay_ms = c.rtt_ms / 2;
  return d;
}

TEST_P(TapLinkTest, RoundTripAndRateAreWithinFivePercentOfWhatWasAsked) {
  const Case c = GetParam();
  Join(Half(c), Half(c));
  if (HasFatalFailure()) return;

  // Round trip: the median of UDP pings over the link, against what was
  // asked plus what the same pings cost between two namespaces joined by a
  // plain veth pair (the endpoints' own stacks and wake-ups, which a real
  // link would add as well) plus the probe's serialization each way (a
  // 50-byte frame: Ethernet 14 + IP 20 + UDP 8 + 8).
  double base = BaseRtt();
  auto rtts = Pings(ns_a_, ns_b_, "10.79.0.2");
  ASSERT_GE(rtts.size(), 25u) << "pings were lost on a link without loss";
  double rtt = rtts[rtts.size() / 2];
  double expected = c.rtt_ms + base + 2 * (50 * 8 / (c.rate_mbit * 1e6)) * 1e3;
  std::printf("%s: asked RTT %.2f ms (%.3f ms with the probe's serialization and the %.3f ms of a plain veth), "
              "measured median %.3f ms (min %.3f, max %.3f); wake-up correction %.1f us a way\n",
              c.name, c.rtt_ms, expected, base, rtt, rtts.front(), rtts.back(),
              std::chrono::duration<double, std::micro>(link_->wake_latency()).count());
  EXPECT_NEAR(rtt, expected, 0.05 * c.rtt_ms);

  // Rate: a bulk TCP upload from A to B; after a second of warm-up, the
  // bytes B's interface received over two seconds.
  int sink = SocketIn(ns_b_, SOCK_STREAM);
  int src = SocketIn(ns_a_, SOCK_STREAM);
  ASSERT_GE(sink, 0);
  ASSERT_GE(src, 0);
  sockaddr_in sb = Addr("10.79.0.2", 7002);
  int one = 1;
  setsockopt(sink, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ASSERT_EQ(::bind(sink, reinterpret_cast<sockaddr*>(&sb), sizeof(sb)), 0);
  ASSERT_EQ(::listen(sink, 1), 0);
  std::atomic<uint64_t> received{0};
  std::thread reader([&] {
    int s = ::accept(sink, nullptr, nullptr);
    std::vector<char> b(1 << 16);
    for (;;) {
      ssize_t n = ::recv(s, b.data(), b.size(), 0);
      if (n <= 0) break;
      received += uint64_t(n);
    }
    ::close(s);
  });
  ASSERT_EQ(::connect(src, reinterpret_cast<sockaddr*>(&sb), sizeof(sb)), 0);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::vector<char> b(1 << 16, 'x');
    while (!stop && ::send(src, b.data(), b.size(), MSG_NOSIGNAL) > 0) {
    }
    ::shutdown(src, SHUT_WR);
  });
  std::this_thread::sleep_for(1s + std::chrono::milliseconds(int(c.rtt_ms * 10)));
  uint64_t r0 = RxBytes(ns_b_, tap_b_), g0 = received;
  auto t0 = Clock::now();
  std::this_thread::sleep_for(2s);
  uint64_t r1 = RxBytes(ns_b_, tap_b_), g1 = received;
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  ::shutdown(src, SHUT_RDWR);
  writer.join();
  reader.join();
  ::close(src);
  ::close(sink);
  double rate = double(r1 - r0) * 8 / secs / 1e6;
  double goodput = double(g1 - g0) * 8 / secs / 1e6;
  std::printf("%s: asked %.1f Mbit/s, measured %.2f Mbit/s of frames at the receiver (TCP goodput %.2f Mbit/s)\n",
              c.name, c.rate_mbit, rate, goodput);
  EXPECT_NEAR(rate, c.rate_mbit, 0.05 * c.rate_mbit);
}

// The links of the benchmark's two profiles (bench/paper/README, report.md).
INSTANTIATE_TEST_SUITE_P(Profiles, TapLinkTest,
                         ::testing::Values(Case{"hotspot_2005", 11, 2}, Case{"wan_2005", 2, 60},
                                           Case{"hotspot_today", 300, 1}, Case{"wan_today", 50, 40}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(TapLinkTest, LossIsPerDirectionAndAtTheRateAsked) {
  if (IsSkipped()) return;
  LinkDirection lossy{100e6, 0.5, 0.02, 0};
  LinkDirection clean{100e6, 0.5, 0, 0};
  Join(lossy, clean);
  if (HasFatalFailure()) return;
  int b = SocketIn(ns_b_, SOCK_DGRAM);
  int a = SocketIn(ns_a_, SOCK_DGRAM);
  sockaddr_in ab = Addr("10.79.0.2", 7003), aa = Addr("10.79.0.1", 7003);
  ASSERT_EQ(::bind(b, reinterpret_cast<sockaddr*>(&ab), sizeof(ab)), 0);
  ASSERT_EQ(::bind(a, reinterpret_cast<sockaddr*>(&aa), sizeof(aa)), 0);
  timeval tv{0, 300000};
  setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  // ARP first, both ways, so that no counted datagram waits on it (the
  // warm-up datagrams themselves may be lost: 2% one way).
  char drain[64];
  for (int i = 0; i < 5; ++i) {
    ::sendto(a, "w", 1, 0, reinterpret_cast<sockaddr*>(&ab), sizeof(ab));
    ::sendto(b, "w", 1, 0, reinterpret_cast<sockaddr*>(&aa), sizeof(aa));
    std::this_thread::sleep_for(50ms);
  }
  while (::recv(a, drain, sizeof(drain), 0) > 0) {
  }
  while (::recv(b, drain, sizeof(drain), 0) > 0) {
  }
  uint64_t warmup_lost = link_->a_to_b().lost;
  constexpr int kSent = 10000;
  auto count = [](int from, int to, const sockaddr_in& dest) {
    std::atomic<int> got{0};
    std::thread r([&] {
      char buf[64];
      while (::recv(to, buf, sizeof(buf), 0) > 0) got++;
    });
    char payload[32] = {};
    for (int i = 0; i < kSent; ++i) {
      ::sendto(from, payload, sizeof(payload), 0, reinterpret_cast<const sockaddr*>(&dest), sizeof(dest));
      if (i % 50 == 49) std::this_thread::sleep_for(1ms);  // well below the queue's size
    }
    r.join();  // ends 300 ms after the last datagram
    return got.load();
  };
  int forward = count(a, b, ab);
  int back = count(b, a, aa);
  ::close(a);
  ::close(b);
  int lost = kSent - forward;
  // Binomial(10000, 0.02): mean 200, sd 14; five sd either way.
  std::printf("A->B (2%% loss asked): %d of %d lost; B->A (no loss asked): %d lost\n", lost, kSent, kSent - back);
  EXPECT_GT(lost, 130);
  EXPECT_LT(lost, 270);
  EXPECT_EQ(back, kSent);
  EXPECT_EQ(link_->a_to_b().lost - warmup_lost, uint64_t(lost));
  EXPECT_EQ(link_->b_to_a().lost, 0u);
}

TEST(LinkDirectionTest, ParsesProfilesAndRefusesNonsense) {
  auto d = ParseLinkDirection("11:2:0.01");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_DOUBLE_EQ(d->rate_bits_per_s, 11e6);
  EXPECT_DOUBLE_EQ(d->delay_ms, 1);
  EXPECT_DOUBLE_EQ(d->loss, 0.01);
  EXPECT_TRUE(ParseLinkDirection("2:60").ok());
  for (const char* bad : {"", "2", "x:60", "2:60:1", "0:60", "2:-1", "2:60:0.1:4", "2:60ms"}) {
    auto r = ParseLinkDirection(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.status().ToString().find("RATE_MBIT:RTT_MS"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace slingshot::testing
