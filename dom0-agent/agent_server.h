// The surrogate daemon (`slingshot-agent run`, DESIGN.md §5 "Instantiate a
// replica", §6): makes replicas for clients of any home and keeps nothing.
//
// A client connects over TLS (the agent accepts a certificate from any
// issuer: it belongs to no home) and sends Instantiate{service, home,
// the home's CA and manifest key, a capability}. The agent:
//   1. checks the capability: issued by that CA, role "surrogate", not
//      expired, scoped to this service and to the client on this connection
//      (whose own certificate must come from the same CA), never used here
//      before (a replayed capability is refused);
//   2. connects to the home with the capability (the home checks it too:
//      a forged one fails there) and fetches the signed manifest, refusing
//      it unless the home's manifest key signed it;
//   3. fetches memory, kernel and initrd through cache -> stick -> home,
//      reporting Progress, and restores the VM; serves its disk over NBD,
//      fetched on demand with the working set prefetched;
//   4. answers Attached{consumed = the manifest's seq}; the client replays
//      its log from there, and the session runs (ReplicaHost) on this same
//      connection, so the replica's service is reachable by this client
//      only.
// A session that ends without the client's Leave (the link broke, or the
// client took a stall for a death) does not end the replica at once: for
// reattach_after it waits, and the same client (a certificate from the
// same CA with the same name) may send Attach{service} on a new connection
// to take it up again from what it has consumed. The replica is destroyed
// when the client leaves, when that wait runs out, when the capability
// expires, when its VM dies, or when the agent stops. The cache directory is wiped at start;
// capabilities and keys are held in memory only.
#ifndef SLINGSHOT_DOM0_AGENT_AGENT_SERVER_H_
#define SLINGSHOT_DOM0_AGENT_AGENT_SERVER_H_

#include <chrono>
#include <memory>
#include <string>

#include "slingshot/base/status.h"
#include "slingshot/replica/admission.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot {

struct AgentOptions {
  std::string name = "surrogate";   // shown to clients
  std::string listen_host = "0.0.0.0";
  uint16_t listen_port = 7391;
  std::string cache_dir;            // wiped at start
  uint64_t cache_budget_bytes = 4ull << 30;
  // Nothing of a replica is readable on this machine's disk: the cache's
  // values and each replica's disk overlay are encrypted under a key made
  // at start that lives only in the agent's memory, and the boot files go
  // to a private directory under memory_dir (a tmpfs). "" : beside the
  // overlay, on the disk.
  std::string memory_dir = "/dev/shm";
  // What this surrogate may host (admission.h): replica slots, memory for
  // replicas (0: the host's free memory at start less the reserve), and
  // the reserve the host keeps.
  AdmissionOptions admission;
  // Memory a replica takes beyond its guest's (the VM process or domain).
  uint64_t replica_overhead_mib = 64;
  // Boot a service that keeps its state on its disk (Manifest::
  // state_on_disk) from the checkpoint's disk even when its memory image
  // would restore here: no memory image crosses the WAN, at the price of
  // the guest's start-up. Such services are booted anyway on a hypervisor
  // that cannot restore their image.
  bool prefer_boot = false;
  // A replica whose RAM is served on demand (QEMU) restores before its RAM
  // has arrived (false: fetched whole first), and sends its home the order
  // it first read RAM in this long after it is ready (or when its session
  // ends, if sooner), for the next replica to prefetch first.
  bool lazy_memory = true;
  std::chrono::seconds working_set_after{30};
  // The RAM the prefetch has goes into the page cache before the guest
  // touches it: no round trip per first touch, but those touches are not
  // seen, so such a replica sends no working set (the home's own record
  // stands: ram_rehearsal.h).
  bool ram_page_cache = true;
  // How long a replica whose session broke waits for its client to attach
  // again (0: destroyed at once).
  std::chrono::seconds reattach_after{60};
  HypervisorOptions hypervisor;
};

class AgentServer {
 public:
  static Result<std::unique_ptr<AgentServer>> Start(AgentOptions options);
  ~AgentServer();
  uint16_t port() const;
  // The fingerprint of the agent's (ephemeral, self-signed) certificate:
  // what a client may pin, and what DNS-SD advertises.
  std::string fingerprint() const;
  void Stop();

  struct Impl;

 private:
  explicit AgentServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_DOM0_AGENT_AGENT_SERVER_H_
