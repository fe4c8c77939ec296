// Transport: authenticated streams of wire frames (DESIGN.md §3 `Transport`,
// §6 Trust) on Boost.Asio and OpenSSL.
//
// - TLS 1.3 only. Both sides present a certificate and verify the other's
//   against the one CA in their credentials (the home's); no system roots.
//   A server may also require a role (the certificate's OU).
// - After the handshake the client sends Hello and the server answers Hello.
// - Every blocking call has a deadline; a call that misses it closes the
//   connection (a TLS stream cannot resume after a cancelled operation).
// - Errors say what failed and what to do: an untrusted peer names the
//   verification failure (e.g. "certificate has expired") and points at
//   pairing; a version mismatch names both versions.
//
// A Connection is used by one thread at a time. A Server runs one thread per
// connection (bounded) and hands every request to its Handler.
//
// Hostile peers (DESIGN.md §6): a frame's buffer grows with the bytes that
// arrive, never from its length field alone, and a server bounds the bytes
// all its connections hold (frames being received and frames queued for
// sending) with one budget. A server's connections are in one of two pools:
//   pending     TLS, Hello, and (where the handler decides who is trusted)
//               everything up to Connection::Authorize: a short deadline,
//               frames of at most unauthorized_max_frame bytes, at most
//               max_pending of them and max_pending_per_address from one
//               address; a newcomer over either quota evicts the oldest
//               pending connection (of its address first), so strangers
//               that hold connections open cannot lock anyone out for long.
//   authorized  a certificate the CA issued (verify_client_ca) or a handler
//               that called Authorize(): at most max_connections, at most
//               max_per_peer per certificate; frames up to max_frame. A peer
//               refused for lack of room is told why in place of Hello.
#ifndef SLINGSHOT_NET_TRANSPORT_H_
#define SLINGSHOT_NET_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "slingshot/base/status.h"
#include "slingshot/net/tls.h"
#include "slingshot/net/wire.h"

namespace slingshot {

struct PeerInfo {
  std::string address;      // "127.0.0.1:40312"
  std::string common_name;  // from the verified certificate
  Role role = Role::kUnknown;
  std::string user;         // a client certificate's user (capability.h), else ""
  std::string software;     // from its Hello
  std::string cert_pem;     // its certificate (for checks of its own, in open mode)
  std::string fingerprint;  // InspectCertificate's fingerprint of it
  int64_t not_after = 0;    // its expiry (unix seconds)
  std::string Describe() const;  // "client alice (127.0.0.1:40312)"
};

struct Frame {
  uint32_t request = 0;
  wire::Message message;
};

struct ConnectOptions {
  std::optional<Role> expected_role;  // refuse a server whose certificate has another role (unset: any)
  int timeout_ms = 10000;     // connect + handshake + hello
  std::string software = "slingshot";
  // How the server is trusted. By default its certificate must chain to the
  // CA in our credentials. With verify_server_ca off (a surrogate, which
  // belongs to no home) any certificate is accepted, and if
  // server_fingerprint is set it must have that fingerprint.
  bool verify_server_ca = true;
  std::string server_fingerprint;
  // A refused TCP connection (the host is up and nothing listens there) is
  // NotFound instead of Unavailable: for a caller to whom that is final.
  bool refused_is_not_found = false;
  // Connect returns once the server's Hello has come (our credentials were
  // accepted). Without: once ours is sent, so that a first request follows
  // it at once and the server's Hello is read (and checked) before the
  // first reply. A round trip less; but a refusal then fails the first
  // request, and its reason may be lost when the server's close overtakes
  // it ("the connection is closed"): for callers whose credentials were
  // just issued or were accepted before.
  bool await_hello = true;
};

class Connection {
 public:
  static Result<std::unique_ptr<Connection>> Connect(const std::string& host, uint16_t port,
                                                     const TlsCredentials& creds,
                                                     const ConnectOptions& options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Status Send(uint32_t request, const wire::Message& m, int timeout_ms = 30000);
  // Writes bytes as they are (tests: malformed frames).
  Status SendRaw(ByteView bytes, int timeout_ms = 30000);
  // The next frame. An Error message is returned as a frame, not a Status;
  // a Status means the connection failed (and is now closed).
  Result<Frame> Receive(int timeout_ms = 30000);
  // Receives the reply to request; an Error reply becomes its Status.
  Result<wire::Message> Expect(uint32_t request, wire::MessageType type, int timeout_ms = 30000);
  // Closes the socket; blocked calls on other threads return an error.
  void Close();

  // Full duplex (replica sessions): reads frames as they arrive and hands
  // each to on_frame, on this thread, while frames given to Post() are
  // written in between. Returns when on_frame returns an error (that
  // error), the peer closes or breaks the connection (Unavailable), or
  // nothing arrives for idle_timeout_ms (Unavailable, "silent"). Send and
  // Receive must not be used while it runs; on_frame must not block.
  Status Duplex(const std::function<Status(Frame&&)>& on_frame, int idle_timeout_ms);
  // Queues a frame for Duplex to send; any thread, also before Duplex
  // starts. A peer that lets more than 64 MiB pile up unread is cut off.
  void Post(const wire::Message& m);

  // Moves a server connection from the pending pool to the authorized one
  // (a handler that checked the peer itself: the agent, after a valid
  // capability) and lifts its frame cap. ResourceExhausted, saying why, when
  // the authorized pool has no room. OK for a client connection.
  Status Authorize();

  const PeerInfo& peer() const;
  bool broken() const;
  // 32 bytes that both ends of this TLS session, and no one else, can
  // derive (RFC 9266 tls-exporter): binds a proof to this session.
  Result<Bytes> ChannelBinding() const;

  struct Impl;

 private:
  explicit Connection(std::unique_ptr<Impl> impl);
  // Reads and checks the server's Hello (ConnectOptions::await_hello).
  Status AwaitHello(int timeout_ms);
  friend class Server;
  std::unique_ptr<Impl> impl_;
};

// Serves one kind of request. Handle may send any number of frames on c and
// returns an error to have the server answer with an Error frame (the
// connection stays open unless it broke).
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  virtual Status Handle(Connection& c, uint32_t request, wire::Message&& m) = 0;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;                // 0: pick a free port
  std::optional<Role> required_role;  // unset: any certificate from the CA
  // Off: accept a client certificate from any issuer (a surrogate serves
  // clients of every home); the handler checks PeerInfo::cert_pem itself.
  bool verify_client_ca = true;
  int handshake_timeout_ms = 5000;  // TLS and Hello, from the accept
  int idle_timeout_ms = 600000;     // an authorized connection silent this long is closed
  int unauthorized_idle_ms = 10000; // a pending one, between frames
  size_t max_connections = 64;      // authorized
  size_t max_per_peer = 16;         // authorized, per certificate
  size_t max_pending = 32;
  size_t max_pending_per_address = 8;
  uint32_t max_frame = 1u << 20;              // authorized peers' requests (payload bytes)
  uint32_t unauthorized_max_frame = 16u << 10;
  uint64_t memory_budget = 256ull << 20;      // all connections' frames in flight
  std::string software = "slingshot";
};

struct ServerStats {
  uint64_t accepted = 0;
  uint64_t refused = 0;     // TLS, role or room failures
  uint64_t evicted = 0;     // pending connections closed to make room
  uint64_t bad_frames = 0;  // malformed, oversized or wrong-version frames
  uint64_t requests = 0;
  uint64_t pending = 0;     // now
  uint64_t authorized = 0;  // now
  uint64_t memory_used = 0; // now, of memory_budget
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> Start(const TlsCredentials& creds, const ServerOptions& options,
                                               RequestHandler* handler);
  ~Server();  // Stop()
  uint16_t port() const;
  void Stop();
  ServerStats stats() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_NET_TRANSPORT_H_
