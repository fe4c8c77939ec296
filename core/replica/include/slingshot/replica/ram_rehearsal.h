// RecordRamWorkingSet: the home learns which RAM a guest reads first after
// a restore before any surrogate has run one, so that even the first
// replica of a service prefetches in that order (on a slow link, the order
// decides how soon a replica answers: decisions/0016).
//
// It restores the service's published checkpoint from the home's own store
// into a scratch VM with its RAM served on demand (a LazyImage with no
// prefetch, so that every page the guest touches is a read it records),
// waits for the service to answer and then `settle` more, saves the order
// of the first reads as the RAM table's working set (the ref a surrogate's
// PutWorkingSet fills) and destroys the VM. The scratch VM gets no input
// and no client; its disk writes stay in an overlay that goes with it.
//
// Once recorded, each later checkpoint carries the set by offset
// (checkpoint.cc), and a surrogate's own record replaces it if longer. So
// this runs about once per service.
#ifndef SLINGSHOT_REPLICA_RAM_REHEARSAL_H_
#define SLINGSHOT_REPLICA_RAM_REHEARSAL_H_

#include <chrono>
#include <string>

#include "slingshot/base/keys.h"
#include "slingshot/base/status.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot {

struct RamRehearsalOptions {
  std::string service;
  PublicKey manifest_key;  // the home's: the manifest must verify with it
  std::string dir;         // scratch (VM run directory, overlay, mount); removed after
  std::chrono::milliseconds settle{2000};
  int connect_ms = 120000;
};

// The number of chunks recorded; 0 when there was nothing to do (no
// checkpoint, no RAM table, or a working set already recorded for it).
// Unsupported when RAM cannot be served on demand here (no FUSE).
Result<size_t> RecordRamWorkingSet(Hypervisor& hv, ChunkStore* store, const RamRehearsalOptions& options);

// Whether the published checkpoint of service has a RAM table without a
// recorded working set (what RecordRamWorkingSet would fill).
bool RamWorkingSetMissing(ChunkStore* store, const std::string& service);

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_RAM_REHEARSAL_H_
