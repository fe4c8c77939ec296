// ReplicaNetwork (core/vm): each replica's own bridge and namespace, with
// the host reaching the guest's port through a loopback forwarder. Real
// bridges, veths and namespaces; a "guest" here is a namespace of its own
// with 10.0.2.15 on a veth whose other end sits on the replica's bridge,
// where a Xen vif would be. Needs root, as the e2e tests do.
#include "slingshot/vm/replica_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "process.h"
#include "slingshot/base/file_util.h"

namespace slingshot::testing {
namespace {

// Connects fd to to within timeout_ms; true if it connected.
bool ConnectWithin(int fd, const sockaddr_in& to, int timeout_ms) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd, POLLOUT, 0};
  if (poll(&p, 1, timeout_ms) != 1) return false;
  int e = 0;
  socklen_t len = sizeof e;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
  if (e != 0) return false;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return true;
}

// A TCP server on addr:port inside namespace ns: says its name, then echoes.
class GuestServer {
 public:
  GuestServer(const std::string& ns, const char* addr, uint16_t port, std::string name)
      : name_(std::move(name)) {
    fd_.Reset(SocketInNamespace(ns, SOCK_STREAM));
    int one = 1;
    setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = Ipv4(addr, port);
    ok_ = fd_.valid() && ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
          ::listen(fd_.get(), 8) == 0;
    if (ok_) thread_ = std::thread([this] { Serve(); });
  }
  ~GuestServer() {
    stop_ = true;
    ::shutdown(fd_.get(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return ok_; }

 private:
  void Serve() {
    while (!stop_) {
      int c = ::accept(fd_.get(), nullptr, nullptr);
      if (c < 0) return;
      std::thread([c, name = name_] {
        (void)!::write(c, name.data(), name.size());
        char buf[65536];
        ssize_t n;
        while ((n = ::read(c, buf, sizeof buf)) > 0) {
          if (!WriteAll(c, buf, static_cast<size_t>(n), "echo").ok()) break;
        }
        ::close(c);
      }).detach();
    }
  }
  std::string name_;
  UniqueFd fd_;
  bool ok_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A listener in this (the host's) namespace on every address.
class HostListener {
 public:
  HostListener() {
    fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a = Ipv4("0.0.0.0", 0);
    socklen_t len = sizeof a;
    ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_.get(), 8);
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  uint16_t port() const { return port_; }

 private:
  UniqueFd fd_;
  uint16_t port_ = 0;
};

class ReplicaNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (bridges and network namespaces), as the e2e tests do";
    prefix_ = "t" + std::to_string(::getpid() % 100000);
  }
  void TearDown() override {
    nets_.clear();
    // The veth first: deleting it is synchronous, a namespace's end is not.
    for (const auto& p : ports_) Shell("ip link del " + p + " 2>/dev/null");
    for (const auto& g : guests_) Shell("ip netns del " + g + " 2>/dev/null");
  }
  // A replica network, and a guest on its bridge at 10.0.2.15 (plus extra).
  ReplicaNetwork* AddReplica(uint32_t id, const std::string& extra = "") {
    ReplicaNetworkOptions o;
    o.prefix = prefix_;
    o.id = id;
    auto n = ReplicaNetwork::Create(o);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok()) return nullptr;
    std::string g = prefix_ + "-g" + std::to_string(id);
    std::string port = prefix_ + "p" + std::to_string(id);
    guests_.push_back(g);
    ports_.push_back(port);
    int rc = 0;
    std::string out = Shell("set -e; ip netns add " + g + "; ip link add " + port + " type veth peer name eth0 netns " + g +
                                "; ip link set " + port + " master " + (*n)->bridge() + " up; ip -n " + g +
                                " addr add 10.0.2.15/24 dev eth0; " +
                                (extra.empty() ? "" : "ip -n " + g + " addr add " + extra + "/24 dev eth0; ") + "ip -n " +
                                g + " link set eth0 up; ip -n " + g + " link set lo up; ip -n " + g +
                                " route add default via 10.0.2.2",
                            &rc);
    EXPECT_EQ(rc, 0) << out;
    nets_.push_back(std::move(*n));
    return nets_.back().get();
  }
  std::string Guest(uint32_t id) const { return prefix_ + "-g" + std::to_string(id); }
  // From inside guest id: can it open a TCP connection to addr:port?
  bool GuestReaches(uint32_t id, const char* addr, uint16_t port) {
    UniqueFd fd(SocketInNamespace(Guest(id), SOCK_STREAM));
    return fd.valid() && ConnectWithin(fd.get(), Ipv4(addr, port), 2000);
  }

  std::string prefix_;
  std::vector<std::unique_ptr<ReplicaNetwork>> nets_;
  std::vector<std::string> guests_, ports_;
};

std::string ReadSome(int fd, size_t n) {
  std::string out;
  char buf[4096];
  while (out.size() < n) {
    ssize_t r = ::read(fd, buf, std::min(sizeof buf, n - out.size()));
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

TEST_F(ReplicaNetworkTest, TwoReplicasWithOneAddressEachReachTheirOwnGuest) {
  ReplicaNetwork* a = AddReplica(1);
  ReplicaNetwork* b = AddReplica(2);
  ASSERT_TRUE(a && b);
  GuestServer sa(Guest(1), "10.0.2.15", 5900, "A");
  GuestServer sb(Guest(2), "10.0.2.15", 5900, "B");
  ASSERT_TRUE(sa.ok() && sb.ok());
  auto ea = a->Forward("10.0.2.15", 5900);
  auto eb = b->Forward("10.0.2.15", 5900);
  ASSERT_TRUE(ea.ok() && eb.ok()) << ea.status().ToString() << eb.status().ToString();
  EXPECT_EQ(ea->host, "127.0.0.1");
  EXPECT_NE(ea->port, eb->port);
  EXPECT_EQ(a->Forward("10.0.2.15", 5900)->port, ea->port);  // one forwarder per target

  for (auto [ep, name] : {std::pair{*ea, "A"}, std::pair{*eb, "B"}}) {
    UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(ConnectWithin(c.get(), Ipv4("127.0.0.1", ep.port), 5000));
    EXPECT_EQ(ReadSome(c.get(), 1), name);
    // A megabyte each way comes back intact through the relay.
    std::string payload(1 << 20, '\0');
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 7 + 3);
    std::thread w([&] { ASSERT_TRUE(WriteAll(c.get(), payload.data(), payload.size(), "send").ok()); });
    std::string back = ReadSome(c.get(), payload.size());
    w.join();
    EXPECT_TRUE(back == payload) << "echo of " << back.size() << " bytes differs";
    // A half-close reaches the guest, whose close comes back as EOF.
    ::shutdown(c.get(), SHUT_WR);
    char x;
    EXPECT_EQ(::read(c.get(), &x, 1), 0);
  }
}

TEST_F(ReplicaNetworkTest, AReplicaReachesNeitherAnotherReplicaNorTheHostNorTheLan) {
  ReplicaNetwork* a = AddReplica(1);
  ReplicaNetwork* b = AddReplica(2, "10.0.2.16");
  ASSERT_TRUE(a && b);
  GuestServer sb(Guest(2), "10.0.2.16", 5900, "B");
  GuestServer own(Guest(1), "10.0.2.15", 5900, "A");
  ASSERT_TRUE(sb.ok() && own.ok());
  HostListener host;
  // The probe works: the guest reaches itself, and B's server answers B.
  EXPECT_TRUE(GuestReaches(1, "10.0.2.15", 5900));
  EXPECT_TRUE(GuestReaches(2, "10.0.2.16", 5900));
  // Another replica, on its own bridge.
  EXPECT_FALSE(GuestReaches(1, "10.0.2.16", 5900));
  // The host, at the gateway and at its own addresses.
  EXPECT_FALSE(GuestReaches(1, "10.0.2.2", host.port()));
  std::string lan = Shell("ip -4 -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'");
  while (!lan.empty() && (lan.back() == '\n' || lan.back() == ' ')) lan.pop_back();
  if (!lan.empty()) {
    EXPECT_FALSE(GuestReaches(1, lan.c_str(), host.port())) << lan;
  }
  EXPECT_FALSE(GuestReaches(1, "1.1.1.1", 443));
  // No address of the host's own is on the bridge, IPv6 link-local included.
  EXPECT_EQ(Shell("ip -o addr show dev " + a->bridge()), "");
  EXPECT_EQ(Shell("ip -o -6 addr show dev " + a->host_veth()), "");
}

TEST_F(ReplicaNetworkTest, AConnectionToAPortTheGuestRefusesEndsAtOnce) {
  ReplicaNetwork* a = AddReplica(1);
  ASSERT_TRUE(a);
  auto ep = a->Forward("10.0.2.15", 5999);  // nothing listens there
  ASSERT_TRUE(ep.ok());
  UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(ConnectWithin(c.get(), Ipv4("127.0.0.1", ep->port), 5000));
  // The caller sees the end (as it would from a guest's own refusal), and
  // can retry, instead of waiting on a connection that leads nowhere.
  pollfd p{c.get(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 3000), 1);
  char x;
  EXPECT_LE(::read(c.get(), &x, 1), 0);
}

TEST_F(ReplicaNetworkTest, ClosingRemovesTheBridgeTheVethAndTheNamespace) {
  ReplicaNetwork* a = AddReplica(1);
  ASSERT_TRUE(a);
  GuestServer sa(Guest(1), "10.0.2.15", 5900, "A");
  auto ea = a->Forward("10.0.2.15", 5900);
  ASSERT_TRUE(ea.ok());
  UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(ConnectWithin(c.get(), Ipv4("127.0.0.1", ea->port), 5000));
  EXPECT_EQ(ReadSome(c.get(), 1), "A");
  const std::string bridge = a->bridge(), veth = a->host_veth(), ns = a->netns();
  nets_.clear();  // with a relayed connection still open
  EXPECT_NE(access(("/sys/class/net/" + bridge).c_str(), F_OK), 0);
  EXPECT_NE(access(("/sys/class/net/" + veth).c_str(), F_OK), 0);
  EXPECT_NE(access(("/run/netns/" + ns).c_str(), F_OK), 0);
  char x;
  EXPECT_EQ(::read(c.get(), &x, 1), 0);  // the relay closed
}

TEST_F(ReplicaNetworkTest, WhatAKilledProcessLeftIsRemoved) {
  int rc = 0;
  Shell("set -e; ip netns add " + prefix_ + "-7; ip link add " + prefix_ + "b7 type bridge; ip link add " + prefix_ +
            "b8 type bridge",
        &rc);
  ASSERT_EQ(rc, 0);
  // Making a network whose names are taken remakes it.
  ReplicaNetworkOptions o;
  o.prefix = prefix_;
  o.id = 7;
  auto n = ReplicaNetwork::Create(o);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  n->reset();
  EXPECT_EQ(ReplicaNetwork::RemoveStale(prefix_, ""), 1);  // b8
  EXPECT_NE(access(("/sys/class/net/" + prefix_ + "b8").c_str(), F_OK), 0);
  EXPECT_EQ(ReplicaNetwork::RemoveStale(prefix_, ""), 0);
}

}  // namespace
}  // namespace slingshot::testing
