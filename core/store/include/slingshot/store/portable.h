// Portable storage (DESIGN.md §1, §6): a directory on the user's stick that
// holds chunks, used as a lookaside cache when a replica is instantiated.
// The stick is untrusted: every chunk read from it is checked against its
// id, and a damaged index or pack only makes chunks missing, never wrong.
//
// Layout, under DIR/slingshot-chunks/:
//   INDEX   a sealed frame (coding.h), magic "SSPX", version 1, body:
//             count u32, then count entries sorted by id:
//             id 32 bytes, pack u32, offset u64 (of the value), length u32
//   pack-NNNNNNNN.dat
//           header (16 bytes): "SSPP", u16 version 1, u16 0, u32 pack number,
//                              u32 CRC-32C of the preceding 12 bytes
//           entries, back to back: 32-byte id, then the chunk value
//           (chunk_store.h's value format: compressed, CRC'd)
// Why not a Bundle (tar + zstd, DESIGN.md §4): chunks are read one at a
// time, at random, while a VM waits; a compressed tar can only be read from
// the front. The pack is ChunkStore's pack layout, so a stick is as robust as
// the store: an entry is written before the index that names it.
//
// PortableSource reads a stick; PortableWriter (used by `slingshot-client
// portable sync`) adds chunks to one and drops those no longer wanted.
#ifndef SLINGSHOT_STORE_PORTABLE_H_
#define SLINGSHOT_STORE_PORTABLE_H_

#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "slingshot/store/chunk_source.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/mutex.h"

namespace slingshot {

struct PortableLocation {
  uint32_t pack = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

struct PortableStats {
  uint64_t chunks = 0;    // in the index
  uint64_t reads = 0;     // verified chunks served
  uint64_t bytes = 0;     // their raw bytes
  uint64_t corrupt = 0;   // failed verification (dropped)
  uint64_t misses = 0;
  uint64_t mean_read_us = 0;  // moving average of a verified read
};

class PortableSource final : public ChunkSource {
 public:
  // NotFound if dir holds no stick pack; Corruption if its index is damaged
  // (say so, and carry on without the stick).
  static Result<std::unique_ptr<PortableSource>> Open(const std::string& dir);
  ~PortableSource() override;

  Result<Bytes> Get(const ChunkId& id) override;
  bool MayHave(const ChunkId& id) const override;
  std::string Describe() const override;
  PortableStats stats() const;
  size_t size() const { return index_.size(); }

 private:
  PortableSource() = default;
  std::string dir_;
  std::unordered_map<ChunkId, PortableLocation, ChunkIdHash> index_;
  std::unordered_map<uint32_t, UniqueFd> packs_;
  std::atomic<uint64_t> reads_{0}, bytes_{0}, corrupt_{0}, misses_{0}, mean_read_us_{0};
};

struct PortableSyncStats {
  uint64_t added = 0;
  uint64_t added_bytes = 0;  // stored (encoded) bytes written
  uint64_t kept = 0;
  uint64_t dropped = 0;
  uint64_t packs_removed = 0;
};

class PortableWriter {
 public:
  // Creates DIR/slingshot-chunks if needed. A damaged index is reported as a
  // warning and the stick starts empty (it is only a cache).
  static Result<std::unique_ptr<PortableWriter>> Open(const std::string& dir);
  ~PortableWriter();

  bool Has(const ChunkId& id) const;
  // Appends a chunk (its raw bytes are encoded here). ResourceExhausted if
  // the stick is full: Commit still records what was written.
  Status Add(const ChunkId& id, ByteView raw);
  // Makes the additions durable (pack fsync, then INDEX replaced atomically).
  // If keep is given, chunks not in it leave the index and packs left with
  // no live chunk are deleted.
  Status Commit(const std::unordered_set<ChunkId, ChunkIdHash>* keep = nullptr);
  const PortableSyncStats& stats() const { return stats_; }

 private:
  PortableWriter() = default;
  std::string dir_;
  std::unordered_map<ChunkId, PortableLocation, ChunkIdHash> index_;
  uint32_t next_pack_ = 1;
  UniqueFd pack_;
  uint32_t pack_number_ = 0;
  uint64_t pack_size_ = 0;
  PortableSyncStats stats_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_PORTABLE_H_
