// ChunkWriter: the ingest pipeline that turns a sequence of chunks into
// stored, deduplicated, compressed chunk values.
//
// Chunks are gathered into batches. For each batch, worker threads check for
// all-zero chunks (never stored) and hash the rest; duplicates within the
// stream or already in the store are skipped; only new chunks are
// compressed; then a writer thread commits the batch as one store
// transaction while the next batch is being hashed. Finish() returns when
// every chunk is durable.
//
// Not thread-safe: one producer thread calls Add/Finish.
#ifndef SLINGSHOT_STORE_CHUNK_WRITER_H_
#define SLINGSHOT_STORE_CHUNK_WRITER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "slingshot/base/chunk_id.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/base/status.h"

namespace slingshot {

struct IngestStats {
  uint64_t chunks = 0;          // chunks added
  uint64_t logical_bytes = 0;   // bytes added
  uint64_t zero_chunks = 0;     // all-zero chunks (not stored)
  uint64_t zero_bytes = 0;
  uint64_t dup_chunks = 0;      // seen earlier in this stream or already stored
  uint64_t dup_bytes = 0;
  uint64_t new_chunks = 0;      // chunks written to the store
  uint64_t new_bytes = 0;       // their uncompressed bytes
  uint64_t stored_bytes = 0;    // their encoded (compressed) bytes
};

struct ChunkWriterOptions {
  int threads = 0;                   // hashing/compression threads; 0 = one per core
  size_t batch_bytes = 8u << 20;     // bytes per store transaction
  int compression_level = 1;
};

class ChunkWriter {
 public:
  // store must outlive the writer.
  ChunkWriter(ChunkStore* store, const ChunkWriterOptions& options);
  ~ChunkWriter();  // waits for work in flight (its result is discarded)
  ChunkWriter(const ChunkWriter&) = delete;
  ChunkWriter& operator=(const ChunkWriter&) = delete;

  // Adds the next chunk (copied; at most kMaxChunkSize bytes). Returns the
  // first error of an earlier batch, after which the writer is failed.
  Status Add(ByteView chunk);
  // Reads the file at offset straight into the current batch (no copy) and
  // adds what it read as chunks of chunk_size, the last one short at end of
  // file. Reads at most one batch; returns the bytes read, 0 at end of file.
  // what names the file in errors.
  Result<size_t> AddFromFile(int fd, uint64_t offset, uint32_t chunk_size, const std::string& what);
  // Waits for every batch; returns each chunk's id in Add order (the null id
  // for an all-zero chunk). Call once.
  Result<std::vector<ChunkId>> Finish();
  // Valid after Finish.
  const IngestStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_CHUNK_WRITER_H_
