#include "slingshot/net/transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <array>
#include <deque>
#include <list>
#include <thread>

#include "slingshot/base/openssl_util.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"

namespace slingshot {
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using boost::system::error_code;

namespace {

std::string SubjectEntry(X509* cert, int nid) {
  if (!cert) return "";
  char buf[256];
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), nid, buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

Result<std::shared_ptr<ssl::context>> MakeContext(const TlsCredentials& c, bool server, bool verify_ca) {
  auto ctx = std::make_shared<ssl::context>(server ? ssl::context::tls_server : ssl::context::tls_client);
  SSL_CTX* n = ctx->native_handle();
  // TLS 1.3 only: no downgrade, forward secrecy always.
  if (SSL_CTX_set_min_proto_version(n, TLS1_3_VERSION) != 1 || SSL_CTX_set_max_proto_version(n, TLS1_3_VERSION) != 1) {
    return Status::Unsupported("this OpenSSL cannot restrict TLS to version 1.3");
  }
  error_code ec;
  ctx->use_certificate(asio::buffer(c.cert_pem), ssl::context::pem, ec);
  if (ec) return Status::InvalidArgument("our certificate is unusable: " + ec.message());
  ctx->use_private_key(asio::buffer(c.key_pem), ssl::context::pem, ec);
  if (ec) return Status::InvalidArgument("our private key is unusable: " + ec.message());
  if (SSL_CTX_check_private_key(n) != 1) {
    return Status::InvalidArgument("our private key does not belong to our certificate: re-issue the credentials");
  }
  // The only trust root: the home's CA (pinned; the system's roots are never loaded).
  if (verify_ca) {
    ctx->add_certificate_authority(asio::buffer(c.ca_pem), ec);
    if (ec) return Status::InvalidArgument("the CA certificate is unusable: " + ec.message());
  }
  ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  return ctx;
}

// Bytes held by a server's connections (frames arriving, frames queued).
class MemoryBudget {
 public:
  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}
  bool TryAcquire(uint64_t n) {
    uint64_t used = used_.load();
    do {
      if (used + n > limit_) return false;
    } while (!used_.compare_exchange_weak(used, used + n));
    return true;
  }
  void Release(uint64_t n) { used_.fetch_sub(n); }
  uint64_t used() const { return used_.load(); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

// A frame's payload is read in pieces of at most this many bytes, so its
// buffer grows with what arrives.
constexpr size_t kReadPiece = 64u << 10;

}  // namespace

std::string PeerInfo::Describe() const {
  std::string s = role == Role::kUnknown ? "peer" : RoleName(role);
  if (!common_name.empty()) s += " " + common_name;
  return s + " (" + address + ")";
}

struct Connection::Impl {
  Impl(std::shared_ptr<ssl::context> c, bool verify_ca) : ctx(std::move(c)), stream(ioc, *ctx) {
    stream.set_verify_callback([this, verify_ca](bool preverified, ssl::verify_context& vc) {
      // Open mode: any certificate; the caller checks it (PeerInfo::cert_pem).
      if (!verify_ca) return true;
      if (!preverified && verify_error.empty()) {
        X509_STORE_CTX* s = vc.native_handle();
        X509* cert = X509_STORE_CTX_get_current_cert(s);
        verify_error = std::string(X509_verify_cert_error_string(X509_STORE_CTX_get_error(s)));
        std::string cn = SubjectEntry(cert, NID_commonName);
        if (!cn.empty()) verify_error += " (certificate \"" + cn + "\")";
      }
      return preverified;
    });
  }

  // Runs the queued operation until it completes or timeout_ms passes; on
  // timeout the socket is closed and the connection is broken.
  Status Run(int timeout_ms, std::string_view what) {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(timeout_ms));
    if (!ioc.stopped()) {
      error_code ec;
      stream.lowest_layer().cancel(ec);
      stream.lowest_layer().close(ec);
      ioc.restart();
      ioc.run();
      broken = true;
      return Status::Unavailable(std::string(what) + " with " + peer.Describe() + " timed out after " +
                                 std::to_string(timeout_ms) + " ms");
    }
    return Status::OK();
  }

  // Turns a failed TLS or socket operation into a Status that says whose
  // fault it most likely was.
  Status Failed(const error_code& ec, std::string_view what) {
    broken = true;
    if (!verify_error.empty()) {
      return Status::PermissionDenied(
          peer.Describe() + " is not trusted: " + verify_error +
          (is_server ? ". Only certificates issued by this home's CA are accepted: pair it again"
                     : ". Its certificate is not issued by the CA in our credentials: check the address, or pair "
                       "again with this home"));
    }
    std::string m = ec.message();
    if (ec.category() == asio::error::get_ssl_category() &&
        (m.find("alert") != std::string::npos || m.find("certificate") != std::string::npos)) {
      return Status::PermissionDenied(peer.Describe() + " refused our credentials during " + std::string(what) +
                                      " (" + m + "): they are not from its CA or have expired; pair again");
    }
    if (ec == asio::error::eof || ec == ssl::error::stream_truncated || ec == asio::error::connection_reset) {
      if (!is_server && what == "the TLS handshake") {
        return Status::Unavailable(peer.Describe() + " closed the connection during the TLS handshake: it is "
                                   "shedding connections (too many unauthenticated ones at once, from this "
                                   "address or in all) or does not take our certificate; try again shortly, and "
                                   "if it goes on, check the address and pairing");
      }
      return Status::Unavailable(peer.Describe() + " closed the connection during " + std::string(what));
    }
    return Status::Unavailable(std::string(what) + " with " + peer.Describe() + " failed: " + m);
  }

  Status Write(ByteView bytes, int timeout_ms) {
    if (broken) return Status::Unavailable("the connection to " + peer.Describe() + " is closed");
    error_code result = asio::error::would_block;
    asio::async_write(stream, asio::buffer(bytes.data(), bytes.size()),
                      [&](const error_code& ec, size_t) { result = ec; });
    SLINGSHOT_RETURN_IF_ERROR(Run(timeout_ms, "sending"));
    if (result) return Failed(result, "sending");
    return Status::OK();
  }

  Status ReadExact(uint8_t* p, size_t n, int timeout_ms) {
    error_code result = asio::error::would_block;
    asio::async_read(stream, asio::buffer(p, n), [&](const error_code& ec, size_t) { result = ec; });
    SLINGSHOT_RETURN_IF_ERROR(Run(timeout_ms, "receiving"));
    if (result) return Failed(result, "receiving");
    return Status::OK();
  }

  // Refuses a header whose length is over this connection's cap (the
  // stream is then out of step: the connection is broken).
  Status CheckLength(const wire::FrameHeader& h) {
    if (h.length <= max_frame) return Status::OK();
    broken = true;
    return Status::ResourceExhausted(
        peer.Describe() + " announced a frame of " + std::to_string(h.length) + " bytes; " +
        (authorized ? "at most " + std::to_string(max_frame) + " are taken here"
                    : "before it is authorized a peer may send at most " + std::to_string(max_frame)));
  }

  // Charges n more bytes of this connection's buffers to the server's budget.
  Status Charge(size_t n) {
    if (!budget) return Status::OK();
    if (!budget->TryAcquire(n)) {
      broken = true;
      return Status::ResourceExhausted("this server holds " + HumanBytes(budget->used()) + " of frames in flight, " +
                                       "its limit: " + peer.Describe() + " is cut off; try again later");
    }
    charged += n;
    return Status::OK();
  }
  void Uncharge(size_t n) {
    if (!budget || n == 0) return;
    budget->Release(n);
    charged -= n;
  }

  // The payload of h, read piece by piece (the buffer grows as bytes arrive).
  Result<Bytes> ReadPayload(const wire::FrameHeader& h, int timeout_ms) {
    Bytes payload;
    size_t held = 0;
    Status st;
    while (payload.size() < h.length) {
      size_t piece = std::min<size_t>(kReadPiece, h.length - payload.size());
      st = Charge(piece);
      if (!st.ok()) break;
      held += piece;
      size_t at = payload.size();
      payload.resize(at + piece);
      st = ReadExact(payload.data() + at, piece, timeout_ms);
      if (!st.ok()) break;
    }
    Uncharge(held);
    if (!st.ok()) return st;
    return payload;
  }

  void FillPeer() {
    X509* cert = SSL_get0_peer_certificate(stream.native_handle());
    peer.common_name = SubjectEntry(cert, NID_commonName);
    peer.role = ParseRole(SubjectEntry(cert, NID_organizationalUnitName));
    if (cert) {
      BIO* bio = BIO_new(BIO_s_mem());
      if (bio && PEM_write_bio_X509(bio, cert) == 1) {
        char* data = nullptr;
        long n = BIO_get_mem_data(bio, &data);
        peer.cert_pem.assign(data, static_cast<size_t>(n));
      }
      BIO_free(bio);
      auto info = InspectCertificate(peer.cert_pem);
      if (info.ok()) {
        peer.fingerprint = info->fingerprint;
        peer.not_after = info->not_after;
        if (info->role == Role::kClient) {
          auto user = UserOf(*info);
          if (user.ok()) peer.user = *user;  // else none: it is refused where a user is needed
        }
      }
    }
  }

  // --- Duplex: everything below runs on the thread inside Duplex(). ---
  void DuplexFinish(Status s) {
    if (duplex_done) return;
    duplex_done = true;
    duplex_status = std::move(s);
    broken = true;
    error_code ec;
    idle_timer.cancel();
    stream.lowest_layer().close(ec);
  }
  void ArmIdle() {
    idle_timer.expires_after(std::chrono::milliseconds(idle_ms));
    idle_timer.async_wait([this](const error_code& ec) {
      if (ec) return;  // re-armed or cancelled
      DuplexFinish(Status::Unavailable(peer.Describe() + " was silent for " + std::to_string(idle_ms) + " ms"));
    });
  }
  void ReadNextHeader() {
    asio::async_read(stream, asio::buffer(duplex_header), [this](const error_code& ec, size_t) {
      if (ec) return DuplexFinish(duplex_done ? Status::OK() : Failed(ec, "receiving"));
      auto h = wire::DecodeHeader(ByteView(duplex_header.data(), duplex_header.size()));
      if (!h.ok()) return DuplexFinish(h.status().Annotate("frame from " + peer.Describe()));
      if (Status len = CheckLength(*h); !len.ok()) return DuplexFinish(std::move(len));
      duplex_frame = *h;
      duplex_payload.clear();
      ReadNextPiece();
    });
  }
  // Reads the payload of duplex_frame piece by piece, then hands it on.
  void ReadNextPiece() {
    if (duplex_payload.size() == duplex_frame.length) {
      auto m = wire::DecodePayload(duplex_frame, duplex_payload);
      Uncharge(duplex_payload.size());
      Bytes().swap(duplex_payload);
      if (!m.ok()) return DuplexFinish(m.status().Annotate("frame from " + peer.Describe()));
      ArmIdle();
      Status s = (*on_frame)(Frame{duplex_frame.request, std::move(*m)});
      if (!s.ok()) return DuplexFinish(std::move(s));
      return ReadNextHeader();
    }
    size_t piece = std::min<size_t>(kReadPiece, duplex_frame.length - duplex_payload.size());
    if (Status c = Charge(piece); !c.ok()) return DuplexFinish(std::move(c));
    size_t at = duplex_payload.size();
    duplex_payload.resize(at + piece);
    asio::async_read(stream, asio::buffer(duplex_payload.data() + at, piece), [this](const error_code& ec, size_t) {
      if (ec) return DuplexFinish(duplex_done ? Status::OK() : Failed(ec, "receiving"));
      ReadNextPiece();
    });
  }
  void WriteNext() {
    writing = true;
    asio::async_write(stream, asio::buffer(outq.front()), [this](const error_code& ec, size_t) {
      queued_bytes -= outq.front().size();
      if (budget) budget->Release(outq.front().size());
      outq.pop_front();
      if (ec) return DuplexFinish(duplex_done ? Status::OK() : Failed(ec, "sending"));
      if (outq.empty()) {
        writing = false;
      } else {
        WriteNext();
      }
    });
  }

  asio::io_context ioc;
  std::shared_ptr<ssl::context> ctx;
  ssl::stream<tcp::socket> stream;
  PeerInfo peer;
  std::string verify_error;
  bool is_server = false;
  bool broken = false;
  bool hello_pending = false;  // a client's Hello is out, the server's not yet read
  std::atomic<int> fd{-1};
  // Hostile peers (transport.h): this connection's frame cap, the server's
  // budget and pool (unset for a client's own connections).
  uint32_t max_frame = wire::kMaxWirePayload;
  bool authorized = true;
  std::shared_ptr<MemoryBudget> budget;
  size_t charged = 0;  // receive buffers charged to budget
  std::function<Status()> authorize;

  ~Impl() {
    if (!budget) return;
    for (const auto& f : outq) budget->Release(f.size());
    budget->Release(charged);
  }

  // Duplex state (the io thread's own, except queued_bytes).
  static constexpr size_t kMaxQueued = 64u << 20;
  asio::steady_timer idle_timer{ioc};
  int idle_ms = 0;
  const std::function<Status(Frame&&)>* on_frame = nullptr;
  std::array<uint8_t, wire::kHeaderSize> duplex_header{};
  wire::FrameHeader duplex_frame;
  Bytes duplex_payload;
  std::deque<Bytes> outq;
  bool writing = false;
  bool duplex_done = false;
  Status duplex_status;
  std::atomic<size_t> queued_bytes{0};
};

Connection::Connection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Connection::~Connection() {
  error_code ec;
  impl_->stream.lowest_layer().close(ec);
}

Status Connection::Authorize() {
  if (impl_->authorized || !impl_->authorize) return Status::OK();
  return impl_->authorize();
}

const PeerInfo& Connection::peer() const { return impl_->peer; }
bool Connection::broken() const { return impl_->broken; }

Result<Bytes> Connection::ChannelBinding() const {
  // RFC 9266's tls-exporter: a secret both ends of this TLS 1.3 session
  // derive, different for every session.
  static constexpr char kLabel[] = "EXPORTER-Channel-Binding";
  Bytes out(32);
  if (SSL_export_keying_material(impl_->stream.native_handle(), out.data(), out.size(), kLabel, sizeof(kLabel) - 1,
                                 nullptr, 0, 0) != 1) {
    return Status::IOError("TLS channel binding with " + impl_->peer.Describe() + ": " + OpenSslError());
  }
  return out;
}

void Connection::Close() {
  int fd = impl_->fd.load();
  if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

Status Connection::Duplex(const std::function<Status(Frame&&)>& on_frame, int idle_timeout_ms) {
  Impl& i = *impl_;
  if (i.broken) return Status::Unavailable("the connection to " + i.peer.Describe() + " is closed");
  if (i.hello_pending) SLINGSHOT_RETURN_IF_ERROR(AwaitHello(idle_timeout_ms));
  i.on_frame = &on_frame;
  i.idle_ms = idle_timeout_ms;
  i.duplex_done = false;
  i.ioc.restart();
  i.ArmIdle();
  i.ReadNextHeader();
  i.ioc.run();
  i.on_frame = nullptr;
  return i.duplex_status;
}

void Connection::Post(const wire::Message& m) {
  Impl* i = impl_.get();
  Bytes frame = wire::EncodeFrame(0, m);
  size_t n = frame.size();
  if (i->queued_bytes.fetch_add(n) + n > Impl::kMaxQueued) {
    i->queued_bytes -= n;
    asio::post(i->ioc, [i] {
      i->DuplexFinish(Status::Unavailable(i->peer.Describe() + " is not reading: over " +
                                          HumanBytes(Impl::kMaxQueued) + " queued for it"));
    });
    return;
  }
  asio::post(i->ioc, [i, f = std::move(frame)]() mutable {
    if (i->duplex_done) {
      i->queued_bytes -= f.size();
      return;
    }
    // Charged here, on the io thread: a frame still in the io queue when
    // the connection goes was never charged.
    if (i->budget && !i->budget->TryAcquire(f.size())) {
      i->queued_bytes -= f.size();
      return i->DuplexFinish(Status::ResourceExhausted(
          "this server holds " + HumanBytes(i->budget->used()) + " of frames in flight, its limit: " +
          i->peer.Describe() + " is cut off"));
    }
    i->outq.push_back(std::move(f));
    if (!i->writing) i->WriteNext();
  });
}

Result<std::unique_ptr<Connection>> Connection::Connect(const std::string& host, uint16_t port,
                                                        const TlsCredentials& creds,
                                                        const ConnectOptions& options) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto ctx, MakeContext(creds, false, options.verify_server_ca));
  auto impl = std::make_unique<Impl>(std::move(ctx), options.verify_server_ca);
  impl->peer.address = host + ":" + std::to_string(port);
  impl->peer.role = options.expected_role.value_or(Role::kUnknown);
  error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) return Status::Unavailable("cannot resolve " + host + ": " + ec.message());

  error_code result = asio::error::would_block;
  asio::async_connect(impl->stream.lowest_layer(), endpoints,
                      [&](const error_code& e, const tcp::endpoint&) { result = e; });
  SLINGSHOT_RETURN_IF_ERROR(impl->Run(options.timeout_ms, "connecting"));
  if (result) {
    std::string why = "cannot connect to " + impl->peer.address + ": " + result.message() +
                      " (is the service running and the address right?)";
    if (options.refused_is_not_found && result == asio::error::connection_refused) return Status::NotFound(why);
    return Status::Unavailable(why);
  }
  impl->stream.lowest_layer().set_option(tcp::no_delay(true), ec);
  impl->fd = impl->stream.lowest_layer().native_handle();

  result = asio::error::would_block;
  impl->stream.async_handshake(ssl::stream_base::client, [&](const error_code& e) { result = e; });
  SLINGSHOT_RETURN_IF_ERROR(impl->Run(options.timeout_ms, "the TLS handshake"));
  if (result) return impl->Failed(result, "the TLS handshake");
  impl->FillPeer();
  if (!options.server_fingerprint.empty() && impl->peer.fingerprint != options.server_fingerprint) {
    return Status::PermissionDenied(impl->peer.address + " presented certificate " + impl->peer.fingerprint +
                                    ", not the expected " + options.server_fingerprint +
                                    ": another machine answers at that address");
  }
  if (options.expected_role && impl->peer.role != *options.expected_role) {
    return Status::PermissionDenied(impl->peer.Describe() + " is not a " + RoleName(*options.expected_role) +
                                    ": its certificate says role \"" + RoleName(impl->peer.role) + "\"");
  }
  std::unique_ptr<Connection> c(new Connection(std::move(impl)));
  // Hello both ways; in TLS 1.3 the server checks our certificate after our
  // handshake finished, so its refusal shows up here.
  wire::Hello hello;
  hello.software = options.software;
  SLINGSHOT_RETURN_IF_ERROR(c->Send(0, hello, options.timeout_ms));
  c->impl_->hello_pending = true;
  if (options.await_hello) SLINGSHOT_RETURN_IF_ERROR(c->AwaitHello(options.timeout_ms));
  return c;
}

Status Connection::AwaitHello(int timeout_ms) {
  impl_->hello_pending = false;
  auto reply = Expect(0, wire::MessageType::kHello, timeout_ms);
  Status st = reply.status();
  if (st.ok()) {
    const auto& theirs = std::get<wire::Hello>(*reply);
    impl_->peer.software = theirs.software;
    st = theirs.Check(impl_->peer.Describe());
  }
  // A server that refuses us answers Error in place of Hello, and closes.
  if (!st.ok()) {
    impl_->broken = true;
    Close();
  }
  return st;
}

Status Connection::Send(uint32_t request, const wire::Message& m, int timeout_ms) {
  Bytes frame = wire::EncodeFrame(request, m);
  return impl_->Write(frame, timeout_ms);
}

Status Connection::SendRaw(ByteView bytes, int timeout_ms) { return impl_->Write(bytes, timeout_ms); }

Result<Frame> Connection::Receive(int timeout_ms) {
  if (impl_->broken) return Status::Unavailable("the connection to " + impl_->peer.Describe() + " is closed");
  if (impl_->hello_pending) SLINGSHOT_RETURN_IF_ERROR(AwaitHello(timeout_ms));
  uint8_t header[wire::kHeaderSize];
  SLINGSHOT_RETURN_IF_ERROR(impl_->ReadExact(header, sizeof(header), timeout_ms));
  auto h = wire::DecodeHeader(ByteView(header, sizeof(header)));
  if (!h.ok()) {
    impl_->broken = true;  // the stream is out of step: nothing after this can be trusted
    return h.status().Annotate("frame from " + impl_->peer.Describe());
  }
  SLINGSHOT_RETURN_IF_ERROR(impl_->CheckLength(*h));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes payload, impl_->ReadPayload(*h, timeout_ms));
  // A payload that fails to decode leaves the stream in step: the connection
  // stays usable and the caller may answer with an Error.
  SLINGSHOT_ASSIGN_OR_RETURN(wire::Message m, wire::DecodePayload(*h, payload));
  return Frame{h->request, std::move(m)};
}

Result<wire::Message> Connection::Expect(uint32_t request, wire::MessageType type, int timeout_ms) {
  SLINGSHOT_ASSIGN_OR_RETURN(Frame f, Receive(timeout_ms));
  if (auto* e = std::get_if<wire::Error>(&f.message)) return e->ToStatus(impl_->peer.Describe());
  if (f.request != request || wire::TypeOf(f.message) != type) {
    impl_->broken = true;
    Close();
    return Status::Corruption(impl_->peer.Describe() + " sent " + wire::MessageTypeName(wire::TypeOf(f.message)) +
                              " for request " + std::to_string(f.request) + " where " + wire::MessageTypeName(type) +
                              " for request " + std::to_string(request) + " was due");
  }
  return std::move(f.message);
}

// --- Server ---

struct Server::Impl {
  TlsCredentials creds;
  ServerOptions options;
  RequestHandler* handler = nullptr;
  std::shared_ptr<ssl::context> ctx;
  std::shared_ptr<MemoryBudget> budget;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::thread accept_thread;
  uint16_t port = 0;

  struct Live {
    int fd = -1;
    std::thread thread;
    bool done = false;
    std::string ip;           // the peer's address without its port
    uint64_t order = 0;       // accept order: the oldest pending goes first
    bool authorized = false;  // in the authorized pool
    bool evicted = false;     // shut down to make room
    std::string fingerprint;  // its certificate's, once authorized
  };
  mutable Mutex mu;
  std::list<Live> live GUARDED_BY(mu);
  bool stopping GUARDED_BY(mu) = false;
  uint64_t next_order GUARDED_BY(mu) = 0;

  std::atomic<uint64_t> accepted{0}, refused{0}, evicted{0}, bad_frames{0}, requests{0};

  void AcceptNext() {
    acceptor.async_accept([this](const error_code& ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) OnAccept(std::move(s));
      else LogWarning(std::string("accept on port ") + std::to_string(port) + " failed: " + ec.message());
      AcceptNext();
    });
  }

  void ReapDone() REQUIRES(mu) {
    for (auto it = live.begin(); it != live.end();) {
      if (it->done) {
        it->thread.join();
        it = live.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Shuts down the oldest pending connection (of ip, if given) when its pool
  // is at quota. Its thread then fails its next read and ends.
  void EvictOldestPending(const std::string* ip) REQUIRES(mu) {
    Live* oldest = nullptr;
    for (auto& l : live) {
      if (l.authorized || l.evicted || l.done || (ip && l.ip != *ip)) continue;
      if (!oldest || l.order < oldest->order) oldest = &l;
    }
    if (!oldest) return;
    oldest->evicted = true;
    ++evicted;
    if (oldest->fd >= 0) ::shutdown(oldest->fd, SHUT_RDWR);
    LogWarning("closed a pending connection from " + oldest->ip + " to make room: " +
               (ip ? "at most " + std::to_string(options.max_pending_per_address) + " per address"
                   : "at most " + std::to_string(options.max_pending) + " in all") +
               " may be unauthenticated at once");
  }

  size_t CountPending(const std::string* ip) REQUIRES(mu) {
    size_t n = 0;
    for (const auto& l : live) {
      if (!l.authorized && !l.evicted && !l.done && (!ip || l.ip == *ip)) ++n;
    }
    return n;
  }

  void OnAccept(tcp::socket s) {
    error_code ec;
    auto remote = s.remote_endpoint(ec);
    std::string ip = ec ? "unknown" : remote.address().to_string();
    std::string address = ec ? "unknown" : ip + ":" + std::to_string(remote.port());
    bool v6 = !ec && remote.address().is_v6();
    MutexLock lock(&mu);
    ReapDone();
    if (stopping) return;
    if (CountPending(&ip) >= options.max_pending_per_address) EvictOldestPending(&ip);
    if (CountPending(nullptr) >= options.max_pending) EvictOldestPending(nullptr);
    ++accepted;
    int fd = s.release(ec);
    if (ec) return;
    auto it = live.emplace(live.end());
    it->fd = fd;
    it->ip = ip;
    it->order = ++next_order;
    it->thread = std::thread([this, it, fd, address, v6] {
      std::unique_ptr<Connection> c = Adopt(fd, address, v6, &*it);
      if (c) Serve(*c, &*it);
      // Forget the fd before the socket closes: Stop() must never shut
      // down a number the kernel may already have handed to someone else.
      {
        MutexLock l(&mu);
        it->fd = -1;
        it->done = true;
      }
      if (c) c.reset();
      else ::close(fd);
    });
  }

  // Moves entry into the authorized pool, if there is room.
  Status Promote(Connection::Impl& ci, Live* entry) {
    MutexLock l(&mu);
    if (entry->evicted) return Status::Unavailable("the connection was closed to make room");
    size_t total = 0, same = 0;
    for (const auto& x : live) {
      if (!x.authorized || x.done) continue;
      ++total;
      if (x.fingerprint == ci.peer.fingerprint) ++same;
    }
    if (total >= options.max_connections) {
      ++refused;
      return Status::ResourceExhausted("this server already serves " + std::to_string(total) +
                                       " connections, its limit: try again later");
    }
    if (same >= options.max_per_peer) {
      ++refused;
      return Status::ResourceExhausted("certificate " + ci.peer.fingerprint + " already holds " +
                                       std::to_string(same) + " connections here, the most one peer may");
    }
    entry->authorized = true;
    entry->fingerprint = ci.peer.fingerprint;
    ci.authorized = true;
    ci.max_frame = options.max_frame;
    return Status::OK();
  }

  std::unique_ptr<Connection> Adopt(int fd, const std::string& address, bool v6, Live* entry) {
    auto impl = std::make_unique<Connection::Impl>(ctx, options.verify_client_ca);
    impl->peer.address = address;
    error_code ec;
    impl->stream.lowest_layer().assign(v6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) return nullptr;  // the caller closes fd
    impl->fd = fd;
    impl->is_server = true;
    impl->authorized = false;
    impl->max_frame = options.unauthorized_max_frame;
    impl->budget = budget;
    Connection::Impl* ci = impl.get();
    impl->authorize = [this, ci, entry] { return Promote(*ci, entry); };
    impl->stream.lowest_layer().set_option(tcp::no_delay(true), ec);
    return std::unique_ptr<Connection>(new Connection(std::move(impl)));
  }

  // Milliseconds left until deadline (at least 1).
  static int Left(std::chrono::steady_clock::time_point deadline) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(1, ms.count()));
  }

  void Serve(Connection& conn, Live* entry) {
    Connection* c = &conn;
    const std::string address = conn.impl_->peer.address;
    Connection::Impl& ci = *c->impl_;
    // TLS and Hello, together, within the pending deadline.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options.handshake_timeout_ms);
    error_code result = asio::error::would_block;
    ci.stream.async_handshake(ssl::stream_base::server, [&](const error_code& e) { result = e; });
    Status st = ci.Run(Left(deadline), "the TLS handshake");
    if (st.ok() && result) st = ci.Failed(result, "the TLS handshake");
    if (st.ok()) {
      ci.FillPeer();
      if (options.required_role && ci.peer.role != *options.required_role) {
        st = Status::PermissionDenied(ci.peer.Describe() + " has role \"" + RoleName(ci.peer.role) +
                                      "\"; this service serves " + RoleName(*options.required_role) + "s only");
        (void)c->Send(0, wire::Error{st.code(), st.message()}, 1000);
      }
    }
    if (!st.ok()) {
      ++refused;
      LogWarning(std::string("refused ") + address + ": " + st.message());
      return;
    }
    // Hello.
    auto hello = c->Receive(Left(deadline));
    if (!hello.ok() || !std::holds_alternative<wire::Hello>(hello->message)) {
      ++bad_frames;
      LogWarning(std::string(ci.peer.Describe()) + " did not start with Hello: " + (hello.ok() ? std::string(wire::MessageTypeName(wire::TypeOf(hello->message))) : hello.status().message()));
      if (!ci.broken || hello.status().code() == Status::Code::kUnsupported ||
          hello.status().code() == Status::Code::kResourceExhausted) {
        Status why = hello.ok() ? Status::InvalidArgument("the first message must be Hello") : hello.status();
        ci.broken = false;
        (void)c->Send(0, wire::Error{why.code(), why.message()}, 1000);
      }
      return;
    }
    const auto& theirs = std::get<wire::Hello>(hello->message);
    ci.peer.software = theirs.software;
    if (Status v = theirs.Check(ci.peer.Describe()); !v.ok()) {
      ++refused;
      LogWarning("refused " + address + ": " + v.message());
      (void)c->Send(0, wire::Error{v.code(), v.message()}, 1000);
      return;
    }
    // A certificate the CA issued is all the authorization there is.
    if (options.verify_client_ca) {
      if (Status p = Promote(ci, entry); !p.ok()) {
        LogWarning("refused " + ci.peer.Describe() + ": " + p.message());
        (void)c->Send(0, wire::Error{p.code(), p.message()}, 1000);
        return;
      }
    }
    wire::Hello mine;
    mine.software = options.software;
    if (!c->Send(0, mine, Left(deadline)).ok()) return;

    for (;;) {
      int idle = ci.authorized ? options.idle_timeout_ms : std::min(options.idle_timeout_ms, options.unauthorized_idle_ms);
      auto f = c->Receive(idle);
      if (!f.ok()) {
        Status::Code code = f.status().code();
        if (code == Status::Code::kUnavailable) return;  // closed, reset or idle
        ++bad_frames;
        LogWarning(std::string("bad frame from ") + ci.peer.Describe() + ": " + f.status().message());
        bool was_broken = ci.broken;
        ci.broken = false;  // the socket is still open: try to say why
        (void)c->Send(0, wire::Error{code, f.status().message()}, 1000);
        if (was_broken) return;
        continue;
      }
      ++requests;
      Status hs = handler->Handle(*c, f->request, std::move(f->message));
      if (!hs.ok()) {
        if (ci.broken) return;
        if (!c->Send(f->request, wire::Error{hs.code(), hs.message()}).ok()) return;
      }
      if (ci.broken) return;
    }
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { Stop(); }

Result<std::unique_ptr<Server>> Server::Start(const TlsCredentials& creds, const ServerOptions& options,
                                              RequestHandler* handler) {
  auto impl = std::make_unique<Impl>();
  impl->creds = creds;
  impl->options = options;
  impl->handler = handler;
  impl->budget = std::make_shared<MemoryBudget>(options.memory_budget);
  SLINGSHOT_ASSIGN_OR_RETURN(impl->ctx, MakeContext(creds, true, options.verify_client_ca));
  error_code ec;
  auto address = asio::ip::make_address(options.host, ec);
  if (ec) return Status::InvalidArgument("listen address \"" + options.host + "\" is not an IP address");
  tcp::endpoint ep(address, options.port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::IOError("cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " +
                           ec.message());
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->AcceptNext();
  Impl* raw = impl.get();
  impl->accept_thread = std::thread([raw] { raw->ioc.run(); });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

uint16_t Server::port() const { return impl_->port; }

void Server::Stop() {
  if (!impl_->accept_thread.joinable()) return;
  asio::post(impl_->ioc, [this] {
    error_code ec;
    impl_->acceptor.close(ec);
  });
  impl_->accept_thread.join();
  {
    MutexLock lock(&impl_->mu);
    impl_->stopping = true;
    for (auto& l : impl_->live) {
      if (l.fd >= 0) ::shutdown(l.fd, SHUT_RDWR);
    }
  }
  // Threads finish on their own once their sockets are shut down; each
  // marks its entry done under the lock before it exits, so an entry is
  // removed only after its thread has been joined.
  for (;;) {
    std::thread t;
    {
      MutexLock lock(&impl_->mu);
      if (impl_->live.empty()) break;
      t = std::move(impl_->live.front().thread);
    }
    if (t.joinable()) t.join();
    MutexLock lock(&impl_->mu);
    impl_->live.pop_front();
  }
}

ServerStats Server::stats() const {
  ServerStats s;
  s.accepted = impl_->accepted;
  s.refused = impl_->refused;
  s.bad_frames = impl_->bad_frames;
  s.requests = impl_->requests;
  s.evicted = impl_->evicted;
  s.memory_used = impl_->budget->used();
  MutexLock lock(&impl_->mu);
  for (const auto& l : impl_->live) {
    if (l.done || l.evicted) continue;
    ++(l.authorized ? s.authorized : s.pending);
  }
  return s;
}

}  // namespace slingshot
