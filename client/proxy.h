// The client proxy (`slingshot-client proxy`, DESIGN.md §5 "Run"): a VNC
// endpoint for any stock viewer, in front of every replica of one service.
// It wires three engine parts (core/replica) to the network:
// - InputSequencer: every input the viewer sends (key, pointer, cut text)
//   gets the next seq and is made durable in the event log before it is
//   sent; inputs followed by a key event already in the viewer's socket
//   share the next one's fdatasync (a press and its release cost one).
// - ReplicaSet: each replica is replayed the log from the seq it attached
//   at, then gets every input; output comes from the leader, and the whole
//   screen is repainted from a new leader (Framebuffer keeps the copy the
//   viewer sees).
// - A replica is dropped when its connection fails or it is silent for
//   3 s (replicas send a heartbeat every 500 ms). A dropped surrogate is
//   attached to again (its agent keeps it a while for this), with backoff,
//   until its agent says it is gone or reattach_ms runs out; it is then
//   replayed what it missed. Only `leave` (or the agent) ends it.
// - When the home reports a published checkpoint, the log is truncated up
//   to its seq (never past the seq of a replica still being instantiated).
// - The home decides which device holds the service (one at a time). A
//   proxy that is refused (another device holds it, or the user does not
//   own it), replaced, handed over (another device took over: it first
//   lets the home consume all it logged) or whose log no longer matches the
//   home's replica stops taking input: keys are no longer acknowledged,
//   viewers are disconnected and see the reason as the desktop's name when
//   they connect again (view-only), and `status` and the log say why. With
//   take_over, the proxy takes the service from the device that holds it
//   and starts its log after the home's hand-over checkpoint.
// - The home is reconnected forever, with backoff; surrogates are added by
//   `slingshot-client use` through the proxy's control socket, and left
//   with `slingshot-client leave`.
#ifndef SLINGSHOT_CLIENT_PROXY_H_
#define SLINGSHOT_CLIENT_PROXY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "control.h"
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
  bool take_over = false;  // take the service over from another device of the user
  int silent_ms = 3000;
  int reattach_ms = 120000;  // how long a dropped surrogate is tried again
};

class Proxy {
 public:
  static Result<std::unique_ptr<Proxy>> Start(ProxyOptions options);
  ~Proxy();
  void Stop();
  control::ProxyStatus status() const;
  uint16_t vnc_port() const;

  // Instantiates a replica on the agent at where.host:port (pinned by
  // fingerprint if given) with a fresh capability from the home; notes and
  // progress go to report as they come, then Ready. Returns when the
  // replica has caught up.
  Status Use(const control::UseRequest& where, const std::function<void(const control::Event&)>& report);

  // Ends the session with the surrogate replica called name, telling its
  // agent to destroy it; typing goes on with the others. NotFound if there
  // is no such replica; home cannot be left.
  Status Leave(const std::string& name);

  struct Impl;

 private:
  explicit Proxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_CLIENT_PROXY_H_
