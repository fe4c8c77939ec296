// Hostile peers against the real daemons: `slingshot-home run` and
// `slingshot-agent run` as processes on loopback, attacked by strangers
// (self-signed certificates, plain TCP) and by a paired client turned
// hostile, while a well-formed client keeps being served and each daemon's
// RSS stays under a stated bound. Label: nbd.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "../support/process.h"
#include "../unit/test_util.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/net/tls.h"
#include "slingshot/net/transport.h"

namespace slingshot::testing {
namespace {

const std::string kBuild = SLINGSHOT_BUILD_DIR;
using Clock = std::chrono::steady_clock;

// What a daemon may grow by under every attack here: far below what the
// attacks announce (64 x 16 MiB = 1 GiB), well above its normal churn.
// Under AddressSanitizer (make sanitize) the daemons' RSS holds its shadow
// memory and quarantine of freed blocks, which say nothing of what they
// keep: the bound is checked in the normal build only.
#if defined(__SANITIZE_ADDRESS__)
constexpr uint64_t kRssBound = ~0ull >> 2;
#else
constexpr uint64_t kRssBound = 96ull << 20;
#endif

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = Ipv4("127.0.0.1", 0);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t n = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

ConnectOptions HomeOptions() {
  ConnectOptions o;
  o.expected_role = Role::kHome;
  o.timeout_ms = 5000;
  return o;
}

uint64_t RssOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) << 10;
  }
  return 0;
}

// A frame header that announces `length` payload bytes (valid CRC).
Bytes BigHeader(uint32_t length) {
  Bytes f = wire::EncodeFrame(1, wire::GetStatus{});
  f.resize(wire::kHeaderSize);
  PutU32(f.data() + 12, length);
  PutU32(f.data() + 20, crc32c::Value(f.data(), 20));
  return f;
}

// A plain TCP connection from `from` (an address of 127/8) that says nothing.
int SilentTcp(const char* from, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in src = Ipv4(from, 0);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
    ::close(fd);
    return -1;
  }
  sockaddr_in dst = Ipv4("127.0.0.1", port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_ = "--store " + dir_ / "store" + " --key " + dir_ / "home.key" + " --tls-dir " + dir_ / "tls" +
         " --services-dir " + dir_ / "services";
    const std::string home = kBuild + "/home/slingshot-home";
    int rc = 0;
    std::string out = Shell(home + " init " + h_ + " --name hostile-home", &rc);
    ASSERT_EQ(rc, 0) << out;
    for (const char* who : {"alice", "mallory"}) {
      out = Shell(home + " credentials issue " + who + " --role client --out " + dir_ / who + " --tls-dir " +
                      dir_ / "tls",
                  &rc);
      ASSERT_EQ(rc, 0) << out;
    }
    alice_ = *TlsCredentials::Load(dir_ / "alice");
    mallory_ = *TlsCredentials::Load(dir_ / "mallory");
    auto stranger = SelfSignedCredentials("stranger", Role::kClient, 3600);
    ASSERT_TRUE(stranger.ok());
    stranger_ = *stranger;

    home_port_ = FreePort();
    agent_port_ = FreePort();
    std::vector<std::string> hargv{home,          "run",          "--store",         dir_ / "store", "--key", dir_ / "home.key",
             "--tls-dir",   dir_ / "tls",   "--services-dir",  dir_ / "services",
             "--listen",    "127.0.0.1:" + std::to_string(home_port_), "--hypervisor", "qemu", "--accel", "tcg"};
    home_ = std::make_unique<Process>(hargv, dir_ / "home.log");
    agent_ = std::make_unique<Process>(
        std::vector<std::string>{kBuild + "/dom0-agent/slingshot-agent", "run", "--listen",
                                 "127.0.0.1:" + std::to_string(agent_port_), "--cache", dir_ / "cache",
                                 "--hypervisor", "qemu", "--accel", "tcg", "--no-advertise", "--name", "hostile"},
        dir_ / "agent.log");
    ASSERT_TRUE(home_->WaitFor("listening on", std::chrono::seconds(30))) << home_->Output();
    ASSERT_TRUE(agent_->WaitFor("listening on", std::chrono::seconds(30))) << agent_->Output();
  }

  // A well-formed request to each daemon, answered.
  ::testing::AssertionResult HomeServes() {
    auto c = Connection::Connect("127.0.0.1", home_port_, alice_, HomeOptions());
    if (!c.ok()) return ::testing::AssertionFailure() << "home: " << c.status().ToString();
    if (!(*c)->Send(1, wire::GetRef{"manifest/none"}).ok()) return ::testing::AssertionFailure() << "home: send";
    auto r = (*c)->Receive(5000);
    if (!r.ok()) return ::testing::AssertionFailure() << "home: " << r.status().ToString();
    auto* e = std::get_if<wire::Error>(&r->message);  // an answer: there is no such ref
    if (!e || e->code != Status::Code::kNotFound) return ::testing::AssertionFailure() << "home: not NotFound";
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult AgentServes() {
    ConnectOptions o;
    o.timeout_ms = 5000;
    o.verify_server_ca = false;
    auto c = Connection::Connect("127.0.0.1", agent_port_, stranger_, o);
    if (!c.ok()) return ::testing::AssertionFailure() << "agent: " << c.status().ToString();
    if (!(*c)->Send(1, wire::GetStatus{}).ok()) return ::testing::AssertionFailure() << "agent: send";
    auto r = (*c)->Expect(1, wire::MessageType::kAgentStatus, 5000);
    if (!r.ok()) return ::testing::AssertionFailure() << "agent: " << r.status().ToString();
    return ::testing::AssertionSuccess();
  }

  TempDir dir_;
  std::string h_;
  TlsCredentials alice_, mallory_, stranger_;
  uint16_t home_port_ = 0, agent_port_ = 0;
  std::unique_ptr<Process> home_, agent_;
};

TEST_F(HostileTest, BigFrameHeadersAreRefusedBeforeAnyBufferGrows) {
  ASSERT_TRUE(HomeServes());
  ASSERT_TRUE(AgentServes());
  const uint64_t home_rss = RssOf(home_->pid()), agent_rss = RssOf(agent_->pid());

  // 64 strangers at the agent and 64 connections of a hostile paired client
  // at the home, each announcing 16 MiB and sending none of it.
  std::vector<std::unique_ptr<Connection>> held;
  int home_busy = 0;
  for (int i = 0; i < 64; ++i) {
    ConnectOptions o;
    o.verify_server_ca = false;
    auto a = Connection::Connect("127.0.0.1", agent_port_, stranger_, o);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    ASSERT_TRUE((*a)->SendRaw(BigHeader(16u << 20)).ok());
    held.push_back(std::move(*a));
    auto h = Connection::Connect("127.0.0.1", home_port_, mallory_, HomeOptions());
    if (!h.ok()) {  // over the per-certificate quota: told why
      EXPECT_EQ(h.status().code(), Status::Code::kResourceExhausted) << h.status().ToString();
      ++home_busy;
      continue;
    }
    ASSERT_TRUE((*h)->SendRaw(BigHeader(16u << 20)).ok());
    held.push_back(std::move(*h));
  }
  // Each announced frame is refused with a reason and its connection closed
  // (an agent connection may instead have been pushed out by newer ones).
  int told = 0;
  for (auto& c : held) {
    auto f = c->Receive(5000);
    if (f.ok()) {
      auto* e = std::get_if<wire::Error>(&f->message);
      ASSERT_NE(e, nullptr);
      EXPECT_EQ(e->code, Status::Code::kResourceExhausted) << e->message;
      EXPECT_NE(e->message.find("announced a frame of 16777216 bytes"), std::string::npos) << e->message;
      ++told;
      f = c->Receive(5000);
    }
    EXPECT_FALSE(f.ok()) << "the connection stayed open";
  }
  EXPECT_GE(told + home_busy, 96);

  // Frames within the cap grow only with what arrives: the hostile client
  // fills its 16 slots, each announcing 1 MiB and sending 8 KiB; the others
  // keep slots of their own.
  held.clear();
  for (int i = 0; i < 16; ++i) {
    auto h = Connection::Connect("127.0.0.1", home_port_, mallory_, HomeOptions());
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    Bytes b = BigHeader(1u << 20);
    b.resize(b.size() + (8 << 10), 'x');
    ASSERT_TRUE((*h)->SendRaw(b).ok());
    held.push_back(std::move(*h));
  }
  EXPECT_TRUE(HomeServes());
  EXPECT_TRUE(AgentServes());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const uint64_t home_after = RssOf(home_->pid()), agent_after = RssOf(agent_->pid());
  RecordProperty("home_rss_growth_kib", std::to_string((home_after - std::min(home_after, home_rss)) >> 10));
  RecordProperty("agent_rss_growth_kib", std::to_string((agent_after - std::min(agent_after, agent_rss)) >> 10));
  EXPECT_LT(home_after, home_rss + kRssBound) << home_rss << " -> " << home_after;
  EXPECT_LT(agent_after, agent_rss + kRssBound) << agent_rss << " -> " << agent_after;
}

TEST_F(HostileTest, RenewedSilentConnectionsDoNotLockClientsOut) {
  const uint64_t home_rss = RssOf(home_->pid()), agent_rss = RssOf(agent_->pid());
  // 70 plain TCP connections to each daemon from another address of the
  // machine, renewed every 3 s (sooner than any handshake deadline), for 12 s.
  std::atomic<bool> stop{false};
  std::atomic<int> opened{0};
  std::thread attacker([&] {
    std::vector<int> fds;
    while (!stop) {
      for (int fd : fds) ::close(fd);
      fds.clear();
      for (int i = 0; i < 70; ++i) {
        for (uint16_t port : {home_port_, agent_port_}) {
          int fd = SilentTcp("127.0.0.2", port);
          if (fd >= 0) {
            fds.push_back(fd);
            ++opened;
          }
        }
      }
      for (int i = 0; i < 30 && !stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (int fd : fds) ::close(fd);
  });
  int served = 0, probes = 0;
  auto end = Clock::now() + std::chrono::seconds(12);
  while (Clock::now() < end) {
    ++probes;
    auto h = HomeServes();
    auto a = AgentServes();
    EXPECT_TRUE(h);
    EXPECT_TRUE(a);
    if (h && a) ++served;
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
  }
  stop = true;
  attacker.join();
  RecordProperty("probes", std::to_string(probes));
  RecordProperty("probes_served", std::to_string(served));
  EXPECT_GE(opened.load(), 4 * 140);
  EXPECT_GE(probes, 15);
  EXPECT_EQ(served, probes);

  // The same from the client's own address, opened at once: the newest
  // connections push the oldest silent ones out, so a client that comes
  // after the burst is served.
  std::vector<int> fds;
  for (int i = 0; i < 70; ++i) {
    for (uint16_t port : {home_port_, agent_port_}) {
      int fd = SilentTcp("127.0.0.1", port);
      if (fd >= 0) fds.push_back(fd);
    }
  }
  EXPECT_TRUE(HomeServes());
  EXPECT_TRUE(AgentServes());
  for (int fd : fds) ::close(fd);
  EXPECT_NE(home_->Output().find("to make room"), std::string::npos);
  EXPECT_LT(RssOf(home_->pid()), home_rss + kRssBound);
  EXPECT_LT(RssOf(agent_->pid()), agent_rss + kRssBound);
}

// The limits themselves, on a Server of this process.
class EchoHandler : public RequestHandler {
 public:
  Status Handle(Connection& c, uint32_t request, wire::Message&&) override {
    return c.Send(request, wire::RefData{"x", 0, ChunkId()});
  }
};

class ServerLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CertificateAuthority::Create("limits", 3600);
    ASSERT_TRUE(ca.ok());
    server_creds_ = *ca->Issue("home", Role::kHome, 3600);
    a_ = *ca->Issue("a", Role::kClient, 3600);
    b_ = *ca->Issue("b", Role::kClient, 3600);
  }
  std::unique_ptr<Server> Start(const ServerOptions& o) {
    auto s = Server::Start(server_creds_, o, &handler_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }
  TlsCredentials server_creds_, a_, b_;
  EchoHandler handler_;
};

TEST_F(ServerLimitsTest, AFullServerSaysSoInPlaceOfHello) {
  ServerOptions o;
  o.max_connections = 2;
  auto server = Start(o);
  ASSERT_TRUE(server);
  auto c1 = Connection::Connect("127.0.0.1", server->port(), a_);
  auto c2 = Connection::Connect("127.0.0.1", server->port(), b_);
  ASSERT_TRUE(c1.ok() && c2.ok());
  auto c3 = Connection::Connect("127.0.0.1", server->port(), b_);
  ASSERT_FALSE(c3.ok());
  EXPECT_EQ(c3.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(c3.status().message().find("already serves 2 connections"), std::string::npos) << c3.status().ToString();
  EXPECT_EQ(server->stats().authorized, 2u);
  c1->reset();
  // The slot is free again once its connection ends.
  Result<std::unique_ptr<Connection>> c4 = Status::Unavailable("not tried");
  for (int i = 0; i < 50 && !c4.ok(); ++i) {
    c4 = Connection::Connect("127.0.0.1", server->port(), b_);
    if (!c4.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(c4.ok()) << c4.status().ToString();
}

TEST_F(ServerLimitsTest, TheMemoryBudgetCutsOffTheConnectionThatWouldExceedIt) {
  ServerOptions o;
  o.memory_budget = 384 << 10;
  auto server = Start(o);
  ASSERT_TRUE(server);
  // Two peers each send 192 KiB of a 1 MiB frame. A buffer is charged a
  // 64 KiB piece before the piece arrives, so the first holds 256 KiB and
  // the second would take the total over 384 KiB: it is cut off, with a
  // reason.
  std::vector<std::unique_ptr<Connection>> cs;
  for (const auto* creds : {&a_, &b_}) {
    auto c = Connection::Connect("127.0.0.1", server->port(), *creds);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    Bytes b = BigHeader(1u << 20);
    b.resize(b.size() + (192 << 10), 'x');
    ASSERT_TRUE((*c)->SendRaw(b).ok());
    cs.push_back(std::move(*c));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // The buffer grew with what arrived, not to the 1 MiB announced.
    if (cs.size() == 1) {
      EXPECT_EQ(server->stats().memory_used, 256u << 10);
    }
  }
  EXPECT_LE(server->stats().memory_used, o.memory_budget);
  auto f = cs[1]->Receive(5000);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto* e = std::get_if<wire::Error>(&f->message);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, Status::Code::kResourceExhausted);
  EXPECT_NE(e->message.find("frames in flight"), std::string::npos) << e->message;
  // Everything charged is given back when the connections go.
  cs.clear();
  for (int i = 0; i < 100 && server->stats().memory_used > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(server->stats().memory_used, 0u);
}

TEST_F(ServerLimitsTest, UnauthorizedPeersMaySendOnlySmallFrames) {
  ServerOptions o;
  o.verify_client_ca = false;  // the handler would decide (the agent)
  auto server = Start(o);
  ASSERT_TRUE(server);
  auto stranger = SelfSignedCredentials("stranger", Role::kClient, 3600);
  ConnectOptions co;
  co.verify_server_ca = false;
  auto c = Connection::Connect("127.0.0.1", server->port(), *stranger, co);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE((*c)->Send(1, wire::GetRef{"small"}).ok());
  EXPECT_TRUE((*c)->Expect(1, wire::MessageType::kRefData).ok());
  EXPECT_EQ(server->stats().pending, 1u);
  EXPECT_EQ(server->stats().authorized, 0u);
  ASSERT_TRUE((*c)->Send(2, wire::GetRef{std::string(20 << 10, 'x')}).ok());
  auto f = (*c)->Receive(5000);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto* e = std::get_if<wire::Error>(&f->message);
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->message.find("before it is authorized"), std::string::npos) << e->message;
}

}  // namespace
}  // namespace slingshot::testing
