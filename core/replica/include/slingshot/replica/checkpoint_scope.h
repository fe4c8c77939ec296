// CheckpointScope: what the holder of a capability may fetch from the home
// (DESIGN.md §6). A capability names one service; its holder (a surrogate)
// may read that service's current manifest, and then only the objects and
// chunks reachable from a manifest the home handed it: the disk table and
// its chunks, the memory list and its chunks, the boot files. Any other id
// is refused, so a capability for one service cannot read another's state
// by guessing or replaying ids.
//
// A surrogate keeps reading the disk of the checkpoint it started from
// while the home publishes newer ones, so every manifest granted to a
// capability stays in its scope until the capability expires.
//
// Thread-safe. Reachable sets are computed once per manifest (gc.h's walk)
// and shared by every capability granted it; at most max_manifests are
// kept, least recently granted dropped first (and computed again if asked).
#ifndef SLINGSHOT_REPLICA_CHECKPOINT_SCOPE_H_
#define SLINGSHOT_REPLICA_CHECKPOINT_SCOPE_H_

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "slingshot/base/mutex.h"
#include "slingshot/net/capability.h"
#include "slingshot/store/chunk_store.h"

namespace slingshot {

class CheckpointScope {
 public:
  explicit CheckpointScope(ChunkStore* store, size_t max_manifests = 64);

  // Resolves ref manifest/SERVICE of cap's service, grants it to cap and
  // returns the ref. NotFound if the service has no checkpoint.
  Result<Ref> GrantCurrent(const Capability& cap, int64_t now);
  // Resolves any ref and grants what it reaches to cap (a paired client's
  // own reads, keyed by cap.fingerprint). The caller decides that cap may
  // read the ref.
  Result<Ref> GrantRef(const Capability& cap, const std::string& name, int64_t now);
  // Every manifest granted to a capability that has not expired at now
  // (they stay in the store: retention.h).
  std::vector<ChunkId> LiveManifests(int64_t now);
  // OK if every id is reachable from a manifest granted to cap (and cap has
  // not expired at now); PermissionDenied naming the first that is not.
  Status Check(const Capability& cap, const std::vector<ChunkId>& ids, int64_t now);

 private:
  using IdSet = std::unordered_set<ChunkId, ChunkIdHash>;
  Result<std::shared_ptr<const IdSet>> Reachable(const ChunkId& manifest);

  ChunkStore* const store_;
  const size_t max_manifests_;
  Mutex mu_;
  // manifest id -> its reachable ids; lru_ holds the manifests, most recent first.
  std::map<ChunkId, std::shared_ptr<const IdSet>> sets_ GUARDED_BY(mu_);
  std::list<ChunkId> lru_ GUARDED_BY(mu_);
  struct Grant {
    int64_t not_after = 0;
    std::vector<ChunkId> manifests;
  };
  std::map<std::string, Grant> grants_ GUARDED_BY(mu_);  // by capability fingerprint
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_CHECKPOINT_SCOPE_H_
