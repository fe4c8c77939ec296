#include "slingshot/disk/nbd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <list>
#include <map>
#include <thread>
#include <vector>

#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"

namespace slingshot {
namespace {

// Protocol constants (NBD's doc/proto.md). Everything on the wire is
// big-endian.
constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;     // "NBDMAGIC"
constexpr uint64_t kIHaveOpt = 0x49484156454F5054ull;     // "IHAVEOPT"
constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;

constexpr uint16_t kFlagFixedNewstyle = 1, kFlagNoZeroes = 2;
constexpr uint16_t kTxHasFlags = 1, kTxReadOnly = 2, kTxSendFlush = 4, kTxSendFua = 8,
                   kTxSendTrim = 0x20, kTxCanMultiConn = 0x100;
constexpr uint32_t kOptExportName = 1, kOptAbort = 2, kOptList = 3, kOptInfo = 6, kOptGo = 7;
constexpr uint32_t kRepAck = 1, kRepServer = 2, kRepInfo = 3;
constexpr uint32_t kRepErrUnsup = 0x80000001u, kRepErrInvalid = 0x80000003u,
                   kRepErrUnknown = 0x80000006u;
constexpr uint16_t kInfoExport = 0, kInfoBlockSize = 3;
constexpr uint16_t kCmdRead = 0, kCmdWrite = 1, kCmdDisc = 2, kCmdFlush = 3, kCmdTrim = 4;
constexpr uint16_t kCmdFlagFua = 1;
constexpr uint32_t kEPerm = 1, kEIO = 5, kEInval = 22, kENoSpc = 28;

void Be16(std::string* o, uint16_t v) { for (int i = 1; i >= 0; --i) o->push_back(char(v >> (8 * i))); }
void Be32(std::string* o, uint32_t v) { for (int i = 3; i >= 0; --i) o->push_back(char(v >> (8 * i))); }
void Be64(std::string* o, uint64_t v) { for (int i = 7; i >= 0; --i) o->push_back(char(v >> (8 * i))); }
uint64_t GetBe(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = v << 8 | p[i];
  return v;
}

// A connection ends with this status; kClosed is the peer going away.
Status Closed() { return Status::IOError("connection closed"); }

Status RecvExact(int fd, void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno("NBD recv", errno);
    if (r == 0) return Closed();
    p += r;
    n -= static_cast<size_t>(r);
  }
  return Status::OK();
}

Status SendAll(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno("NBD send", errno);
    p += r;
    n -= static_cast<size_t>(r);
  }
  return Status::OK();
}
Status SendAll(int fd, const std::string& s) { return SendAll(fd, s.data(), s.size()); }

class FileExport final : public BlockExport {
 public:
  FileExport(UniqueFd fd, uint64_t size, bool ro) : fd_(std::move(fd)), size_(size), ro_(ro) {}
  uint64_t size() const override { return size_; }
  bool read_only() const override { return ro_; }
  Status Read(uint64_t off, std::span<uint8_t> out) override {
    return PreadExact(fd_.get(), out.data(), out.size(), off, "export");
  }
  Status Write(uint64_t off, ByteView data) override {
    return PwriteAll(fd_.get(), data.data(), data.size(), off, "export");
  }
  Status Flush() override {
    return fdatasync(fd_.get()) == 0 ? Status::OK() : Status::FromErrno("export flush", errno);
  }
  Status Trim(uint64_t off, uint64_t len) override {
    if (fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0) {
      return Status::OK();
    }
    std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20));
    while (len > 0) {
      size_t n = std::min<uint64_t>(len, zeros.size());
      SLINGSHOT_RETURN_IF_ERROR(Write(off, ByteView(zeros.data(), n)));
      off += n;
      len -= n;
    }
    return Status::OK();
  }

 private:
  UniqueFd fd_;
  uint64_t size_;
  bool ro_;
};

}  // namespace

Result<std::shared_ptr<BlockExport>> OpenFileExport(const std::string& path, bool read_only) {
  UniqueFd fd(open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("opening " + path, errno);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno("stat " + path, errno);
  return std::shared_ptr<BlockExport>(
      new FileExport(std::move(fd), static_cast<uint64_t>(st.st_size), read_only));
}

struct NbdServer::Impl {
  struct Export {
    std::shared_ptr<BlockExport> disk;
    std::string description;
  };
  struct Conn {
    UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  NbdServerOptions options;
  std::map<std::string, Export> exports;
  std::vector<UniqueFd> listeners;
  std::vector<std::string> unix_paths;
  UniqueFd stop_fd;
  std::thread accept_thread;
  bool started = false;
  Mutex mu;
  std::list<std::unique_ptr<Conn>> conns GUARDED_BY(mu);
  std::atomic<uint64_t> n_connections{0}, n_requests{0}, n_bad{0};

  const Export* FindExport(const std::string& name) const {
    auto it = exports.find(name);
    if (it != exports.end()) return &it->second;
    // An empty name is the default export when there is only one.
    if (name.empty() && exports.size() == 1) return &exports.begin()->second;
    return nullptr;
  }

  Status OptReply(int fd, uint32_t opt, uint32_t type, const std::string& data) {
    std::string m;
    Be64(&m, kOptReplyMagic);
    Be32(&m, opt);
    Be32(&m, type);
    Be32(&m, static_cast<uint32_t>(data.size()));
    m += data;
    return SendAll(fd, m);
  }

  static uint16_t TxFlags(const BlockExport& d) {
    // Multi-conn: every connection serves the same BlockExport object, so a
    // write is visible to all and a flush on one makes all durable.
    return kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim | kTxCanMultiConn |
           (d.read_only() ? kTxReadOnly : 0);
  }

  // Runs the handshake; returns the export to serve, or null when the client
  // ended the negotiation.
  Result<const Export*> Handshake(int fd) {
    std::string hello;
    Be64(&hello, kNbdMagic);
    Be64(&hello, kIHaveOpt);
    Be16(&hello, kFlagFixedNewstyle | kFlagNoZeroes);
    SLINGSHOT_RETURN_IF_ERROR(SendAll(fd, hello));
    uint8_t cf[4];
    SLINGSHOT_RETURN_IF_ERROR(RecvExact(fd, cf, 4));
    uint32_t client_flags = static_cast<uint32_t>(GetBe(cf, 4));
    if (client_flags & ~uint32_t{3}) {
      return Status::InvalidArgument("NBD client sent unknown handshake flags");
    }
    const bool no_zeroes = client_flags & kFlagNoZeroes;
    for (;;) {
      uint8_t h[16];
      SLINGSHOT_RETURN_IF_ERROR(RecvExact(fd, h, 16));
      if (GetBe(h, 8) != kIHaveOpt) return Status::InvalidArgument("NBD option without IHAVEOPT magic");
      uint32_t opt = static_cast<uint32_t>(GetBe(h + 8, 4));
      uint32_t len = static_cast<uint32_t>(GetBe(h + 12, 4));
      if (len > options.max_option) {
        return Status::InvalidArgument("NBD option " + std::to_string(opt) + " claims " +
                                       std::to_string(len) + " bytes (limit " +
                                       std::to_string(options.max_option) + ")");
      }
      std::string data(len, '\0');
      SLINGSHOT_RETURN_IF_ERROR(RecvExact(fd, data.data(), len));
      const auto* d = reinterpret_cast<const uint8_t*>(data.data());
      switch (opt) {
        case kOptExportName: {
          const Export* e = FindExport(data);
          if (!e) return Status::NotFound("NBD client asked for unknown export '" + data + "'");
          std::string r;
          Be64(&r, e->disk->size());
          Be16(&r, TxFlags(*e->disk));
          if (!no_zeroes) r.append(124, '\0');
          SLINGSHOT_RETURN_IF_ERROR(SendAll(fd, r));
          return e;
        }
        case kOptAbort:
          (void)OptReply(fd, opt, kRepAck, "");
          return nullptr;
        case kOptList: {
          if (len != 0) {
            SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepErrInvalid, "LIST takes no data"));
            break;
          }
          for (auto& [name, e] : exports) {
            std::string r;
            Be32(&r, static_cast<uint32_t>(name.size()));
            r += name + e.description;
            SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepServer, r));
          }
          SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepAck, ""));
          break;
        }
        case kOptInfo:
        case kOptGo: {
          // u32 name length, name, u16 count, count x u16 info types.
          if (len < 6) {
            SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepErrInvalid, "option too short"));
            break;
          }
          uint32_t nlen = static_cast<uint32_t>(GetBe(d, 4));
          if (nlen > len - 6) {
            SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepErrInvalid, "name length exceeds option"));
            break;
          }
          std::string name = data.substr(4, nlen);
          uint16_t n = static_cast<uint16_t>(GetBe(d + 4 + nlen, 2));
          if (len != 6 + nlen + 2u * n) {
            SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepErrInvalid, "info request count mismatch"));
            break;
          }
          bool want_block_size = false;
          for (uint16_t i = 0; i < n; ++i) {
            want_block_size |= GetBe(d + 6 + nlen + 2 * i, 2) == kInfoBlockSize;
          }
          const Export* e = FindExport(name);
          if (!e) {
            SLINGSHOT_RETURN_IF_ERROR(
                OptReply(fd, opt, kRepErrUnknown, "no export named '" + name + "'"));
            break;
          }
          std::string info;
          Be16(&info, kInfoExport);
          Be64(&info, e->disk->size());
          Be16(&info, TxFlags(*e->disk));
          SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepInfo, info));
          if (want_block_size) {
            std::string bs;
            Be16(&bs, kInfoBlockSize);
            Be32(&bs, 1);
            Be32(&bs, 4096);
            Be32(&bs, options.max_request);
            SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepInfo, bs));
          }
          SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepAck, ""));
          if (opt == kOptGo) return e;
          break;
        }
        default:
          SLINGSHOT_RETURN_IF_ERROR(OptReply(fd, opt, kRepErrUnsup, "unsupported option"));
      }
    }
  }

  Status SimpleReply(int fd, uint32_t error, uint64_t handle, ByteView data = {}) {
    std::string r;
    Be32(&r, kSimpleReplyMagic);
    Be32(&r, error);
    Be64(&r, handle);
    if (error == 0 && !data.empty()) {
      // One send for header and data keeps small reads in one segment.
      r.append(reinterpret_cast<const char*>(data.data()), data.size());
    }
    return SendAll(fd, r);
  }

  static uint32_t ErrnoFor(const Status& s) {
    return s.code() == Status::Code::kResourceExhausted ? kENoSpc : kEIO;
  }

  Status Transmit(int fd, BlockExport& disk) {
    std::vector<uint8_t> buf;
    for (;;) {
      uint8_t h[28];
      SLINGSHOT_RETURN_IF_ERROR(RecvExact(fd, h, 28));
      if (GetBe(h, 4) != kRequestMagic) {
        n_bad++;
        return Status::InvalidArgument("NBD request with a bad magic; closing the connection");
      }
      n_requests++;
      uint16_t flags = static_cast<uint16_t>(GetBe(h + 4, 2));
      uint16_t type = static_cast<uint16_t>(GetBe(h + 6, 2));
      uint64_t handle = GetBe(h + 8, 8);
      uint64_t offset = GetBe(h + 16, 8);
      uint32_t length = static_cast<uint32_t>(GetBe(h + 24, 4));
      const bool in_bounds = offset <= disk.size() && length <= disk.size() - offset;
      switch (type) {
        case kCmdRead: {
          if (length > options.max_request || !in_bounds) {
            n_bad++;
            SLINGSHOT_RETURN_IF_ERROR(SimpleReply(fd, kEInval, handle));
            break;
          }
          buf.resize(length);
          Status s = disk.Read(offset, std::span<uint8_t>(buf.data(), length));
          SLINGSHOT_RETURN_IF_ERROR(s.ok() ? SimpleReply(fd, 0, handle, ByteView(buf.data(), length))
                                           : SimpleReply(fd, ErrnoFor(s), handle));
          break;
        }
        case kCmdWrite: {
          if (length > options.max_request) {
            n_bad++;
            // The payload cannot be skipped safely: end the connection.
            return Status::InvalidArgument("NBD write of " + std::to_string(length) +
                                           " bytes exceeds the limit");
          }
          buf.resize(length);
          SLINGSHOT_RETURN_IF_ERROR(RecvExact(fd, buf.data(), length));
          uint32_t err = 0;
          if (disk.read_only()) {
            err = kEPerm;
          } else if (!in_bounds) {
            err = kEInval;
          } else {
            Status s = disk.Write(offset, ByteView(buf.data(), length));
            if (s.ok() && (flags & kCmdFlagFua)) s = disk.Flush();
            if (!s.ok()) err = ErrnoFor(s);
          }
          if (err) n_bad++;
          SLINGSHOT_RETURN_IF_ERROR(SimpleReply(fd, err, handle));
          break;
        }
        case kCmdFlush: {
          Status s = disk.Flush();
          SLINGSHOT_RETURN_IF_ERROR(SimpleReply(fd, s.ok() ? 0 : ErrnoFor(s), handle));
          break;
        }
        case kCmdTrim: {
          uint32_t err = disk.read_only() ? kEPerm : !in_bounds ? kEInval : 0;
          if (!err) {
            Status s = disk.Trim(offset, length);
            if (s.ok() && (flags & kCmdFlagFua)) s = disk.Flush();
            if (!s.ok()) err = ErrnoFor(s);
          }
          SLINGSHOT_RETURN_IF_ERROR(SimpleReply(fd, err, handle));
          break;
        }
        case kCmdDisc:
          return Status::OK();
        default:
          n_bad++;
          SLINGSHOT_RETURN_IF_ERROR(SimpleReply(fd, kEInval, handle));
      }
    }
  }

  void Session(int fd) {
    auto e = Handshake(fd);
    Status s = e.status();
    if (s.ok() && *e) s = Transmit(fd, *(*e)->disk);
    if (!s.ok() && s.message() != "connection closed") {
      if (s.code() == Status::Code::kInvalidArgument) n_bad++;
      LogWarning("NBD connection ended: " + s.ToString());
    }
  }

  void Serve(Conn* c) {
    n_connections++;
    // The session's state (its error message included) is freed before the
    // peer sees the socket close, so a peer that waits for the close (a test,
    // the fuzzer's leak check) never sees this thread holding memory.
    Session(c->fd.get());
    shutdown(c->fd.get(), SHUT_RDWR);
    c->done = true;
  }

  void AcceptLoop() {
    std::vector<pollfd> fds{{stop_fd.get(), POLLIN, 0}};
    for (auto& l : listeners) fds.push_back({l.get(), POLLIN, 0});
    for (;;) {
      if (poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[0].revents) return;
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        int cfd = accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (cfd < 0) continue;
        auto conn = std::make_unique<Conn>();
        conn->fd.Reset(cfd);
        Conn* raw = conn.get();
        MutexLock l(&mu);
        // Reap finished connections as new ones come.
        for (auto it = conns.begin(); it != conns.end();) {
          if ((*it)->done) {
            (*it)->thread.join();
            it = conns.erase(it);
          } else {
            ++it;
          }
        }
        conn->thread = std::thread([this, raw] { Serve(raw); });
        conns.push_back(std::move(conn));
      }
    }
  }
};

NbdServer::NbdServer(const NbdServerOptions& options) : impl_(new Impl) {
  impl_->options = options;
  impl_->stop_fd.Reset(eventfd(0, EFD_CLOEXEC));
}

NbdServer::~NbdServer() { Stop(); }

Status NbdServer::AddExport(const std::string& name, std::shared_ptr<BlockExport> disk,
                            const std::string& description) {
  if (impl_->started) return Status::InvalidArgument("NbdServer: AddExport after Start");
  if (name.size() > 4096) return Status::InvalidArgument("NBD export names are at most 4096 bytes");
  if (!impl_->exports.emplace(name, Impl::Export{std::move(disk), description}).second) {
    return Status::AlreadyExists("an NBD export named '" + name + "' exists");
  }
  return Status::OK();
}

Status NbdServer::ListenUnix(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return Status::InvalidArgument("unix socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  unlink(path.c_str());
  if (!fd.valid() || bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(fd.get(), 16) != 0) {
    return Status::FromErrno("listening on " + path, errno);
  }
  impl_->listeners.push_back(std::move(fd));
  impl_->unix_paths.push_back(path);
  return Status::OK();
}

Result<uint16_t> NbdServer::ListenTcp(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) return Status::InvalidArgument("cannot resolve " + host + ": " + gai_strerror(rc));
  UniqueFd fd(socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bool ok = fd.valid() && bind(fd.get(), res->ai_addr, res->ai_addrlen) == 0 && listen(fd.get(), 16) == 0;
  int err = errno;
  freeaddrinfo(res);
  if (!ok) return Status::FromErrno("listening on " + host + ":" + std::to_string(port), err);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  uint16_t bound = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  impl_->listeners.push_back(std::move(fd));
  return bound;
}

Status NbdServer::Start() {
  if (impl_->listeners.empty()) return Status::InvalidArgument("NbdServer: nothing to listen on");
  if (impl_->started) return Status::OK();
  impl_->started = true;
  impl_->accept_thread = std::thread([this] { impl_->AcceptLoop(); });
  return Status::OK();
}

void NbdServer::Stop() {
  if (!impl_->started) return;
  impl_->started = false;
  uint64_t one = 1;
  ssize_t ignored = write(impl_->stop_fd.get(), &one, sizeof one);
  (void)ignored;
  impl_->accept_thread.join();
  std::list<std::unique_ptr<Impl::Conn>> conns;
  {
    MutexLock l(&impl_->mu);
    conns.swap(impl_->conns);
  }
  for (auto& c : conns) shutdown(c->fd.get(), SHUT_RDWR);
  for (auto& c : conns) c->thread.join();
  impl_->listeners.clear();
  for (auto& p : impl_->unix_paths) unlink(p.c_str());
}

NbdServer::Stats NbdServer::stats() const {
  return Stats{impl_->n_connections.load(), impl_->n_requests.load(), impl_->n_bad.load()};
}

}  // namespace slingshot
