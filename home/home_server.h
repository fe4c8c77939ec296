// The home daemon (`slingshot-home run`, DESIGN.md §5): runs each service's
// primary replica, checkpoints it, and serves clients and surrogates.
//
// Services live under the services directory, one folder each:
//   service.conf   what `service create` wrote (ServiceDef, key=value lines)
//   kernel, initrd the boot files the primary boots from
//   status         "epoch E seq S" after each published checkpoint
//   endpoints      "GUEST_PORT HOST:PORT" lines: where this host reaches the
//                  primary's service ports (operators, tests)
//   run/           the VM's run directory and the disk's NBD socket
// A folder with service.conf and no checkpoint yet is created: its disk is
// imported into the store, the VM boots cold, and the first checkpoint
// (seq 0) is published once its service answers. `service create` only
// writes the folder, so it works whether or not the daemon runs.
//
// Checkpoint (every checkpoint_inputs inputs or checkpoint_seconds, if any
// input came): barrier -> clean disconnect -> the save streamed into the
// chunker -> the disk table frozen -> resume -> the manifest signed and
// published as ref manifest/NAME -> Checkpointed{seq} to the client, whose
// proxy then truncates its log. After a restart (or a crash of the VM) each
// primary is restored from its last manifest, and the client's proxy
// replays its log from the manifest's seq.
//
// The TLS server answers:
//   clients (role "client"):   Attach (the primary's session), GetCapability,
//                              and chunk-service requests (portable sync);
//   surrogates (role "surrogate", a capability scoped "service=S;client=C"):
//                              chunk-service requests, and GetRef only for
//                              manifest/S.
#ifndef SLINGSHOT_HOME_HOME_SERVER_H_
#define SLINGSHOT_HOME_HOME_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "slingshot/store/chunk_store.h"
#include "slingshot/vm/hypervisor.h"
#include "slingshot/base/keys.h"
#include "slingshot/net/tls.h"

namespace slingshot {

struct ServiceDef {
  std::string name;
  // The user it belongs to (capability.h): only that user's client devices
  // may attach to it, get capabilities for it or read its checkpoints.
  std::string owner;
  std::string type = "rfb";
  std::string cmdline;
  uint32_t memory_mib = 128;
  uint32_t vcpus = 1;
  std::string disk_image;        // imported at creation; "" = a blank disk
  uint64_t disk_size_mb = 8;     // for a blank disk
  uint16_t service_port = 5900;  // the port the ServiceAdapter speaks to
  std::vector<uint16_t> extra_ports;  // also forwarded (diagnostics)
  // The guest keeps its whole state on its disk at every barrier, so a
  // surrogate on another hypervisor may boot it from a checkpoint's disk
  // (Manifest::state_on_disk).
  bool state_on_disk = false;

  std::string Encode() const;
  static Result<ServiceDef> Decode(const std::string& text);
};

// Checks a service name: 1..48 of [A-Za-z0-9._-], not starting with '.'.
Status CheckServiceName(const std::string& name);

// `service create`: writes services_dir/NAME with service.conf and copies
// of the kernel and initrd. AlreadyExists if the service exists.
Status CreateService(const std::string& services_dir, const ServiceDef& def, const std::string& kernel,
                     const std::string& initrd);

struct HomeOptions {
  std::string services_dir;
  std::string listen_host = "0.0.0.0";
  uint16_t listen_port = 7390;
  uint64_t checkpoint_inputs = 500;
  int checkpoint_seconds = 60;
  // Retention (core/replica/retention.h): checkpoints kept per service, and
  // how often at most the daemon collects garbage after new checkpoints.
  uint32_t keep_checkpoints = 3;
  int gc_seconds = 60;
  int capability_max_seconds = 3600;
  int boot_timeout_ms = 180000;
  // After a checkpoint whose RAM table has no working set yet, restore it
  // once in a scratch VM with its RAM on demand and record the order the
  // guest reads it in (ram_rehearsal.h), for a service's first replica.
  bool record_ram_working_set = true;
  HypervisorOptions hypervisor;
};

class HomeServer {
 public:
  // store: transactional; key signs manifests; ca issues capabilities;
  // creds are the home's own TLS credentials.
  static Result<std::unique_ptr<HomeServer>> Start(ChunkStore* store, SigningKey key, CertificateAuthority ca,
                                                   TlsCredentials creds, HomeOptions options);
  ~HomeServer();
  uint16_t port() const;
  // Stops serving and destroys the primaries (their state is in the last
  // checkpoint plus the clients' logs).
  void Stop();

  struct Impl;

 private:
  explicit HomeServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_HOME_HOME_SERVER_H_
