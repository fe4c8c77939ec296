// link_bench: how closely the test network's link emulators give what they
// are asked for. The benchmarks divide by the configured rates and round
// trips, so their errors belong beside the benchmarks' figures; they depend
// on the machine's load (a loaded two-core machine has been seen to give
// 2.44 ms for 2 ms asked), which is why they are measured here and not
// asserted in `make check`.
//
//   - the user-space LinkEmulator on loopback (TCP relay): median round trip
//     of one-byte pings and the rate of a bulk upload;
//   - with root, the namespace TapLink for each profile of the paper
//     benchmark: median UDP round trip against what was asked plus a plain
//     veth pair's, and the rate from the receiving interface's own counter.
//
// RESULT link_rtt_err_pct=E link_rate_err_pct=E tap_rtt_err_max_pct=E
//        tap_rate_err_max_pct=E   (errors in % of what was asked; "na"
//        without root). --fail-above PCT exits 1 when an error exceeds it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "link_emulator.h"
#include "process.h"
#include "tap_link.h"

namespace slingshot::testing {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double ErrPct(double got, double asked) { return std::fabs(got - asked) / asked * 100; }

// --- the user-space emulator on loopback ---

struct LoopbackFigures {
  double rtt_ms = 0, rate_bits = 0;
};

std::optional<LoopbackFigures> MeasureLoopback(const LinkProfile& p, size_t bulk) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(lfd, 4) != 0) return std::nullopt;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  // The far end echoes 'P' and acknowledges the whole upload with 'A'.
  std::thread echo([lfd, bulk] {
    int c = accept(lfd, nullptr, nullptr);
    if (c < 0) return;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> buf(1 << 16);
    size_t got = 0;
    for (;;) {
      ssize_t n = recv(c, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[i] == 'P') (void)!send(c, "P", 1, 0);
        else if (++got == bulk) (void)!send(c, "A", 1, 0);
      }
    }
    close(c);
  });
  std::optional<LoopbackFigures> out;
  auto link = LinkEmulator::Start("127.0.0.1", ntohs(a.sin_port), p);
  if (link.ok()) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in to = a;
    to.sin_port = htons((*link)->port());
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0) {
      std::vector<double> rtts;
      char c;
      for (int i = 0; i < 15; ++i) {
        auto t0 = Clock::now();
        if (send(fd, "P", 1, 0) != 1 || recv(fd, &c, 1, 0) != 1) break;
        rtts.push_back(Ms(Clock::now() - t0));
      }
      if (rtts.size() == 15) {
        std::sort(rtts.begin(), rtts.end());
        LoopbackFigures f;
        f.rtt_ms = rtts[rtts.size() / 2];
        std::vector<char> data(bulk, 'x');
        auto t0 = Clock::now();
        size_t off = 0;
        while (off < data.size()) {
          ssize_t n = send(fd, data.data() + off, data.size() - off, 0);
          if (n <= 0) break;
          off += size_t(n);
        }
        if (off == data.size() && recv(fd, &c, 1, 0) == 1 && c == 'A') {
          double secs = std::chrono::duration<double>(Clock::now() - t0).count() - f.rtt_ms / 1000;
          f.rate_bits = double(bulk) * 8 / secs;
          out = f;
        }
      }
    }
    close(fd);
    link->reset();
  }
  shutdown(lfd, SHUT_RDWR);
  echo.join();
  close(lfd);
  return out;
}

// --- the namespace link ---

uint64_t RxBytes(const std::string& ns, const std::string& dev) {
  auto j = nlohmann::json::parse(Shell("ip -n " + ns + " -j -s link show dev " + dev), nullptr, false);
  if (j.is_discarded() || !j.is_array() || j.empty()) return 0;
  return j[0]["stats64"]["rx"]["bytes"].get<uint64_t>();
}

// Sorted round trips of UDP pings from `from` to an echo at to_ip in `to`.
std::vector<double> Pings(const std::string& from, const std::string& to, const char* to_ip) {
  std::vector<double> rtts;
  int echo = SocketInNamespace(to, SOCK_DGRAM), ping = SocketInNamespace(from, SOCK_DGRAM);
  sockaddr_in eb = Ipv4(to_ip, 7001);
  if (echo < 0 || ping < 0 || ::bind(echo, reinterpret_cast<sockaddr*>(&eb), sizeof(eb)) != 0) return rtts;
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
    if (::recv(ping, b, sizeof(b), 0) == sizeof(b) && i > 0) rtts.push_back(Ms(Clock::now() - t0));
    std::this_thread::sleep_for(2ms);
  }
  ::sendto(ping, "Q", 1, 0, reinterpret_cast<sockaddr*>(&eb), sizeof(eb));
  echoer.join();
  ::close(echo);
  ::close(ping);
  std::sort(rtts.begin(), rtts.end());
  return rtts;
}

struct Profile {
  const char* name;
  double rate_mbit, rtt_ms;
};
struct TapFigures {
  double rtt_err_pct = 0, rate_err_pct = 0;
};

// Our own namespaces and taps, named after this process.
struct World {
  std::string id = std::to_string(::getpid() % 100000);
  std::string a = "sslb-a-" + id, b = "sslb-b-" + id, tap_a = "sslbA" + id, tap_b = "sslbB" + id;
  ~World() { Shell("ip netns del " + a + " 2>/dev/null; ip netns del " + b + " 2>/dev/null"); }
};

double VethRtt(const World& w) {
  std::string va = w.a + "v", vb = w.b + "v";
  int rc = 0;
  Shell("set -e; ip netns add " + va + "; ip netns add " + vb + "; ip link add " + w.tap_a + "v netns " + va +
            " type veth peer name " + w.tap_b + "v netns " + vb + "; ip -n " + va + " addr add 10.79.1.1/24 dev " +
            w.tap_a + "v; ip -n " + vb + " addr add 10.79.1.2/24 dev " + w.tap_b + "v; ip -n " + va + " link set " +
            w.tap_a + "v up; ip -n " + vb + " link set " + w.tap_b + "v up",
        &rc);
  auto rtts = rc == 0 ? Pings(va, vb, "10.79.1.2") : std::vector<double>{};
  Shell("ip netns del " + va + " 2>/dev/null; ip netns del " + vb + " 2>/dev/null");
  return rtts.empty() ? -1 : rtts[rtts.size() / 2];
}

std::optional<TapFigures> MeasureTap(const Profile& p, double seconds) {
  World w;
  LinkDirection d;
  d.rate_bits_per_s = p.rate_mbit * 1e6;
  d.delay_ms = p.rtt_ms / 2;
  auto link = TapLink::Create(w.tap_a, w.tap_b, d, d, 42);
  if (!link.ok()) {
    std::fprintf(stderr, "link_bench: %s\n", link.status().ToString().c_str());
    return std::nullopt;
  }
  int rc = 0;
  Shell("set -e; ip netns add " + w.a + "; ip netns add " + w.b + "; ip link set " + w.tap_a + " netns " + w.a +
            "; ip link set " + w.tap_b + " netns " + w.b + "; ip -n " + w.a + " addr add 10.79.0.1/24 dev " +
            w.tap_a + "; ip -n " + w.b + " addr add 10.79.0.2/24 dev " + w.tap_b + "; ip -n " + w.a +
            " link set " + w.tap_a + " up; ip -n " + w.b + " link set " + w.tap_b + " up",
        &rc);
  double base = VethRtt(w);
  auto rtts = Pings(w.a, w.b, "10.79.0.2");
  if (rc != 0 || base < 0 || rtts.size() < 25) return std::nullopt;
  TapFigures f;
  double rtt = rtts[rtts.size() / 2];
  double expected = p.rtt_ms + base + 2 * (50 * 8 / (p.rate_mbit * 1e6)) * 1e3;
  f.rtt_err_pct = std::fabs(rtt - expected) / p.rtt_ms * 100;

  int sink = SocketInNamespace(w.b, SOCK_STREAM), src = SocketInNamespace(w.a, SOCK_STREAM);
  sockaddr_in sb = Ipv4("10.79.0.2", 7002);
  int one = 1;
  setsockopt(sink, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (sink < 0 || src < 0 || ::bind(sink, reinterpret_cast<sockaddr*>(&sb), sizeof(sb)) != 0 || ::listen(sink, 1) != 0) {
    return std::nullopt;
  }
  std::thread reader([&] {
    int s = ::accept(sink, nullptr, nullptr);
    std::vector<char> b(1 << 16);
    while (s >= 0 && ::recv(s, b.data(), b.size(), 0) > 0) {
    }
    if (s >= 0) ::close(s);
  });
  if (::connect(src, reinterpret_cast<sockaddr*>(&sb), sizeof(sb)) != 0) {
    ::shutdown(sink, SHUT_RDWR);
    reader.join();
    return std::nullopt;
  }
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::vector<char> b(1 << 16, 'x');
    while (!stop && ::send(src, b.data(), b.size(), MSG_NOSIGNAL) > 0) {
    }
  });
  std::this_thread::sleep_for(1s + std::chrono::milliseconds(int(p.rtt_ms * 10)));
  uint64_t r0 = RxBytes(w.b, w.tap_b);
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  uint64_t r1 = RxBytes(w.b, w.tap_b);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  ::shutdown(src, SHUT_RDWR);
  writer.join();
  reader.join();
  ::close(src);
  ::close(sink);
  double rate = double(r1 - r0) * 8 / secs / 1e6;
  f.rate_err_pct = ErrPct(rate, p.rate_mbit);
  std::printf("tap %-13s asked %6.1f Mbit/s %5.1f ms; got %7.2f Mbit/s, RTT %.3f ms (expected %.3f with a veth's %.3f)\n",
              p.name, p.rate_mbit, p.rtt_ms, rate, rtt, expected, base);
  return f;
}

std::string Pct(std::optional<double> v) {
  if (!v) return "na";
  char b[32];
  std::snprintf(b, sizeof(b), "%.2f", *v);
  return b;
}

int Main(int argc, char** argv) {
  namespace po = boost::program_options;
  po::options_description d("link_bench: the link emulators' round-trip and rate errors");
  d.add_options()("help,h", "this help")(
      "rate-seconds", po::value<double>()->default_value(2), "how long each namespace link's rate is measured")(
      "bulk-mb", po::value<size_t>()->default_value(3), "the loopback emulator's upload")(
      "fail-above", po::value<double>()->default_value(0), "exit 1 if an error exceeds this % (0: never)")(
      "no-tap", "skip the namespace links (they need root)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "link_bench: %s\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << d << "\n";
    return 0;
  }
  LinkProfile p;
  p.rate_bits_per_s = 30e6;
  p.rtt_ms = 40;
  auto lo = MeasureLoopback(p, vm["bulk-mb"].as<size_t>() << 20);
  if (!lo) {
    std::fprintf(stderr, "link_bench: the loopback emulator could not be measured\n");
    return 1;
  }
  double lo_rtt = ErrPct(lo->rtt_ms, p.rtt_ms), lo_rate = ErrPct(lo->rate_bits, p.rate_bits_per_s);
  std::printf("loopback emulator: asked 40 ms, 30 Mbit/s; got %.2f ms, %.2f Mbit/s\n", lo->rtt_ms, lo->rate_bits / 1e6);
  std::optional<double> tap_rtt, tap_rate;
  if (!vm.count("no-tap") && ::geteuid() == 0) {
    for (const Profile& pr : {Profile{"hotspot_2005", 11, 2}, Profile{"wan_2005", 2, 60},
                              Profile{"hotspot_today", 300, 1}, Profile{"wan_today", 50, 40}}) {
      auto f = MeasureTap(pr, vm["rate-seconds"].as<double>());
      if (!f) {
        std::fprintf(stderr, "link_bench: the namespace link %s could not be measured\n", pr.name);
        return 1;
      }
      tap_rtt = std::max(tap_rtt.value_or(0), f->rtt_err_pct);
      tap_rate = std::max(tap_rate.value_or(0), f->rate_err_pct);
    }
  } else {
    std::printf("namespace links: not measured (%s)\n", vm.count("no-tap") ? "--no-tap" : "needs root");
  }
  std::printf("RESULT link_rtt_err_pct=%s link_rate_err_pct=%s tap_rtt_err_max_pct=%s tap_rate_err_max_pct=%s\n",
              Pct(lo_rtt).c_str(), Pct(lo_rate).c_str(), Pct(tap_rtt).c_str(), Pct(tap_rate).c_str());
  double limit = vm["fail-above"].as<double>();
  if (limit > 0) {
    for (auto v : {std::optional<double>(lo_rtt), std::optional<double>(lo_rate), tap_rtt, tap_rate}) {
      if (v && *v > limit) {
        std::fprintf(stderr, "link_bench: an error of %.2f%% exceeds --fail-above %.2f\n", *v, limit);
        return 1;
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace slingshot::testing

int main(int argc, char** argv) { return slingshot::testing::Main(argc, argv); }
