// ReplicaDisk: a replica's disk (DESIGN.md §5), the same at home and on a
// surrogate. A checkpoint's chunk table is served as a ChunkTableExport
// (chunks read on demand from a ChunkSource, writes into a copy-on-write
// overlay) by an NBD server listening where the hypervisor's NBD client
// reaches it (Hypervisor::DiskAddress: a unix socket for QEMU, loopback TCP
// for Xen). No caller chooses the transport.
//
// On a surrogate the disk's chunks are also prefetched in the background,
// the primary's recorded working set first (PrefetchOrder), so that the
// guest's reads find them in the cache.
//
// Thread-safety: the accessors may be called from any thread; Stop() once.
#ifndef SLINGSHOT_REPLICA_REPLICA_DISK_H_
#define SLINGSHOT_REPLICA_REPLICA_DISK_H_

#include <memory>
#include <string>
#include <vector>

#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/disk/nbd_server.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot {

// The order to prefetch a disk in: the working set as recorded, then every
// other chunk of the table in table order; each id once, no null ids.
std::vector<ChunkId> PrefetchOrder(const DiskTable& table, const std::vector<ChunkId>& working_set);

struct ReplicaDiskOptions {
  // A private directory: the overlay and, for QEMU, the NBD socket.
  std::string dir;
  // The NBD export's description (the service's name).
  std::string description;
  // Prefetch through this chain in PrefetchOrder (surrogates); null: none.
  FetchChain* prefetch = nullptr;
  std::vector<ChunkId> working_set;
  bool read_only = false;  // refuse writes (a diagnostic export)
  // The overlay is encrypted under it (ChunkTableExportOptions::cipher).
  std::shared_ptr<const LocalCipher> cipher = nullptr;
};

class ReplicaDisk {
 public:
  // Starts serving table, read through source (which must outlive the
  // disk), where hv wants its disks.
  static Result<std::unique_ptr<ReplicaDisk>> Open(const DiskTable& table, ChunkSource* source, const Hypervisor& hv,
                                                   ReplicaDiskOptions options);
  // The same, listening at `where` (a unix socket, or host and port; port 0
  // picks one): for tools that serve a disk to other NBD clients.
  static Result<std::unique_ptr<ReplicaDisk>> Open(const DiskTable& table, ChunkSource* source, NbdDisk where,
                                                   ReplicaDiskOptions options);
  ~ReplicaDisk();  // Stop()s
  ReplicaDisk(const ReplicaDisk&) = delete;
  ReplicaDisk& operator=(const ReplicaDisk&) = delete;

  // What VmSpec::disk must say.
  const NbdDisk& address() const { return address_; }
  ChunkTableExport& table_export() { return *export_; }
  NbdServer::Stats nbd_stats() const { return nbd_->stats(); }
  // The prefetch's progress (0 of 0 without one).
  uint64_t prefetched() const;
  uint64_t prefetch_total() const;

  // Stops the prefetch, closes every NBD connection and the listener.
  void Stop();

 private:
  ReplicaDisk() = default;
  NbdDisk address_;
  ChunkTableExport* export_ = nullptr;  // owned by nbd_
  std::unique_ptr<NbdServer> nbd_;
  std::unique_ptr<Prefetcher> prefetch_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_REPLICA_DISK_H_
