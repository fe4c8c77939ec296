// ServiceAdapter (DESIGN.md §3): what a replica host needs to know about the
// service inside a replica VM. It connects to the service, says which client
// messages are logged inputs and how to check one, replays inputs in seq
// order, and knows when the service has consumed every input sent (the
// barrier). It also watches the service's screen and hands each update on.
//
// Adapters are found by service type (the manifest's service_type) in a
// registry: "rfb" (RfbAdapter in rfb.cc, for services that are remote
// desktops) is built in; tests register fakes beside it.
//
// RfbAdapter opens two shared RFB sessions to the VM:
//   - the output session keeps one incremental update request outstanding
//     for the whole screen and passes every update on; it also keeps a copy
//     of the screen, so a client that switches to this replica gets a full
//     repaint without a round trip to the VM;
//   - the input session replays inputs (each logged input is one RFB client
//     message, forwarded byte for byte) and measures consumption: it keeps
//     at most one non-incremental update request for one pixel outstanding,
//     sent after the last input so far. RFB servers handle a session's
//     messages in order and answer every non-incremental request, so when
//     that reply arrives every input sent before the request has been
//     handled. One request at a time makes the reply unambiguous.
// This holds for libvncserver-based services (the notepad guest, x11vnc);
// RFB has no other portable ping.
//
// Thread-safety: Apply, Barrier, FullScreen and the accessors may be called
// from any thread. Callbacks run on the adapter's reader threads and must
// not call Close().
#ifndef SLINGSHOT_SERVICE_SERVICE_ADAPTER_H_
#define SLINGSHOT_SERVICE_SERVICE_ADAPTER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "slingshot/base/endpoint.h"
#include "slingshot/base/status.h"
#include "slingshot/net/wire.h"

namespace slingshot {

struct ServiceCallbacks {
  std::function<void(wire::Screen&&)> on_screen;    // an update, in order
  std::function<void(uint64_t seq)> on_consumed;    // inputs <= seq are consumed
  std::function<void(const Status& why)> on_lost;   // the service connection failed
};

class ServiceAdapter {
 public:
  virtual ~ServiceAdapter() = default;

  // Connects to the service of `type` (a registered ServiceType) at ep.
  // consumed_seq is the last input already in the service's state (a
  // checkpoint's last_seq); the next Apply must carry consumed_seq + 1.
  // Unsupported for a type nobody registered.
  static Result<std::unique_ptr<ServiceAdapter>> Open(const std::string& type, const Endpoint& ep,
                                                      uint64_t consumed_seq, ServiceCallbacks callbacks,
                                                      int timeout_ms);
  // Checks that payload is a well-formed input of this type for `type`.
  static Status CheckInput(const std::string& type, uint16_t input_type, ByteView payload);

  // Sends one input to the service. Inputs at or below applied() are
  // ignored (a replay that overlaps); a gap is InvalidArgument.
  virtual Status Apply(const wire::Input& in) = 0;
  virtual uint64_t applied() const = 0;
  virtual uint64_t consumed() const = 0;
  // Waits until consumed() == applied().
  virtual Status Barrier(int timeout_ms) = 0;
  // The whole screen as this adapter last saw it.
  virtual wire::Screen FullScreen() const = 0;
  virtual uint16_t width() const = 0;
  virtual uint16_t height() const = 0;
  // Ends both sessions cleanly (the service sees ordinary disconnects), so
  // a checkpoint taken next holds no half-open connection. Idempotent.
  virtual void Close() = 0;
};

// A kind of service: how to open an adapter to one and check its inputs.
struct ServiceType {
  std::string name;  // the manifest's service_type, e.g. "rfb"
  std::function<Result<std::unique_ptr<ServiceAdapter>>(const Endpoint& ep, uint64_t consumed_seq,
                                                        ServiceCallbacks callbacks, int timeout_ms)>
      open;
  std::function<Status(uint16_t input_type, ByteView payload)> check_input;
};

// Adds a type to the process's registry. AlreadyExists if the name is
// taken (rfb always is), InvalidArgument if a function is missing.
// Thread-safe.
Status RegisterServiceType(ServiceType type);
// The registered type names, sorted (for messages and `--help`).
std::vector<std::string> ServiceTypeNames();
// Whether a service of this type can be run here.
bool IsServiceType(const std::string& name);

// The built-in remote-desktop type (rfb.cc).
ServiceType RfbServiceType();

}  // namespace slingshot

#endif  // SLINGSHOT_SERVICE_SERVICE_ADAPTER_H_
