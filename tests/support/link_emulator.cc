#include "link_emulator.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>

#include "slingshot/base/chunk_id.h"

namespace slingshot::testing {
namespace {
using Clock = std::chrono::steady_clock;

int ConnectTo(const std::string& host, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}
}  // namespace

Result<std::unique_ptr<LinkEmulator>> LinkEmulator::Start(const std::string& target_host, uint16_t target_port,
                                                          LinkProfile profile, const std::string& listen_host,
                                                          uint16_t listen_port) {
  std::unique_ptr<LinkEmulator> l(new LinkEmulator());
  l->target_host_ = target_host;
  l->target_port_ = target_port;
  l->profile_ = profile;
  l->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(listen_port);
  if (inet_pton(AF_INET, listen_host.c_str(), &a.sin_addr) != 1) {
    return Status::InvalidArgument("link emulator: listen address " + listen_host + " is not IPv4");
  }
  int one = 1;
  setsockopt(l->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t len = sizeof(a);
  if (::bind(l->listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(l->listen_fd_, 64) != 0 ||
      ::getsockname(l->listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return Status::FromErrno("link emulator listen", errno);
  }
  l->port_ = ntohs(a.sin_port);
  LinkEmulator* raw = l.get();
  l->acceptor_ = std::thread([raw] { raw->AcceptLoop(); });
  return l;
}

LinkEmulator::~LinkEmulator() { Stop(); }

void LinkEmulator::Stop() {
  if (stop_.exchange(true)) return;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> pumps;
  {
    MutexLock lock(&mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    pumps.swap(pumps_);
  }
  for (auto& t : pumps) t.join();
  MutexLock lock(&mu_);
  for (int fd : fds_) ::close(fd);
  fds_.clear();
}

void LinkEmulator::AcceptLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int server = ConnectTo(target_host_, target_port_);
    if (server < 0) {
      ::close(client);
      continue;
    }
    MutexLock lock(&mu_);
    fds_.push_back(client);
    fds_.push_back(server);
    pumps_.emplace_back([this, client, server] { Pump(client, server, 0); });
    pumps_.emplace_back([this, client, server] { Pump(server, client, 1); });
  }
}

// One direction: a reader stamps each piece with its delivery time, a writer
// delivers it then.
void LinkEmulator::Pump(int from, int to, int direction) {
  struct Piece {
    Bytes data;
    Clock::time_point deliver;
  };
  Mutex m;
  CondVar cv;
  std::deque<Piece> q;
  size_t queued = 0;
  bool eof = false;
  const auto one_way = std::chrono::duration<double, std::milli>(profile_.rtt_ms / 2);
  std::thread writer([&] {
    for (;;) {
      Piece p;
      {
        MutexLock lock(&m);
        while (q.empty() && !eof) cv.Wait(&m);
        if (q.empty()) break;
        p = std::move(q.front());
        q.pop_front();
      }
      std::this_thread::sleep_until(p.deliver);
      size_t off = 0;
      while (off < p.data.size()) {
        ssize_t n = ::send(to, p.data.data() + off, p.data.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += size_t(n);
      }
      bytes_ += p.data.size();
      MutexLock lock(&m);
      queued -= p.data.size();
      cv.SignalAll();
      if (off < p.data.size()) {
        eof = true;
        break;
      }
    }
    ::shutdown(to, SHUT_WR);
  });
  Clock::time_point departure = Clock::now();
  Bytes buf(16 << 10);
  for (;;) {
    {
      MutexLock lock(&m);
      while (queued >= profile_.queue_bytes && !eof) cv.Wait(&m);
      if (eof) break;
    }
    ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    auto now = Clock::now();
    auto serialize = std::chrono::duration<double>(double(n) * 8 / profile_.rate_bits_per_s);
    if (profile_.shared) {
      MutexLock lock(&shared_mu_);
      departure = std::max(shared_departure_[direction], now) + std::chrono::duration_cast<Clock::duration>(serialize);
      shared_departure_[direction] = departure;
    } else {
      departure = std::max(departure, now) + std::chrono::duration_cast<Clock::duration>(serialize);
    }
    MutexLock lock(&m);
    q.push_back(Piece{Bytes(buf.begin(), buf.begin() + n),
                      departure + std::chrono::duration_cast<Clock::duration>(one_way)});
    queued += size_t(n);
    cv.SignalAll();
  }
  {
    MutexLock lock(&m);
    eof = true;
    cv.SignalAll();
  }
  writer.join();
}

}  // namespace slingshot::testing
