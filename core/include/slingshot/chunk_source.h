// ChunkSource: the seam through which every chunk is read (DESIGN.md §3).
//
// Implementations: ChunkStore (local Berkeley DB), and later the portable
// stick, the home over the network, and FetchChain which composes them.
// Every implementation returns bytes whose SHA-256 equals the id asked for,
// or an error: a source never hands out unverified bytes.
#ifndef SLINGSHOT_CHUNK_SOURCE_H_
#define SLINGSHOT_CHUNK_SOURCE_H_

#include <string>

#include "slingshot/chunk_id.h"
#include "slingshot/status.h"

namespace slingshot {

// Largest chunk any format accepts. Bounds every chunk length we read.
constexpr size_t kMaxChunkSize = 16u << 20;

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
};

}  // namespace slingshot

#endif  // SLINGSHOT_CHUNK_SOURCE_H_
