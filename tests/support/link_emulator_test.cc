// The link emulator delivers what it is asked for: benchmarks divide by its
// configured rate, so the achieved round trip and rate must be within 5%.
// (An accuracy check of test equipment, not a speed test of Slingshot.)
#include "link_emulator.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

namespace slingshot::testing {
namespace {

using Clock = std::chrono::steady_clock;

// An echo server on loopback that also swallows a bulk upload: a 'P' byte is
// echoed; anything else is counted and acknowledged with 'A' when `expect`
// bytes have arrived.
class Echo {
 public:
  explicit Echo(size_t expect) : expect_(expect) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd_, 4), 0);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      int c = accept(fd_, nullptr, nullptr);
      int one = 1;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      std::vector<char> buf(1 << 16);
      size_t bulk = 0;
      for (;;) {
        ssize_t n = recv(c, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; ++i) {
          if (buf[i] == 'P') {
            (void)!send(c, "P", 1, 0);
          } else if (++bulk == expect_) {
            (void)!send(c, "A", 1, 0);
          }
        }
      }
      close(c);
    });
  }
  ~Echo() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  uint16_t port() const { return port_; }

 private:
  size_t expect_;
  int fd_;
  uint16_t port_ = 0;
  std::thread thread_;
};

int Connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

TEST(LinkEmulatorTest, AchievedRoundTripAndRateAreWithinFivePercent) {
  const size_t bulk = 3 << 20;
  Echo echo(bulk);
  LinkProfile p;
  p.rate_bits_per_s = 30e6;  // 3 MiB takes ~0.84 s
  p.rtt_ms = 40;
  auto link = LinkEmulator::Start("127.0.0.1", echo.port(), p);
  ASSERT_TRUE(link.ok());
  int fd = Connect((*link)->port());

  // Round trip: the median of 15 one-byte pings.
  std::vector<double> rtts;
  for (int i = 0; i < 15; ++i) {
    auto t0 = Clock::now();
    ASSERT_EQ(send(fd, "P", 1, 0), 1);
    char c;
    ASSERT_EQ(recv(fd, &c, 1, 0), 1);
    rtts.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(rtts.begin(), rtts.end());
  double rtt = rtts[rtts.size() / 2];
  EXPECT_NEAR(rtt, p.rtt_ms, p.rtt_ms * 0.05) << "median round trip " << rtt << " ms";

  // Rate: an upload until the far end acknowledges the last byte, less the
  // one round trip the acknowledgement adds.
  std::vector<char> data(bulk, 'x');
  auto t0 = Clock::now();
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, 0);
    ASSERT_GT(n, 0);
    off += size_t(n);
  }
  char c;
  ASSERT_EQ(recv(fd, &c, 1, 0), 1);
  EXPECT_EQ(c, 'A');
  double secs = std::chrono::duration<double>(Clock::now() - t0).count() - rtt / 1000;
  double rate = double(bulk) * 8 / secs;
  std::printf("asked 40 ms, %.0f Mbit/s; got %.2f ms, %.2f Mbit/s\n", p.rate_bits_per_s / 1e6, rtt, rate / 1e6);
  EXPECT_NEAR(rate, p.rate_bits_per_s, p.rate_bits_per_s * 0.05) << "achieved " << rate / 1e6 << " Mbit/s";
  close(fd);
}

}  // namespace
}  // namespace slingshot::testing
