// A disk chunk table served as a BlockExport (DESIGN.md §3, §5): the disk a
// replica's VM sees.
//
// - Reads assemble the table's chunks, fetched from a ChunkSource (which
//   verifies every chunk against its id); null ids read as zeros and cost
//   nothing. A small LRU keeps recently used chunks decoded.
// - Writes never touch the source: the first write to a chunk copies it up
//   into an overlay file (sparse, in a directory of the caller's), and that
//   chunk is read from the overlay from then on.
// - Freeze() (at home, at checkpoint time) hashes the chunks written since
//   the last freeze into a ChunkStore and returns the new immutable table;
//   the export then serves that table, and the VM goes on writing. For a
//   checkpoint whose guest runs on while its memory is saved, the freeze
//   comes in two steps: BeginFreeze() at the checkpoint's instant reads
//   nothing (it only fixes which chunks the table takes as they are then);
//   a write to one of those before FinishFreeze() first stores that
//   chunk's bytes as they were; FinishFreeze() stores the rest, a chunk at
//   a time outside the lock, and returns the table as of BeginFreeze().
// The overlay holds no hard state: after a crash the disk comes back as the
// last frozen table (the event log brings the service current).
//
// Thread-safe: one mutex serializes requests (a freeze's hashing and
// storing runs outside it, but for a write that must keep a chunk's old
// bytes first).
#ifndef SLINGSHOT_DISK_CHUNK_TABLE_EXPORT_H_
#define SLINGSHOT_DISK_CHUNK_TABLE_EXPORT_H_

#include <memory>
#include <string>
#include <vector>

#include "slingshot/base/cipher.h"
#include "slingshot/store/chunk_source.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/disk/nbd_server.h"

namespace slingshot {

class ChunkStore;

struct ChunkTableExportOptions {
  bool read_only = false;
  size_t cached_chunks = 64;  // decoded chunks kept for reads
  // The overlay file's bytes are encrypted under it (a surrogate's key,
  // base/cipher.h): the guest's writes are unreadable on disk. Null: plain.
  std::shared_ptr<const LocalCipher> cipher = nullptr;
};

struct ChunkTableExportStats {
  uint64_t chunks_fetched = 0;   // from the source
  uint64_t zero_chunk_reads = 0;
  uint64_t chunks_copied_up = 0;
  uint64_t dirty_chunks = 0;     // written since the last freeze
  uint64_t kept_before_write = 0;  // chunks a write stored first, during a freeze
};

class ChunkTableExport final : public BlockExport {
 public:
  // overlay_path: a file to create (replaced if present) for written chunks.
  static Result<std::unique_ptr<ChunkTableExport>> Open(const DiskTable& table,
                                                        ChunkSource* source,
                                                        const std::string& overlay_path,
                                                        const ChunkTableExportOptions& options = {});
  ~ChunkTableExport() override;

  uint64_t size() const override;
  bool read_only() const override;
  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, ByteView data) override;
  Status Flush() override;
  Status Trim(uint64_t offset, uint64_t length) override;

  // Stores every chunk written since the last freeze (all-zero ones as the
  // null id) and returns the table now served.
  Result<DiskTable> Freeze(ChunkStore* store);
  // Freeze() in two steps (see above). BeginFreeze: InvalidArgument if
  // a freeze is under way. FinishFreeze: the table as of BeginFreeze, or
  // the store's first error (InvalidArgument with no freeze under way); a freeze that failed leaves its chunks dirty
  // for the next one (the guest's writes never fail for it).
  Status BeginFreeze(ChunkStore* store);
  Result<DiskTable> FinishFreeze();
  ChunkTableExportStats stats() const;

  // The working set (working_set.h): ids of the table's chunks in the order
  // they were first read from the base since open (chunks served from the
  // overlay and all-zero chunks are left out).
  std::vector<ChunkId> FirstReads() const;

 private:
  struct Impl;
  explicit ChunkTableExport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_DISK_CHUNK_TABLE_EXPORT_H_
