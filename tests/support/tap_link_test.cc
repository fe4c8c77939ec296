// The namespace link emulator (TapLink): loss per direction, and its
// profiles' parsing, with real sockets in two network namespaces. Needs
// root, as the e2e tests do. How closely it gives the round trips and rates
// asked for depends on the machine's load: bench/link_bench measures that.
#include "tap_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "process.h"

namespace slingshot::testing {
namespace {

using namespace std::chrono_literals;

class TapLinkTest : public ::testing::Test {
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
  std::string ns_a_, ns_b_, tap_a_, tap_b_;
  std::unique_ptr<TapLink> link_;
};

TEST_F(TapLinkTest, LossIsPerDirectionAndAtTheRateAsked) {
  if (IsSkipped()) return;
  LinkDirection lossy{100e6, 0.5, 0.02, 0};
  LinkDirection clean{100e6, 0.5, 0, 0};
  Join(lossy, clean);
  if (HasFatalFailure()) return;
  int b = SocketInNamespace(ns_b_, SOCK_DGRAM);
  int a = SocketInNamespace(ns_a_, SOCK_DGRAM);
  sockaddr_in ab = Ipv4("10.79.0.2", 7003), aa = Ipv4("10.79.0.1", 7003);
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
  // The link's own loss model is what is tested: its counter, and the
  // datagrams it delivered. A loaded machine may drop datagrams outside the
  // link (a socket buffer, the tap's queue); those are reported, not failed.
  const int lost = static_cast<int>(link_->a_to_b().lost - warmup_lost);
  const int outside_forward = kSent - forward - lost;
  const int outside_back = kSent - back;
  std::printf("A->B (2%% loss asked): %d of %d lost by the link, %d elsewhere; B->A (no loss asked): %d lost "
              "elsewhere (queue drops %llu, %llu)\n",
              lost, kSent, outside_forward, outside_back,
              static_cast<unsigned long long>(link_->a_to_b().queue_drops),
              static_cast<unsigned long long>(link_->b_to_a().queue_drops));
  // Binomial(10000, 0.02): mean 200, sd 14; five sd either way.
  EXPECT_GT(lost, 130);
  EXPECT_LT(lost, 270);
  EXPECT_EQ(link_->b_to_a().lost, 0u);
  EXPECT_GE(outside_forward, 0) << "more datagrams arrived than the link says it delivered";
  EXPECT_GE(outside_back, 0);
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
