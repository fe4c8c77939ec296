// Instantiate: a running replica from a signed checkpoint (DESIGN.md §5
// "Instantiate a replica"), the same code on a surrogate (objects from the
// home over the network) and at home (its primary after a restart, from its
// own store).
//
//   signed manifest -> verified with the home's key -> boot files fetched
//   (unless the hypervisor restores without them: RestoreNeedsBootFiles)
//   -> ReplicaDisk on the checkpoint's disk table -> VmSpec -> Restore (the
//   memory image streamed from the source as it arrives; a RAM table's
//   chunks served on demand through a LazyImage on a surrogate, fetched
//   whole while the VM starts at home) or Boot (a service
//   with state_on_disk whose memory image is another backend's, or when
//   asked to) -> ReplicaHost connected at the manifest's seq.
//
// StartReplica is the part below the manifest, also used by the home to
// boot a new service for the first time.
//
// A LiveReplica owns the VM, its disk and its ReplicaHost; destroying it
// destroys all three. It notices the loss of its service connection
// (ReplicaHost::OnLost) as well as the VM's death (MarkDead, from the
// hypervisor's death callback), and says so through lost().
#ifndef SLINGSHOT_REPLICA_INSTANTIATE_H_
#define SLINGSHOT_REPLICA_INSTANTIATE_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "slingshot/base/keys.h"
#include "slingshot/disk/lazy_image.h"
#include "slingshot/replica/replica_disk.h"
#include "slingshot/replica/replica_host.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/store/manifest.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot {

class HomeSource;

// Where a checkpoint's parts come from. Every object and chunk it returns
// is verified against its id.
class CheckpointSource {
 public:
  virtual ~CheckpointSource() = default;
  // The signed manifest that ref manifest/SERVICE names.
  virtual Result<Bytes> SignedManifest(const std::string& service) = 0;
  virtual Result<Bytes> GetObject(const ChunkId& id) = 0;
  // The disk's recorded working set; empty if none was recorded.
  virtual Result<std::vector<ChunkId>> WorkingSet(const ChunkId& table) = 0;
  // Says which objects and working sets are asked for next, so that a
  // remote source fetches them together, in one round trip. A hint:
  // whatever fails shows when the part itself is asked for.
  virtual void Prefetch(std::span<const ChunkId> objects, std::span<const ChunkId> tables) {
    (void)objects;
    (void)tables;
  }
  // Chunk reads (the disk's on demand, the memory image's in order).
  virtual ChunkSource* chunks() = 0;
  // A fetch chain to prefetch and bulk-fetch through; null if reads are
  // local already (the home's store).
  virtual FetchChain* chain() = 0;
};

// The home's own store.
class StoreCheckpointSource final : public CheckpointSource {
 public:
  explicit StoreCheckpointSource(ChunkStore* store) : store_(store) {}
  Result<Bytes> SignedManifest(const std::string& service) override;
  Result<Bytes> GetObject(const ChunkId& id) override;
  Result<std::vector<ChunkId>> WorkingSet(const ChunkId& table) override;
  ChunkSource* chunks() override { return store_; }
  FetchChain* chain() override { return nullptr; }

 private:
  ChunkStore* store_;
};

// The home over the network (objects), and a fetch chain (cache, stick,
// home) for chunks. Both must outlive it. A signed manifest given here
// (the client's, from the home with its capability) spares asking home for
// it; it is verified all the same.
class RemoteCheckpointSource final : public CheckpointSource {
 public:
  RemoteCheckpointSource(HomeSource* home, FetchChain* chain, Bytes signed_manifest = {})
      : home_(home), chain_(chain), given_manifest_(std::move(signed_manifest)) {}
  Result<Bytes> SignedManifest(const std::string& service) override;
  Result<Bytes> GetObject(const ChunkId& id) override;
  Result<std::vector<ChunkId>> WorkingSet(const ChunkId& table) override;
  void Prefetch(std::span<const ChunkId> objects, std::span<const ChunkId> tables) override;
  ChunkSource* chunks() override;
  FetchChain* chain() override { return chain_; }

 private:
  HomeSource* home_;
  FetchChain* chain_;
  Bytes given_manifest_;
  // What Prefetch brought, each answer taken once.
  std::map<ChunkId, Result<Bytes>> objects_;
  std::map<ChunkId, Result<std::vector<ChunkId>>> working_sets_;
};

struct InstantiateProgress {
  std::string phase;  // "manifest", "files" (kernel, initrd), "restore", "boot", "ready"
  uint64_t done = 0, total = 0;  // bytes, where it applies
};
using ProgressFn = std::function<void(const InstantiateProgress&)>;

// Where an instantiation's time went, in order, in milliseconds: what it
// waits for before the VM starts, the restore (or boot) itself, and the
// service's first answer. For operators' logs and the benchmarks.
struct InstantiateTimes {
  double manifest_ms = 0;  // the manifest, verified and admitted
  double files_ms = 0;     // the kernel and initrd (when they are needed)
  double tables_ms = 0;    // the tables, lists and working sets (one round trip to a remote home)
  double restore_ms = 0;   // the hypervisor's restore, or its boot
  double connect_ms = 0;   // until the service answered the replica host
  // "manifest 42 ms, files 0 ms, tables 81 ms, restore 470 ms, connect 1140 ms"
  std::string Describe() const;
};

// What to start. The disk is served from table through chunks.
class LiveReplica;
struct ReplicaPlan {
  VmSpec spec;  // name, boot files, memory, vcpus, run_dir; disk and ports are filled in
  Manifest manifest;  // service id, type, port, seq (and for a restore, all of it)
  std::string label;  // the replica's name to clients: "home", or the surrogate's
  DiskTable table;
  ChunkSource* chunks = nullptr;
  ReplicaDiskOptions disk;
  std::vector<uint16_t> extra_ports;  // also forwarded (diagnostics)
  StreamProducer memory;  // restore from this stream; empty: boot
  std::optional<RestoreRam> ram;  // the RAM of a stream that kept it apart
  // Serves ram.lazy_file; the replica keeps it until its VM is gone.
  std::unique_ptr<LazyImage> lazy_ram;
  int connect_timeout_ms = 60000;
  std::function<void(const Status&)> on_lost;  // the service connection failed
  ProgressFn progress;
  InstantiateTimes times;  // of what came before: StartReplica adds its own
};

class LiveReplica {
 public:
  ~LiveReplica();  // Destroy()s
  LiveReplica(const LiveReplica&) = delete;
  LiveReplica& operator=(const LiveReplica&) = delete;

  const std::string& vm_name() const { return vm_name_; }
  const std::shared_ptr<ReplicaHost>& host() const { return host_; }
  ReplicaDisk& disk() { return *disk_; }
  const Endpoint& service_endpoint() const { return service_; }
  // The manifest it was made from (for a first boot: the service's
  // description with no checkpoint yet, epoch 0).
  const Manifest& manifest() const { return manifest_; }
  bool booted() const { return booted_; }  // booted rather than restored
  double restore_ms() const { return times_.restore_ms; }
  const InstantiateTimes& times() const { return times_; }
  // The RAM served on demand, if the replica was restored lazily; else null.
  LazyImage* lazy_ram() const { return lazy_ram_.get(); }

  // The VM died (the hypervisor's death callback) or its service
  // connection was lost: the replica is of no further use.
  bool lost() const { return lost_; }
  void MarkDead() { lost_ = true; }
  // Shuts the session down, destroys the VM and stops the disk. Idempotent.
  void Destroy();

 private:
  friend Result<std::unique_ptr<LiveReplica>> StartReplica(Hypervisor& hv, ReplicaPlan plan);
  explicit LiveReplica(Hypervisor& hv) : hv_(hv) {}
  Hypervisor& hv_;
  std::string vm_name_;
  std::unique_ptr<ReplicaDisk> disk_;
  std::unique_ptr<LazyImage> lazy_ram_;  // after the VM in Destroy()
  std::shared_ptr<ReplicaHost> host_;
  Endpoint service_;
  Manifest manifest_;
  bool booted_ = false;
  InstantiateTimes times_;
  std::atomic<bool> lost_{false};
  bool destroyed_ = false;
};

// Starts the VM the plan describes and connects its ReplicaHost. On any
// failure everything started is destroyed again.
Result<std::unique_ptr<LiveReplica>> StartReplica(Hypervisor& hv, ReplicaPlan plan);

struct InstantiateOptions {
  std::string service;
  PublicKey manifest_key;     // the home's: the manifest must verify with it
  std::string vm_name;        // unique on this hypervisor
  std::string dir;            // private: boot files, overlay, VM run directory
  std::string label;          // "home", or the surrogate's name
  // A surrogate's: the disk overlay is encrypted under cipher, and the boot
  // files go to boot_dir (memory-backed, e.g. under /dev/shm) instead of
  // dir, so that nothing of the replica is readable on the disk.
  std::shared_ptr<const LocalCipher> cipher = nullptr;
  std::string boot_dir;
  // Boot a state_on_disk service from its checkpoint's disk even when its
  // memory image would restore here.
  bool prefer_boot = false;
  // A checkpoint with a RAM table restores with its RAM served on demand
  // (LazyImage, mounted under boot_dir) where the source has a fetch chain;
  // the rest of it is prefetched meanwhile. Otherwise (or if FUSE is not
  // there) the RAM is fetched whole while the VM starts.
  bool lazy_memory = true;
  // The prefetch stores the RAM it has into the page cache, so the guest's
  // first touch of it needs no round trip (LazyImageOptions); the replica
  // then records no whole working set.
  bool fill_ram_page_cache = true;
  // Serve the RAM on demand even from a local source (no chain), with no
  // prefetch: every page the guest reads is then a read the LazyImage sees
  // and records (ram_rehearsal.h).
  bool record_ram_reads = false;
  std::vector<uint16_t> extra_ports;
  int restore_connect_ms = 60000;
  int boot_connect_ms = 600000;  // a boot runs the guest's whole start-up
  std::function<void(const Status&)> on_lost;
  ProgressFn progress;
  // Called with the verified manifest before anything else is fetched; an
  // error (the replica does not fit here: admission.h) ends the instantiate.
  std::function<Status(const Manifest&)> admit;
};

// Makes a replica from the latest checkpoint of options.service.
//   Corruption: the manifest does not verify, or is another service's.
//   Unsupported: a version 1 manifest (no boot files), or a memory image
//     of another backend for a service that keeps state in memory.
// Other errors are the source's, the hypervisor's or the adapter's.
Result<std::unique_ptr<LiveReplica>> Instantiate(Hypervisor& hv, CheckpointSource& source,
                                                 const InstantiateOptions& options);

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_INSTANTIATE_H_
