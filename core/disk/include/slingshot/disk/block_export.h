// BlockExport (DESIGN.md §3): a disk as a VM sees it, whatever serves it.
//
// Implementations: ChunkTableExport (a chunk table with a copy-on-write
// overlay, chunk_table_export.h) and OpenFileExport (a raw image file,
// nbd_server.h). NbdServer puts any of them on the wire.
//
// Thread-safety: an export given to more than one connection is called from
// several threads at once and must be thread-safe.
#ifndef SLINGSHOT_DISK_BLOCK_EXPORT_H_
#define SLINGSHOT_DISK_BLOCK_EXPORT_H_

#include <cstdint>
#include <span>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

// A disk as the server exports it.
class BlockExport {
 public:
  virtual ~BlockExport() = default;
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // offset + out.size() <= size() is checked by the caller.
  virtual Status Read(uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Status Write(uint64_t offset, ByteView data) = 0;
  // Makes every acknowledged write durable.
  virtual Status Flush() = 0;
  // The range's contents become unspecified (zero for our exports).
  virtual Status Trim(uint64_t offset, uint64_t length) = 0;
};

}  // namespace slingshot

#endif  // SLINGSHOT_DISK_BLOCK_EXPORT_H_
