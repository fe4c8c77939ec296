// ReplicaNetwork: one replica's own network on a Linux host (a Xen dom0),
// so that every replica can keep the guest address its memory image holds
// (10.0.2.15) and none can reach another, the host or the LAN.
//
//   guest NIC (Xen vif) --- bridge PREFIXbID --- veth PREFIXvID
//                           (no address,          |
//                            no IPv6)             eth0 10.0.2.2/24 in the
//                                                 namespace PREFIX-ID
//
// - The bridge lives in the host's namespace because Xen's vif hotplug
//   script attaches the vif there; it carries no address, so nothing the
//   guest sends reaches the host's own stack.
// - The namespace holds the gateway address and nothing else: no routes
//   out, no forwarding, no listening socket. The host reaches the guest
//   through Forward(): a listener on 127.0.0.1 whose connections are
//   relayed to sockets made inside the namespace.
// - Another replica is on another bridge (another link), so it is not even
//   on the same Ethernet.
//
// Setup and teardown use iproute2 (`ip`); its output goes to log_path.
// Needs CAP_NET_ADMIN (dom0's root).
//
// Thread-safety: Forward() may be called from several threads.
#ifndef SLINGSHOT_VM_REPLICA_NETWORK_H_
#define SLINGSHOT_VM_REPLICA_NETWORK_H_

#include <cstdint>
#include <memory>
#include <string>

#include "slingshot/base/endpoint.h"
#include "slingshot/base/status.h"

namespace slingshot {

struct ReplicaNetworkOptions {
  // Names the bridge (PREFIX "b" ID), the host's veth end (PREFIX "v" ID)
  // and the namespace (PREFIX "-" ID). At most 6 characters, so that
  // interface names fit the kernel's 15.
  std::string prefix = "slrep";
  uint32_t id = 0;
  // The gateway address inside, as the guest expects it.
  std::string gateway = "10.0.2.2/24";
  // Where `ip`'s output goes ("" = discarded).
  std::string log_path;
  // Connections relayed at once per network; more are closed at accept.
  int max_connections = 32;
};

class ReplicaNetwork {
 public:
  // Makes the bridge, the namespace and the veth pair. On failure nothing
  // is left behind and the error names the command and the log.
  static Result<std::unique_ptr<ReplicaNetwork>> Create(const ReplicaNetworkOptions& options);
  // Closes the forwarders and removes the bridge, veth and namespace.
  ~ReplicaNetwork();
  ReplicaNetwork(const ReplicaNetwork&) = delete;
  ReplicaNetwork& operator=(const ReplicaNetwork&) = delete;

  const std::string& bridge() const;     // for the guest's NIC
  const std::string& netns() const;      // name under /run/netns
  const std::string& host_veth() const;

  // A loopback endpoint on this host whose connections reach
  // guest_address:guest_port inside the replica's network. The same
  // endpoint for the same target every time.
  Result<Endpoint> Forward(const std::string& guest_address, uint16_t guest_port);

  // Removes every bridge, veth and namespace named with prefix (what a
  // killed process left behind). Returns how many objects it removed.
  static int RemoveStale(const std::string& prefix, const std::string& log_path);

  struct Impl;

 private:
  explicit ReplicaNetwork(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_VM_REPLICA_NETWORK_H_
