// ChunkSource: the seam through which every chunk is read (DESIGN.md §3).
//
// Implementations: ChunkStore (local Berkeley DB), PortableSource (the
// stick), HomeSource (the home over the network), and FetchChain, which
// composes them.
// Every implementation returns bytes whose SHA-256 equals the id asked for,
// or an error: a source never hands out unverified bytes.
#ifndef SLINGSHOT_STORE_CHUNK_SOURCE_H_
#define SLINGSHOT_STORE_CHUNK_SOURCE_H_

#include <functional>
#include <span>
#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  // The chunk's uncompressed bytes, verified against id.
  // NotFound if this source does not have it; Corruption if what it has does
  // not hash to id (the bad copy is reported, never returned).
  // Thread-safe in every implementation.
  virtual Result<Bytes> Get(const ChunkId& id) = 0;
  // For messages and statistics: "store /var/lib/slingshot/store", "home".
  virtual std::string Describe() const = 0;

  // Receives each chunk of a GetMany, in the order asked, with Get's result.
  using Sink = std::function<void(const ChunkId& id, Result<Bytes>&& chunk)>;
  // Gets many chunks; sources that can pipeline (the home) override it. The
  // returned Status is an error only if the source itself failed (then some
  // ids may not have reached the sink); per-chunk errors go to the sink.
  virtual Status GetMany(std::span<const ChunkId> ids, const Sink& sink) {
    for (const auto& id : ids) sink(id, Get(id));
    return Status::OK();
  }

  // Like GetMany, and with each chunk its stored value (ChunkStore's
  // encoding: header + zstd payload) when the source received it in that
  // form and verified it, so that a cache can keep it as it came instead of
  // compressing the bytes again; value is empty otherwise.
  using ValueSink = std::function<void(const ChunkId& id, Result<Bytes>&& chunk, Bytes&& value)>;
  virtual Status GetManyWithValues(std::span<const ChunkId> ids, const ValueSink& sink) {
    return GetMany(ids, [&](const ChunkId& id, Result<Bytes>&& chunk) { sink(id, std::move(chunk), Bytes()); });
  }
  // False only when this source knows, without I/O, that it lacks id (the
  // stick has an index in memory); a fetch chain skips it then.
  virtual bool MayHave(const ChunkId& id) const {
    (void)id;
    return true;
  }
};

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_CHUNK_SOURCE_H_
