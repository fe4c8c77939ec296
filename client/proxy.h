// The client proxy (`slingshot-client proxy`, DESIGN.md §5 "Run"): a VNC
// endpoint for any stock viewer, in front of every replica of one service.
//
// - Every input the viewer sends (key, pointer, cut text) gets the next seq
//   and is appended to the durable event log before it is sent; then it
//   goes to every live replica. Inputs followed by a key event already in
//   the viewer's socket share the next one's fdatasync (a press and its
//   release cost one).
// - A replica that attaches reports the seq its state covers; the proxy
//   replays the log from there, and the replica joins the live set once it
//   has been sent everything.
// - Output comes from the leader: among the replicas that have consumed
//   every input, the one that consumes inputs fastest (a moving average of
//   input-to-consumed time, with hysteresis). When the leader dies or
//   lags, the proxy switches and repaints the whole screen from the new
//   leader.
// - A replica is dropped when its connection fails or it is silent for
//   3 s (replicas send a heartbeat every 500 ms).
// - When the home reports a published checkpoint, the log is truncated up
//   to its seq (never past the seq of a replica still being instantiated).
// - The home is reconnected forever, with backoff; surrogates are added by
//   `slingshot-client use` through the proxy's control socket, and left
//   with `slingshot-client leave`.
#ifndef SLINGSHOT_CLIENT_PROXY_H_
#define SLINGSHOT_CLIENT_PROXY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "slingshot/base/keys.h"
#include "slingshot/base/status.h"
#include "slingshot/net/tls.h"

namespace slingshot {

struct ProxyOptions {
  std::string service;
  std::string home_host;
  uint16_t home_port = 7390;
  TlsCredentials creds;   // the client's, from pairing
  PublicKey manifest_key;  // the home's
  std::string log_dir;
  std::string control_socket;  // unix socket for `use` and `status`
  std::string vnc_host = "127.0.0.1";
  uint16_t vnc_port = 5900;  // 0: pick one (printed)
  bool sync_every_input = true;
  int silent_ms = 3000;
};

struct ReplicaView {
  std::string name;
  uint64_t consumed = 0;
  bool live = false;    // replay done
  bool leader = false;
  double latency_ms = 0;  // moving average, input sent -> consumed
};

struct ProxyStatus {
  std::string service;
  uint64_t last_seq = 0, truncated_seq = 0;
  std::vector<ReplicaView> replicas;
  uint16_t vnc_port = 0;
  uint64_t switches = 0;
};

class Proxy {
 public:
  static Result<std::unique_ptr<Proxy>> Start(ProxyOptions options);
  ~Proxy();
  void Stop();
  ProxyStatus status() const;
  uint16_t vnc_port() const;

  // Instantiates a replica on the agent at host:port (pinned by fingerprint
  // if given) with a fresh capability from the home; progress lines go to
  // report as they come. Returns when the replica is attached.
  Status Use(const std::string& host, uint16_t port, const std::string& fingerprint, const std::string& stick_dir,
             const std::function<void(const std::string&)>& report);

  // Ends the session with the surrogate replica called name: its agent
  // destroys it; typing goes on with the others. NotFound if there is no
  // such replica; home cannot be left.
  Status Leave(const std::string& name);

  struct Impl;

 private:
  explicit Proxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_CLIENT_PROXY_H_
