#include "slingshot/vm/replica_network.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <map>
#include <thread>
#include <vector>

#include "child.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"

namespace slingshot {
namespace {

constexpr int kConnectTimeoutMs = 5000;
constexpr size_t kRelayBuffer = 64 << 10;

Status RunIp(const std::vector<std::string>& args, const std::string& log_path) {
  SLINGSHOT_ASSIGN_OR_RETURN(std::string ip, FindExecutable("ip", "iproute2"));
  SpawnOptions o;
  o.argv = {ip};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.output_path = log_path;
  SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<Child> c, Child::Spawn(o));
  std::string how;
  if (c->Wait(15000, &how) && c->exit_code() == 0) return Status::OK();
  std::string cmd = "ip";
  for (const auto& a : args) cmd += " " + a;
  if (how.empty()) how = "did not finish in 15 s";
  return Status::IOError("`" + cmd + "` failed (" + how + ")" +
                         (log_path.empty() ? std::string() : "; its output is in " + log_path));
}

// Best effort: an interface without IPv6 gets no link-local address, so a
// guest cannot reach the host over IPv6 either.
void DisableIpv6(const std::string& dev) {
  int fd = ::open(("/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;  // no IPv6 in this kernel
  (void)!::write(fd, "1", 1);
  ::close(fd);
}

// A TCP socket made inside the namespace open at nsfd: a thread of its own
// enters the namespace (setns affects only the calling thread) and leaves
// the socket behind, which stays in that namespace.
Result<UniqueFd> SocketIn(int nsfd) {
  int fd = -1, err = 0;
  std::thread([&] {
    if (::setns(nsfd, CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) err = errno;
  }).join();
  if (fd < 0) return Status::FromErrno("a socket in the replica's network namespace", err);
  return UniqueFd(fd);
}

Status ConnectWithTimeout(int fd, const sockaddr_in& to, int timeout_ms) {
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  if (rc != 0 && errno != EINPROGRESS) return Status::FromErrno("connect", errno);
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    int pr;
    do pr = poll(&p, 1, timeout_ms); while (pr < 0 && errno == EINTR);
    if (pr == 0) return Status::Unavailable("connect timed out");
    int e = 0;
    socklen_t len = sizeof e;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
    if (e != 0) return Status::FromErrno("connect", e);
  }
  fcntl(fd, F_SETFL, flags);
  return Status::OK();
}

// Copies what one side sends to the other; false when that direction ended.
bool Pump(int from, int to, std::vector<uint8_t>* buf) {
  ssize_t n;
  do n = ::recv(from, buf->data(), buf->size(), 0); while (n < 0 && errno == EINTR);
  if (n <= 0) {
    ::shutdown(to, SHUT_WR);
    return false;
  }
  return WriteAll(to, buf->data(), static_cast<size_t>(n), "relay").ok();
}

}  // namespace

struct ReplicaNetwork::Impl {
  ReplicaNetworkOptions options;
  std::string bridge, veth, netns;
  UniqueFd nsfd;
  UniqueFd stop;  // eventfd: readable once the network closes
  std::atomic<bool> closing{false};

  struct Conn {
    UniqueFd outer, inner;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  struct Listener {
    std::string target;
    UniqueFd fd;
    uint16_t port = 0;
    sockaddr_in to{};
    std::thread thread;
  };
  Mutex mu;
  std::map<std::string, std::unique_ptr<Listener>> listeners GUARDED_BY(mu);
  std::list<std::unique_ptr<Conn>> conns GUARDED_BY(mu);

  void Accept(Listener* l);
  void Relay(Conn* c);
  void Close();
  void Teardown() const;
};

void ReplicaNetwork::Impl::Accept(Listener* l) {
  for (;;) {
    pollfd p[2] = {{l->fd.get(), POLLIN, 0}, {stop.get(), POLLIN, 0}};
    int pr = poll(p, 2, -1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0 || (p[1].revents & POLLIN)) return;
    int fd = ::accept4(l->fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    UniqueFd outer(fd);
    MutexLock lock(&mu);
    if (closing) return;
    // Reap relays that ended.
    for (auto it = conns.begin(); it != conns.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
    if (static_cast<int>(conns.size()) >= options.max_connections) {
      LogWarning("replica network " + netns + ": " + std::to_string(conns.size()) +
                 " connections relayed already; refusing one more to " + l->target);
      continue;
    }
    auto inner = SocketIn(nsfd.get());
    if (!inner.ok()) {
      LogWarning("replica network " + netns + ": " + inner.status().ToString());
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->outer = std::move(outer);
    c->inner = std::move(*inner);
    Conn* raw = c.get();
    sockaddr_in to = l->to;
    std::string target = l->target;
    c->thread = std::thread([this, raw, to, target] {
      Status s = ConnectWithTimeout(raw->inner.get(), to, kConnectTimeoutMs);
      if (s.ok()) {
        Relay(raw);
      } else if (!closing) {
        LogInfo("replica network " + netns + ": cannot reach " + target + " (yet?): " + s.ToString());
      }
      // Closed at once, so the caller sees the end now (as when a guest's
      // port refuses), not when the relay is reaped.
      raw->outer.Reset();
      raw->inner.Reset();
      raw->done = true;
    });
    conns.push_back(std::move(c));
  }
}

void ReplicaNetwork::Impl::Relay(Conn* c) {
  std::vector<uint8_t> buf(kRelayBuffer);
  bool out_open = true, in_open = true;  // outer->inner, inner->outer
  while (out_open || in_open) {
    pollfd p[3] = {{c->outer.get(), static_cast<short>(out_open ? POLLIN : 0), 0},
                   {c->inner.get(), static_cast<short>(in_open ? POLLIN : 0), 0},
                   {stop.get(), POLLIN, 0}};
    int pr = poll(p, 3, -1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0 || (p[2].revents & POLLIN)) return;
    if (out_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      out_open = Pump(c->outer.get(), c->inner.get(), &buf);
      if (!out_open && (p[0].revents & POLLERR)) in_open = false;
    }
    if (in_open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      in_open = Pump(c->inner.get(), c->outer.get(), &buf);
      if (!in_open && (p[1].revents & POLLERR)) out_open = false;
    }
  }
}

void ReplicaNetwork::Impl::Close() {
  std::list<std::unique_ptr<Conn>> cs;
  std::map<std::string, std::unique_ptr<Listener>> ls;
  {
    MutexLock lock(&mu);
    closing = true;
    uint64_t one = 1;
    (void)!::write(stop.get(), &one, sizeof one);
    cs.swap(conns);
    ls.swap(listeners);
  }
  for (auto& [_, l] : ls) l->thread.join();
  for (auto& c : cs) c->thread.join();
}

void ReplicaNetwork::Impl::Teardown() const {
  // Deleting one end of a veth pair deletes both; the namespace goes with
  // its last reference.
  const std::string& log = options.log_path;
  (void)RunIp({"link", "del", veth}, log);
  (void)RunIp({"link", "del", bridge}, log);
  (void)RunIp({"netns", "del", netns}, log);
}

Result<std::unique_ptr<ReplicaNetwork>> ReplicaNetwork::Create(const ReplicaNetworkOptions& o) {
  if (o.prefix.empty() || o.prefix.size() > 6) {
    return Status::InvalidArgument("replica network prefix '" + o.prefix + "' must have 1 to 6 characters");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = o;
  const std::string id = std::to_string(o.id);
  impl->bridge = o.prefix + "b" + id;
  impl->veth = o.prefix + "v" + id;
  impl->netns = o.prefix + "-" + id;
  if (impl->bridge.size() > 15) return Status::InvalidArgument("replica network id too long for " + impl->bridge);
  int efd = eventfd(0, EFD_CLOEXEC);
  if (efd < 0) return Status::FromErrno("eventfd", errno);
  impl->stop.Reset(efd);

  const std::string& log = o.log_path;
  const std::string& ns = impl->netns;
  // What a killed process left under these names goes first.
  if (access(("/sys/class/net/" + impl->bridge).c_str(), F_OK) == 0 ||
      access(("/sys/class/net/" + impl->veth).c_str(), F_OK) == 0 ||
      access(("/run/netns/" + ns).c_str(), F_OK) == 0) {
    LogWarning("replica network " + ns + " exists already (left by a killed process?); remaking it");
    impl->Teardown();
  }
  std::vector<std::vector<std::string>> steps = {
      {"netns", "add", ns},
      {"link", "add", impl->bridge, "type", "bridge"},
  };
  Status s;
  for (const auto& step : steps) {
    s = RunIp(step, log);
    if (!s.ok()) break;
  }
  if (s.ok()) {
    DisableIpv6(impl->bridge);
    for (const auto& step : std::vector<std::vector<std::string>>{
             {"link", "set", impl->bridge, "up"},
             {"link", "add", impl->veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
             {"link", "set", impl->veth, "master", impl->bridge},
             {"link", "set", impl->veth, "up"},
             {"-n", ns, "addr", "add", o.gateway, "dev", "eth0"},
             {"-n", ns, "link", "set", "eth0", "up"},
             {"-n", ns, "link", "set", "lo", "up"}}) {
      if (step[0] == "link" && step[1] == "set" && step[2] == impl->veth && step[3] == "master") {
        DisableIpv6(impl->veth);
      }
      s = RunIp(step, log);
      if (!s.ok()) break;
    }
  }
  if (s.ok()) {
    int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) s = Status::FromErrno("opening /run/netns/" + ns, errno);
    impl->nsfd.Reset(fd);
  }
  if (!s.ok()) {
    impl->Teardown();
    return s.Annotate("making the network of replica " + id);
  }
  return std::unique_ptr<ReplicaNetwork>(new ReplicaNetwork(std::move(impl)));
}

ReplicaNetwork::ReplicaNetwork(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ReplicaNetwork::~ReplicaNetwork() {
  impl_->Close();
  impl_->nsfd.Reset();
  impl_->Teardown();
}

const std::string& ReplicaNetwork::bridge() const { return impl_->bridge; }
const std::string& ReplicaNetwork::netns() const { return impl_->netns; }
const std::string& ReplicaNetwork::host_veth() const { return impl_->veth; }

Result<Endpoint> ReplicaNetwork::Forward(const std::string& guest_address, uint16_t guest_port) {
  const std::string target = guest_address + ":" + std::to_string(guest_port);
  MutexLock lock(&impl_->mu);
  if (impl_->closing) return Status::Unavailable("replica network " + impl_->netns + " is closing");
  auto it = impl_->listeners.find(target);
  if (it != impl_->listeners.end()) return Endpoint{"127.0.0.1", it->second->port};
  auto l = std::make_unique<Impl::Listener>();
  l->target = target;
  l->to.sin_family = AF_INET;
  l->to.sin_port = htons(guest_port);
  if (inet_pton(AF_INET, guest_address.c_str(), &l->to.sin_addr) != 1) {
    return Status::InvalidArgument("'" + guest_address + "' is not an IPv4 address");
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  l->fd.Reset(fd);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return Status::FromErrno("a loopback listener for " + target, errno);
  }
  l->port = ntohs(a.sin_port);
  Impl::Listener* raw = l.get();
  Impl* impl = impl_.get();
  l->thread = std::thread([impl, raw] { impl->Accept(raw); });
  uint16_t port = l->port;
  impl_->listeners.emplace(target, std::move(l));
  return Endpoint{"127.0.0.1", port};
}

// The entries of dir whose names start with prefix.
static std::vector<std::string> NamesWithPrefix(const char* dir, const std::string& prefix) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind(prefix, 0) == 0) names.push_back(n);
    }
    closedir(d);
  }
  return names;
}

int ReplicaNetwork::RemoveStale(const std::string& prefix, const std::string& log_path) {
  if (prefix.empty()) return 0;
  int removed = 0;
  // Interfaces (the bridges and the host's veth ends), then namespaces.
  for (const auto& n : NamesWithPrefix("/sys/class/net", prefix)) {
    if (RunIp({"link", "del", n}, log_path).ok()) ++removed;
  }
  for (const auto& n : NamesWithPrefix("/run/netns", prefix)) {
    if (RunIp({"netns", "del", n}, log_path).ok()) ++removed;
  }
  return removed;
}

}  // namespace slingshot
