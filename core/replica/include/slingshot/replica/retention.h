// Retention: which checkpoints the home keeps, and the garbage collection
// that frees the rest (DESIGN.md §4). Run by the home daemon between
// checkpoints, serialized with publishing (gc.h: a ref must not be set to
// old objects while a collection runs).
//
// Every published checkpoint is also recorded as a ref
//   history/SERVICE/EPOCH      (EPOCH zero-padded to 20 digits)
// naming its manifest. A collection keeps, per service, the newest
// keep_checkpoints of them and every manifest in live_roots (manifests a
// live capability was granted: a surrogate may still read them), deletes
// the other history refs, drops the working sets of disk tables that no
// kept manifest uses, and then sweeps (CollectGarbage) and compacts.
#ifndef SLINGSHOT_REPLICA_RETENTION_H_
#define SLINGSHOT_REPLICA_RETENTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "slingshot/store/chunk_store.h"
#include "slingshot/store/gc.h"

namespace slingshot {

struct RetentionPolicy {
  uint32_t keep_checkpoints = 3;  // per service, at least 1
};

struct RetentionStats {
  uint64_t kept_checkpoints = 0;
  uint64_t dropped_checkpoints = 0;
  uint64_t dropped_working_sets = 0;
  GcStats gc;
  uint64_t stored_bytes_before = 0, stored_bytes_after = 0;
  double ms = 0;
};

// "history/SERVICE/000...EPOCH".
std::string HistoryRef(const std::string& service, uint64_t epoch);
// Records a published checkpoint (TakeCheckpoint's manifest) in the history.
Status RecordCheckpoint(ChunkStore* store, const std::string& service, uint64_t epoch, const ChunkId& manifest);

// Applies policy to the store (see above), then collects garbage.
Result<RetentionStats> ApplyRetention(ChunkStore* store, const RetentionPolicy& policy,
                                      const std::vector<ChunkId>& live_roots);

// What one service's refs hold in the store (manifest/S, history/S/...,
// boot/S/..., and the working sets of the disk tables its checkpoints use).
// service is empty for the refs of no service (imported disks, bundles).
struct ServiceUsage {
  std::string service;
  uint64_t checkpoints = 0;  // history refs
  uint64_t chunks = 0;       // distinct chunks its refs reach
  uint64_t bytes = 0;        // their stored bytes, and the objects'
  uint64_t own_bytes = 0;    // of bytes, what no other service reaches: what dropping it frees
};

// One entry per service, in name order, the refs of no service last (if
// any). Reads every object the refs reach; holds no lock of its own (the
// daemon runs it where it may run a collection's marking).
Result<std::vector<ServiceUsage>> MeasureUsage(ChunkStore* store);
// "store 45.2 MiB, 3.1 MiB of it its own; 3 checkpoints, 812 chunks".
std::string DescribeUsage(const ServiceUsage& u);

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_RETENTION_H_
