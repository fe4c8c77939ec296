// FetchChain: the surrogate's ChunkSource (DESIGN.md §3, §5). It asks its
// cache first, then its sources nearest first (the user's stick, then the
// home), keeps what it fetched in the cache, and counts where every chunk
// came from.
//
// - Every chunk is verified against its id by the source that read it; a
//   source that hands back a bad copy is counted (corrupt) and the chunk is
//   fetched from the next source. A bad cached copy is deleted.
// - A stale or slow stick must not make things slower than home alone
//   (ISR's lesson). The stick says without I/O whether it has a chunk
//   (MayHave, from its index), so a stale stick costs nothing; and in a bulk
//   Fetch the home works through the chunks the stick lacks while the stick
//   works through the rest from the front, and when the home runs out it
//   takes the stick's remaining chunks from the back: the slower source
//   simply gets fewer chunks. For single reads the chain prefers the source
//   whose recent reads were faster.
// - Concurrent reads of one chunk fetch it once (the others wait). A read
//   of a chunk that a bulk prefetch has queued does not wait behind the
//   prefetch's queue: it fetches the chunk itself.
//
// Thread-safe.
#ifndef SLINGSHOT_STORE_FETCH_CHAIN_H_
#define SLINGSHOT_STORE_FETCH_CHAIN_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "slingshot/store/chunk_source.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/base/mutex.h"

namespace slingshot {

struct SourceCounters {
  std::string name;
  uint64_t chunks = 0;   // verified chunks it supplied
  uint64_t bytes = 0;    // their raw bytes
  uint64_t misses = 0;   // asked, did not have it
  uint64_t corrupt = 0;  // handed back a copy that failed verification
  uint64_t errors = 0;   // failed otherwise (unreachable, I/O)
};

// Raw bytes a chain supplied, by where they came from: its cache, its near
// sources (the stick), its last source (the home).
struct FetchedBytes {
  uint64_t cache = 0, near = 0, last = 0;
  FetchedBytes& operator+=(const FetchedBytes& o) {
    cache += o.cache;
    near += o.near;
    last += o.last;
    return *this;
  }
};

struct FetchChainStats {
  uint64_t cache_hits = 0;
  uint64_t cache_bytes = 0;  // raw bytes of the hits that were read (a presence check reads none)
  uint64_t cache_corrupt = 0;
  uint64_t not_found = 0;  // no source had it
  std::vector<SourceCounters> sources;  // in chain order

  FetchedBytes bytes() const {
    FetchedBytes b{cache_bytes, 0, 0};
    for (size_t i = 0; i < sources.size(); ++i) (i + 1 == sources.size() ? b.last : b.near) += sources[i].bytes;
    return b;
  }
};

struct FetchChainOptions {
  size_t home_claim = 256;   // ids the last source takes per bulk step
  size_t steal_claim = 16;   // ids it takes from the stick's back
  size_t window = 1024;      // GetMany: ids fetched per ordered window
};

class FetchChain final : public ChunkSource {
 public:
  // cache may be null. sources: nearest first; the last one is the one that
  // should have everything (the home).
  FetchChain(ChunkStore* cache, std::vector<ChunkSource*> sources, FetchChainOptions options = {});
  ~FetchChain() override;

  Result<Bytes> Get(const ChunkId& id) override;
  // In order, each id fetched as Fetch does.
  Status GetMany(std::span<const ChunkId> ids, const Sink& sink) override;
  std::string Describe() const override;

  // Bulk fetch into the cache, every source working at once (see above).
  // The sink (optional) sees each id once, in no particular order, from one
  // thread at a time. An error only if the chain itself failed.
  Status Fetch(std::span<const ChunkId> ids, const Sink& sink = nullptr);

  FetchChainStats stats() const;

 private:
  struct Bulk;
  // value: the source's stored value, when it handed one over.
  Result<Bytes> FromSources(const ChunkId& id, Bytes* value);
  void Record(size_t source, const ChunkId& id, const Result<Bytes>& r, int64_t micros);
  // Caches the chunk: value as it came (verified by its source), else raw
  // encoded here.
  void Keep(const ChunkId& id, ByteView raw, Bytes&& value);
  // Single flight: a reader waits for another reader's fetch of the same
  // chunk, but not for a bulk fetch's (see Get).
  enum class Claimed { kMine, kByBulk, kBySingle };
  Claimed Claim(const ChunkId& id, bool bulk);
  void Release(const ChunkId& id);
  void WaitFor(const ChunkId& id);

  ChunkStore* const cache_;
  const std::vector<ChunkSource*> sources_;
  const FetchChainOptions options_;

  mutable Mutex mu_;
  CondVar cv_;
  std::unordered_map<ChunkId, bool, ChunkIdHash> in_flight_ GUARDED_BY(mu_);  // id -> by a bulk fetch
  FetchChainStats stats_ GUARDED_BY(mu_);
  std::vector<double> mean_us_ GUARDED_BY(mu_);  // per source, 0 = not measured
};

// Fetches a disk's chunks in the background, in the order given (the home's
// recorded working set first, then the rest of the table), so that a new
// replica's reads find them local. The sink (optional) sees each chunk as
// it is had, from the prefetch's thread, as FetchChain::Fetch's does.
class Prefetcher {
 public:
  Prefetcher(FetchChain* chain, std::vector<ChunkId> order, size_t step = 256,
             ChunkSource::Sink sink = nullptr);
  ~Prefetcher();  // stops and joins
  void Stop();
  // Blocks until every chunk was fetched (or the prefetch stopped) and says how it ended.
  Status Wait();
  uint64_t done() const { return done_; }
  size_t total() const { return order_.size(); }

 private:
  void Run();
  FetchChain* chain_;
  std::vector<ChunkId> order_;
  size_t step_;
  ChunkSource::Sink sink_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> done_{0};
  Status result_;
  std::thread thread_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_FETCH_CHAIN_H_
