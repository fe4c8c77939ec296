// replication_bench: what the proxy costs and how long a failover leaves the
// user without a screen, on real processes (home daemon, agent, proxy) and a
// real notepad guest under QEMU.
//
//   proxy_overhead_ms  median keystroke-to-screen time through the proxy
//                      minus that of a direct VNC connection to the same
//                      replica (the home's primary), measured alternately,
//                      key by key, in one run
//   failover_gap_ms    from kill -9 of the leading surrogate (agent and VM)
//                      to the next screen update the viewer gets (from home)
//   events_lost        characters typed through the proxy that the home's
//                      document does not have at the end
//
// The home is reached over a link emulator with --wan-rtt-ms (default 6 ms)
// in the failover phase, so that the surrogate is the faster replica and
// leads: the proxy hands the lead to a replica at least 20% faster, in
// input-to-consumed time, which is about a whole key's handling (14 ms
// under TCG). The overhead phase has no emulator.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <boost/program_options.hpp>

#include "notepad_client.h"
#include "process.h"
#include "slingshot/base/file_util.h"

namespace po = boost::program_options;
using namespace slingshot;
using namespace slingshot::testing;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

uint16_t ParsePort(const std::string& text, const std::string& after) {
  size_t at = text.find(after);
  if (at == std::string::npos) return 0;
  return static_cast<uint16_t>(std::atoi(text.c_str() + at + after.size()));
}

Endpoint HomeEndpoint(const std::string& services, uint16_t guest_port) {
  std::ifstream in(services + "/notepad/endpoints");
  std::string port, addr;
  while (in >> port >> addr) {
    if (port == std::to_string(guest_port)) {
      return Endpoint{addr.substr(0, addr.find(':')), uint16_t(std::stoi(addr.substr(addr.find(':') + 1)))};
    }
  }
  return {};
}

std::string Leader(const std::string& client, const std::string& state) {
  std::istringstream in(Shell(client + " status --state-dir " + state));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("replica ", 0) == 0 && line.find(" leader") != std::string::npos) {
      return line.substr(8, line.find(' ', 8) - 8);
    }
  }
  return "";
}

int Fail(const std::string& why) {
  std::fprintf(stderr, "replication_bench: %s\n", why.c_str());
  return 1;
}

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof(a);
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description d("replication_bench options");
  d.add_options()("help", "this help")
      ("keys", po::value<int>()->default_value(600), "keystrokes measured each way")
      ("wan-rtt-ms", po::value<double>()->default_value(6), "home link RTT in the failover phase")
      ("accel", po::value<std::string>()->default_value("tcg"), "QEMU accel")
      ("no-sync", "run the proxy with --no-sync (no fdatasync per input)")
      ("work", po::value<std::string>()->default_value(""), "work directory (default: a fresh one in /tmp)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, d), vm);
  if (vm.count("help")) {
    std::cout << d;
    return 0;
  }
  const int keys = vm["keys"].as<int>();
  const std::string build = SLINGSHOT_BUILD_DIR;
  const std::string home_bin = build + "/home/slingshot-home", client = build + "/client/slingshot-client",
                    agent_bin = build + "/dom0-agent/slingshot-agent", linkemu = build + "/tests/support/slingshot-linkemu";
  std::string work = vm["work"].as<std::string>();
  const bool keep = !work.empty();  // a named work directory is kept for inspection
  if (work.empty()) work = "/tmp/slingshot-replication-bench-" + std::to_string(getpid());
  fs::remove_all(work);
  fs::create_directories(work);
  const std::string h = "--store " + work + "/store --key " + work + "/home.key --tls-dir " + work +
                        "/tls --services-dir " + work + "/services";
  const std::string state = work + "/client";
  const std::string accel = vm["accel"].as<std::string>();
  const uint16_t home_port = FreePort(), emu_port = FreePort(), agent_port = FreePort();
  int rc;
  Shell(home_bin + " init " + h, &rc);
  if (rc) return Fail("home init failed");
  Shell(home_bin + " service create notepad --owner bench --kernel " + GuestDir() + "/vmlinuz --initrd " + GuestDir() +
            "/initrd.img --cmdline 'quiet panic=1 slingshot.disk=auto' --extra-port 5901 " + h,
        &rc);
  Shell(home_bin + " pair bench --out " + work + "/pairing --address 127.0.0.1:" + std::to_string(home_port) + " " + h);
  Shell(client + " pair " + work + "/pairing --state-dir " + state, &rc);
  if (rc) return Fail("pairing failed");

  std::printf("starting the home (boots the notepad guest under QEMU %s) ...\n", accel.c_str());
  std::fflush(stdout);
  Process home({home_bin, "run", "--store", work + "/store", "--key", work + "/home.key", "--tls-dir", work + "/tls",
                "--services-dir", work + "/services", "--listen", "127.0.0.1:" + std::to_string(home_port), "--accel",
                accel, "--checkpoint-inputs", "100000", "--checkpoint-seconds", "3600"},
               work + "/home.log");
  if (!home.WaitFor("checkpoint epoch 1", std::chrono::seconds(180))) return Fail("home never checkpointed:\n" + home.Output());
  std::string reference;  // every character typed, in order

  // --- Phase A: the proxy's overhead against a direct connection ---
  std::vector<double> direct_ms, proxy_ms;
  {
    std::vector<std::string> args = {client, "proxy", "notepad", "--state-dir", state, "--listen", "127.0.0.1:0"};
    if (vm.count("no-sync")) args.push_back("--no-sync");
    Process proxy(args, work + "/proxy-a.log");
    if (!proxy.WaitFor("proxy ready", std::chrono::seconds(60))) return Fail("proxy:\n" + proxy.Output());
    uint16_t vnc = ParsePort(proxy.Output(), "viewer at 127.0.0.1:");
    // Alternate blocks of keys: direct to the replica's VNC server, then
    // through the proxy. The direct session is closed while the proxy is
    // measured: an RFB server sends each update to its clients one after
    // another, so an idle extra client would delay the other's update.
    auto via = RfbSession::Connect(Endpoint{"127.0.0.1", vnc});
    if (!via.ok()) return Fail("cannot connect to the proxy");
    const int block = 10;
    for (int b = 0; b * block < keys + block; ++b) {
      {
        auto direct = RfbSession::Connect(HomeEndpoint(work + "/services", kRfbPort));
        if (!direct.ok()) return Fail("cannot connect to the replica's VNC server");
        for (int i = 0; i < block; ++i) {
          char c = static_cast<char>('a' + (b * block + i) % 26);
          (void)(*direct)->Drain(20);
          (void)(*via)->Drain(20);
          auto d1 = (*direct)->KeyToScreenMs(static_cast<uint32_t>(c), 5000);
          reference += c;
          if (!d1.ok()) return Fail("a direct key got no screen update: " + d1.status().ToString());
          if (b > 0) direct_ms.push_back(*d1);  // the first block warms up
        }
        (void)(*direct)->Drain(50);
      }
      for (int i = 0; i < block; ++i) {
        char c = static_cast<char>('A' + (b * block + i) % 26);
        (void)(*via)->Drain(20);
        auto p1 = (*via)->KeyToScreenMs(static_cast<uint32_t>(c), 5000);
        reference += c;
        if (!p1.ok()) return Fail("a key through the proxy got no screen update: " + p1.status().ToString());
        if (b > 0) proxy_ms.push_back(*p1);
      }
    }
    auto ctl = HomeEndpoint(work + "/services", kControlPort);
    if (!WaitForText(ctl, reference, std::chrono::seconds(30)).ok()) return Fail("home lost keys in phase A");
    proxy.Kill(SIGTERM);
  }
  const double overhead = Percentile(proxy_ms, 0.5) - Percentile(direct_ms, 0.5);

  // --- Phase B: failover from a leading surrogate to home ---
  double gap_ms = -1;
  std::string typed_b;
  {
    char rtt[32];
    std::snprintf(rtt, sizeof(rtt), "%g", vm["wan-rtt-ms"].as<double>());
    Process emu({linkemu, "127.0.0.1:" + std::to_string(emu_port), "127.0.0.1:" + std::to_string(home_port), rtt, "1000"},
                work + "/linkemu.log");
    if (!emu.WaitFor("relaying", std::chrono::seconds(10))) return Fail("link emulator:\n" + emu.Output());
    Process proxy({client, "proxy", "notepad", "--state-dir", state, "--listen", "127.0.0.1:0", "--home",
                   "127.0.0.1:" + std::to_string(emu_port)},
                  work + "/proxy-b.log");
    if (!proxy.WaitFor("proxy ready", std::chrono::seconds(60))) return Fail("proxy:\n" + proxy.Output());
    uint16_t vnc = ParsePort(proxy.Output(), "viewer at 127.0.0.1:");
    Process agent({agent_bin, "run", "--listen", "127.0.0.1:" + std::to_string(agent_port), "--name", "cafe", "--cache",
                   work + "/agent-cache", "--accel", accel},
                  work + "/agent.log");
    if (!agent.WaitFor("listening", std::chrono::seconds(20))) return Fail("agent:\n" + agent.Output());
    auto start = Clock::now();
    std::string use = Shell(client + " use 127.0.0.1:" + std::to_string(agent_port) + " --state-dir " + state, &rc);
    if (rc) return Fail("use failed:\n" + use);
    double instantiate_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    auto via = RfbSession::Connect(Endpoint{"127.0.0.1", vnc});
    if (!via.ok()) return Fail("cannot connect to the proxy");
    auto deadline = Clock::now() + std::chrono::seconds(60);
    int i = 0;
    while (Leader(client, state) != "cafe") {
      if (Clock::now() > deadline) return Fail("the surrogate never led:\n" + proxy.Output());
      char c = static_cast<char>('0' + i++ % 10);
      if (!(*via)->Type(std::string(1, c)).ok()) return Fail("typing failed");
      typed_b += c;
      (void)(*via)->Drain(30);
    }
    (void)(*via)->Drain(200);
    auto killed = Clock::now();
    agent.Kill(SIGKILL);  // the VM dies with it (PR_SET_PDEATHSIG)
    for (int pid : ProcessesMatching("-name replica-")) ::kill(pid, SIGKILL);
    uint64_t before = (*via)->updates();
    while ((*via)->updates() == before && Clock::now() - killed < std::chrono::seconds(10)) (void)(*via)->Pump(1);
    if ((*via)->updates() > before) gap_ms = std::chrono::duration<double, std::milli>(Clock::now() - killed).count();
    // Typing goes on against home.
    for (int k = 0; k < 20; ++k) {
      char c = static_cast<char>('p' + k % 10);
      if (!(*via)->Type(std::string(1, c)).ok()) return Fail("typing after the failover failed");
      typed_b += c;
    }
    reference += typed_b;
    // Everything typed is in the log; wait for home to have it before the
    // proxy goes (a stopped proxy would replay the rest next time).
    (void)WaitForText(HomeEndpoint(work + "/services", kControlPort), reference, std::chrono::seconds(30), via->get());
    std::printf("surrogate instantiated in %.0f ms (use, from the command to caught up)\n", instantiate_ms);
    proxy.Kill(SIGTERM);
  }
  auto ctl = HomeEndpoint(work + "/services", kControlPort);
  (void)WaitForText(ctl, reference, std::chrono::seconds(30));
  auto doc = DocumentText(ctl);
  if (!doc.ok()) return Fail("cannot read the home's document");
  size_t lost = 0;
  if (*doc != reference) {
    lost = reference.size() > doc->size() ? reference.size() - doc->size() : 0;
    for (size_t k = 0; k < std::min(doc->size(), reference.size()); ++k) lost += (*doc)[k] != reference[k];
    if (lost == 0) lost = 1;  // a difference, whatever it is, counts
  }
  home.Kill(SIGTERM);
  std::printf("keystroke to screen, direct to the replica: p50 %.2f ms  p99 %.2f ms  (%zu keys)\n",
              Percentile(direct_ms, 0.5), Percentile(direct_ms, 0.99), direct_ms.size());
  std::printf("keystroke to screen, through the proxy:     p50 %.2f ms  p99 %.2f ms\n", Percentile(proxy_ms, 0.5),
              Percentile(proxy_ms, 0.99));
  std::printf("failover: %.1f ms from kill -9 of the leading surrogate to the next screen update\n", gap_ms);
  std::printf("home document: %zu characters, %zu typed, %zu lost\n", doc->size(), reference.size(), lost);
  if (!keep) fs::remove_all(work);
  std::printf("RESULT proxy_overhead_ms=%.2f failover_gap_ms=%.0f events_lost=%zu\n", overhead, gap_ms, lost);
  return 0;
}
