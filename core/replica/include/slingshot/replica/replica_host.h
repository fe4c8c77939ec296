// ReplicaHost: the replica side of a replica session (DESIGN.md §5 "Run"),
// shared by the home (its primary) and the agent (a surrogate's replica).
//
// It owns the ServiceAdapter to the VM's service and serves one attached
// client at a time over a duplex Connection:
//   client -> Attach            host -> Attached{size, consumed seq}, then a
//                                        full Screen
//   client -> Input{seq}...      applied in seq order (overlaps ignored)
//   host -> Consumed{seq}        after each barrier, and every 500 ms as a
//                                heartbeat (the client drops a silent replica)
//   host -> Screen               each update of the service's screen
//   client -> Repaint            host -> a full Screen from its copy
//   client -> Leave              the client is done with this replica
//   host -> Checkpointed         (home) a published checkpoint covers <= seq
// A second Attach replaces the first client's session (a restarted proxy of
// the same device; the home decides who may attach): the first is sent an
// Error saying so before it is closed, so a proxy that still runs stops
// instead of attaching again. HandOver() asks the attached client to finish
// and leave (another device takes over).
//
// Checkpoints (home): Quiesce() holds new inputs, waits for the barrier and
// closes the service connections cleanly; Resume() reconnects and applies
// what was held. The client sees only a replica that lags for a moment.
//
// Thread-safety: all methods may be called from any thread; Serve blocks
// the calling thread (a server connection thread) for the session's life.
#ifndef SLINGSHOT_REPLICA_REPLICA_HOST_H_
#define SLINGSHOT_REPLICA_REPLICA_HOST_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "slingshot/base/mutex.h"
#include "slingshot/service/service_adapter.h"
#include "slingshot/net/transport.h"

namespace slingshot {

class ReplicaHost {
 public:
  // replica names this copy to clients ("home", or the surrogate's name).
  ReplicaHost(std::string service, std::string service_type, std::string replica);
  ~ReplicaHost();
  ReplicaHost(const ReplicaHost&) = delete;
  ReplicaHost& operator=(const ReplicaHost&) = delete;

  // Connects to the service (retrying until timeout_ms while the VM boots).
  // consumed_seq: the last input already in the VM's state.
  Status Connect(const Endpoint& ep, uint64_t consumed_seq, int timeout_ms);

  // Serves c (which sent `Attach`) until the client leaves, is replaced,
  // or Shutdown(). Returns OK if the client said Leave (it is done with
  // this replica), else why the session ended.
  Status Serve(Connection& c);

  // For a checkpoint: returns the seq the VM's state covers.
  Result<uint64_t> Quiesce(int timeout_ms);
  Status Resume(const Endpoint& ep, int timeout_ms);

  // Applies one input (what an attached client's Input frames do): in seq
  // order, overlaps ignored; held during a checkpoint and applied after.
  Status Apply(wire::Input in);

  // Sends the attached client HandOver{device} and waits up to timeout_ms
  // for it to send what it holds and leave; then closes its session. True
  // if it left on its own (every input it sent was applied).
  bool HandOver(const std::string& device, int timeout_ms);

  // Sends m to the attached client, if any.
  void Broadcast(const wire::Message& m);
  // Called (once) if the service connection fails outside a checkpoint.
  void OnLost(std::function<void(const Status&)> f);

  uint64_t consumed() const;
  uint64_t applied() const;
  bool attached() const;
  std::string client() const;  // the attached client's name, or ""
  bool stopped() const;        // Shutdown() was called
  // Ends the session and closes the service connections.
  void Shutdown();

 private:
  ServiceCallbacks Callbacks();
  void Heartbeat();


  const std::string service_, type_, replica_;
  Mutex apply_mu_ ACQUIRED_BEFORE(mu_);  // orders inputs into the adapter; held by Quiesce/Resume
  mutable Mutex mu_;
  CondVar cv_;
  std::unique_ptr<ServiceAdapter> adapter_ GUARDED_BY(mu_);
  uint16_t width_ GUARDED_BY(mu_) = 0;
  uint16_t height_ GUARDED_BY(mu_) = 0;
  uint64_t base_seq_ GUARDED_BY(mu_) = 0;  // consumed when the adapter is closed
  bool quiesced_ GUARDED_BY(mu_) = false;
  std::vector<wire::Input> held_ GUARDED_BY(mu_);
  Connection* session_ GUARDED_BY(mu_) = nullptr;
  uint64_t session_id_ GUARDED_BY(mu_) = 0;
  std::function<void(const Status&)> on_lost_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread heartbeat_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_REPLICA_HOST_H_
