// FastCDC: a streaming content-defined chunker (Xia et al., USENIX ATC '16)
// for memory images. Bytes go in as they arrive (e.g. straight from a
// hypervisor's save stream); chunks come out through a callback; nothing is
// spooled to a file. Cut points depend only on content, so a byte inserted
// early in a stream shifts only nearby boundaries, and the next checkpoint of
// the same VM shares most chunks with the previous one.
//
// Normalized chunking: below the average size a stricter mask (more bits)
// makes cuts rarer, above it a looser one makes them likelier, which narrows
// the size distribution around the average. The first min_size bytes of a
// chunk are never examined (cut-point skipping).
//
// Not thread-safe: one chunker per stream.
#ifndef SLINGSHOT_STORE_CHUNKER_H_
#define SLINGSHOT_STORE_CHUNKER_H_

#include <cstdint>
#include <functional>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

struct ChunkerOptions {
  uint32_t min_size = 4 * 1024;
  uint32_t avg_size = 16 * 1024;
  uint32_t max_size = 64 * 1024;
  // InvalidArgument unless 64 <= min < avg <= max <= kMaxChunkSize.
  Status Validate() const;
};

class FastCdcChunker {
 public:
  // Called once per chunk, in stream order. The view is valid only during
  // the call. Returning a non-OK status stops the chunker: Write/Finish
  // return that status.
  using ChunkFn = std::function<Status(ByteView chunk)>;

  // options must Validate().
  FastCdcChunker(const ChunkerOptions& options, ChunkFn on_chunk);

  // Feeds more bytes of the stream.
  Status Write(ByteView data);
  // Emits the final (possibly short) chunk. Call once, at end of stream.
  Status Finish();

  uint64_t bytes_in() const { return bytes_in_; }

  uint64_t chunks_out() const { return chunks_out_; }

 private:
  // Continues the cut-point search over the pending bytes; returns the
  // length of the next chunk, or 0 when more bytes are needed.
  size_t Scan(ByteView pending, bool final);
  Status Drain(bool final);
  ChunkerOptions opt_;
  ChunkFn on_chunk_;
  uint64_t mask_s_, mask_l_;
  Bytes buf_;
  size_t start_ = 0;  // first unemitted byte in buf_
  size_t scan_pos_ = 0;  // bytes of the pending chunk already examined
  uint64_t hash_ = 0;    // gear hash at scan_pos_
  uint64_t bytes_in_ = 0;
  uint64_t chunks_out_ = 0;
  Status failed_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_CHUNKER_H_
