// Memory images: a hypervisor's save stream cut by FastCDC into chunks and
// described by a ChunkList (DESIGN.md §4).
//
// ChunkList encoding: sealed frame (coding.h), magic "SSCL", version 1, body:
//   total_size  u64
//   count       u32
//   entries     count x { id: 32 bytes, size: u32 (1..kMaxChunkSize) }
// The sizes must add up to total_size. The null id stands for an all-zero
// chunk of that size (never stored), as in disk chunk tables.
#ifndef SLINGSHOT_STORE_MEMORY_IMAGE_H_
#define SLINGSHOT_STORE_MEMORY_IMAGE_H_

#include <functional>
#include <memory>
#include <vector>

#include "slingshot/base/chunk_id.h"
#include "slingshot/store/chunk_source.h"
#include "slingshot/store/chunk_writer.h"
#include "slingshot/store/chunker.h"
#include "slingshot/base/status.h"

namespace slingshot {

class ChunkStore;

struct ChunkList {
  struct Entry {
    ChunkId id;
    uint32_t size;
    friend bool operator==(const Entry&, const Entry&) = default;
  };
  uint64_t total_size = 0;
  std::vector<Entry> entries;

  Bytes Encode() const;
  static Result<ChunkList> Decode(ByteView bytes);
};

// A streaming sink: bytes of a save stream in, stored chunks out, no temp
// file. Not thread-safe.
class MemoryImageWriter {
 public:
  MemoryImageWriter(ChunkStore* store, const ChunkerOptions& chunker,
                    const ChunkWriterOptions& writer = {});
  ~MemoryImageWriter();
  Status Write(ByteView data);
  // Ends the stream; the returned list describes it. Call once.
  Result<ChunkList> Finish();
  const IngestStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Streams the image described by list to sink, chunk by chunk, fetching each
// from source and checking its length. Stops at the first error (a source
// error, a wrong length, or the sink's own error).
Status ReadMemoryImage(const ChunkList& list, ChunkSource* source,
                       const std::function<Status(ByteView)>& sink);

// Whole files (a VM's kernel and initrd) as chunk lists: StoreFile cuts the
// file at path into the store (FastCDC) and stores the list as an object,
// returning its id; WriteFileFromList fetches the list object and its chunks
// from source and writes them to path (replaced atomically, mode 0644).
Result<ChunkId> StoreFile(const std::string& path, ChunkStore* store);
Status WriteFileFromList(const ChunkList& list, ChunkSource* source, const std::string& path);

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_MEMORY_IMAGE_H_
