// The proxy's control socket (a unix socket in the client's state
// directory, mode 0600): how `slingshot-client use`, `leave` and `status`
// talk to a running proxy.
//
// One request per connection: a single JSON object on one line,
//   {"status":{}}
//   {"use":{"host":H,"port":P,"fingerprint":FP,"stick":DIR}}   ("" = none)
//   {"leave":{"replica":NAME}}
// answered by JSON objects, one per line, the last of which ends it:
//   {"note":TEXT}            a line for the user
//   {"progress":{...}}       an instantiation's progress (use)
//   {"ready":{...}}          the new replica caught up (use)
//   {"status":{...}}         the proxy's state (status)
//   {"ok":true} | {"error":{"code":C,"message":M}}
// Lines are at most kMaxLine bytes; anything else is refused with a message.
#ifndef SLINGSHOT_CLIENT_CONTROL_H_
#define SLINGSHOT_CLIENT_CONTROL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "slingshot/base/status.h"
#include "slingshot/replica/replica_set.h"

namespace slingshot::control {

constexpr size_t kMaxLine = 64 << 10;

struct StatusRequest {};
struct UseRequest {
  std::string host;
  uint16_t port = 0;
  std::string fingerprint;  // "" = not pinned
  std::string stick;        // "" = none; any path, spaces and all
};
struct LeaveRequest {
  std::string replica;
};
using Request = std::variant<StatusRequest, UseRequest, LeaveRequest>;

struct Note {
  std::string text;
};
struct Progress {
  std::string phase;  // the agent's (wire::Progress)
  uint64_t done = 0, total = 0;
  uint64_t from_cache = 0, from_stick = 0, from_home = 0;
  int64_t elapsed_ms = 0;
};
struct Ready {
  std::string replica;
  uint64_t from_seq = 0;
  int64_t elapsed_ms = 0;
};
struct ProxyStatus {
  std::string service;
  uint64_t last_seq = 0, truncated_seq = 0;
  std::vector<ReplicaView> replicas;
  uint16_t vnc_port = 0;
  uint64_t switches = 0;
  // Why the proxy takes no more input ("" while it does): the service was
  // taken over by another device, or the home's state does not match the log.
  std::string stopped;
  // Non-empty while the event log refuses inputs (a full disk, say): why.
  std::string refusing;
};
struct Done {
  Status status;
};
using Event = std::variant<Note, Progress, Ready, ProxyStatus, Done>;

std::string Encode(const Request& r);
Result<Request> DecodeRequest(std::string_view line);
std::string Encode(const Event& e);
Result<Event> DecodeEvent(std::string_view line);

// `slingshot-client status`'s text for s (one line for the proxy, one per
// replica).
std::vector<std::string> StatusLines(const ProxyStatus& s);

}  // namespace slingshot::control

#endif  // SLINGSHOT_CLIENT_CONTROL_H_
