// Reachability and mark-and-sweep garbage collection for a ChunkStore.
//
// Roots are the store's refs. A ref names an object: a disk chunk table, a
// memory chunk list, or a signed manifest (which reaches its disk table and
// its memory chunk list). A chunk or object that no ref reaches is garbage.
//
// Safety: if any reachable object is missing or damaged, marking fails and
// nothing is swept (a partial mark would delete live chunks). Chunks and
// objects stored while a collection runs are never swept
// (ChunkStore::BeginGc). A ref set during a collection to objects stored
// *before* it began is not protected: a caller that sets refs concurrently
// must serialize SetRef with CollectGarbage.
#ifndef SLINGSHOT_STORE_GC_H_
#define SLINGSHOT_STORE_GC_H_

#include <functional>
#include <string>
#include <vector>

#include "slingshot/store/chunk_store.h"

namespace slingshot {

// Walks what the given refs reach (all refs when names is empty), calling
// on_object once per distinct object (with its bytes) and on_chunk once per
// distinct chunk. NotFound/Corruption if a ref or object is missing or bad.
Status WalkReachable(ChunkStore* store, const std::vector<std::string>& names,
                     const std::function<Status(const ChunkId&, ByteView)>& on_object,
                     const std::function<Status(const ChunkId&)>& on_chunk);

// Like WalkReachable, from object ids instead of ref names.
Status WalkObjects(ChunkStore* store, const std::vector<ChunkId>& roots,
                   const std::function<Status(const ChunkId&, ByteView)>& on_object,
                   const std::function<Status(const ChunkId&)>& on_chunk);

struct GcStats {
  uint64_t refs = 0;
  uint64_t live_objects = 0;
  uint64_t live_chunks = 0;
  uint64_t swept_objects = 0;
  uint64_t swept_chunks = 0;
  CompactStats compaction;  // packs rewritten after the sweep
};

// extra_roots: objects that stay, with what they reach, though no ref
// names them (manifests a live capability was granted).
Result<GcStats> CollectGarbage(ChunkStore* store, const std::vector<ChunkId>& extra_roots = {});

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_GC_H_
