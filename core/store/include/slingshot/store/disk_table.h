// Disk chunk tables: a raw disk image cut into fixed-size chunks (64 KiB by
// default), stored by id (DESIGN.md §4). All-zero chunks are not stored: the
// table holds the null id for them, and export writes them as holes.
//
// Encoded as a sealed frame (coding.h), magic "SSDT", version 1, body:
//   chunk_size  u32   a power of two in [4 KiB, 4 MiB]
//   image_size  u64   bytes; the last chunk may be short
//   count       u32   == ceil(image_size / chunk_size)
//   ids         count x 32 bytes
#ifndef SLINGSHOT_STORE_DISK_TABLE_H_
#define SLINGSHOT_STORE_DISK_TABLE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "slingshot/base/chunk_id.h"
#include "slingshot/store/chunk_source.h"
#include "slingshot/store/chunk_writer.h"
#include "slingshot/base/status.h"

namespace slingshot {

class ChunkStore;

constexpr uint32_t kDefaultDiskChunkSize = 64 * 1024;
// A guest's RAM kept apart at a checkpoint: smaller, since a replica whose
// RAM comes on demand fetches a whole chunk for each scattered page it
// touches first (decisions/0016).
constexpr uint32_t kRamChunkSize = 16 * 1024;

struct DiskTable {
  uint32_t chunk_size = kDefaultDiskChunkSize;
  uint64_t image_size = 0;
  std::vector<ChunkId> ids;  // null id = all-zero chunk

  // Length of chunk i (the last may be short).
  uint32_t ChunkLength(size_t i) const;
  Bytes Encode() const;
  // Corruption/Unsupported for anything but a well-formed table.
  static Result<DiskTable> Decode(ByteView bytes);
};

struct DiskImportOptions {
  uint32_t chunk_size = kDefaultDiskChunkSize;
  ChunkWriterOptions writer;
};

struct DiskImport {
  DiskTable table;
  IngestStats stats;
};

// Reads the raw image at path and stores its chunks. The table itself is not
// stored (see ChunkStore::PutObject).
Result<DiskImport> ImportDisk(const std::string& path, ChunkStore* store,
                              const DiskImportOptions& options = {});

// Cuts an image held in memory (a guest's RAM) into a table of
// options.chunk_size chunks and stores them. Chunk i with known_zero[i] set
// is taken as zero without being read (the caller knows it was never
// written); known_zero may be shorter than the table (the rest is read).
Result<DiskImport> ImportImage(ByteView image, const std::vector<bool>& known_zero, ChunkStore* store,
                               const DiskImportOptions& options = {});

// Hands every non-zero chunk of table to put (its offset and bytes), in
// table order, fetched from source with GetMany (pipelined where the source
// can) and each checked against the table's length.
Status ReadImage(const DiskTable& table, ChunkSource* source,
                 const std::function<Status(uint64_t offset, ByteView bytes)>& put);

// Writes the image described by table to path (created or truncated),
// fetching chunks from source; zero chunks become holes. Every chunk is
// verified (by the source) and its length checked against the table.
Status ExportDisk(const DiskTable& table, ChunkSource* source, const std::string& path);

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_DISK_TABLE_H_
