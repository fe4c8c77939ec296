// ChunkStore: content-addressed chunks in a Berkeley DB environment
// (DESIGN.md §4), plus the small objects (chunk tables, chunk lists, signed
// manifests) and named refs that say what must be kept.
//
// Directory layout: a Berkeley DB environment holding
//   chunks.db   btree: key = 32-byte ChunkId, value = the chunk value (below,
//               cache mode) or its location in a pack (transactional mode)
//   objects.db  btree: key = SHA-256 of the object bytes, value = the bytes
//               (each object is itself a sealed frame, see coding.h)
//   refs.db     btree: key = ref name, value = u8 kind + 32-byte object id
// STORE, a sealed frame naming the mode and format version, LOCK (held
// with flock by the one process that has the store open), and in
// transactional mode packs/pack-NNNNNNNN.dat:
//   header (16 bytes): "SSPK", u16 version 1, u16 0, u32 pack number,
//                      u32 CRC-32C of the preceding 12 bytes
//   entries, back to back: 32-byte id, then the chunk value
// and the index value of such a chunk is a 28-byte location record:
//   "SL", u8 1, u8 0, u32 pack, u64 offset of the value, u32 value length,
//   u32 raw length, u32 CRC-32C of the preceding 24 bytes.
//
// Why packs: Berkeley DB logs every byte it stores and writes it again into
// its pages, so a durable put of a 64 KiB chunk cost two disk writes plus
// page-sized scatter. A value is appended once to a pack and fsynced,
// and only its small index record goes through the Berkeley DB transaction
// (the layout of Venti's arenas and index, and of git's packs). A crash
// between the two leaves unindexed garbage in a pack, never an index entry
// without data. A process never appends to a pack it did not create, so
// damage from a crash sits only at a pack's end. Deleted chunks leave
// garbage in packs that CompactPacks reclaims.
//
// Chunk value format, version 1 (little-endian):
//   magic     2 bytes  "SC"
//   version   u8       1
//   codec     u8       0 = raw, 1 = zstd
//   raw_len   u32      uncompressed length, <= kMaxChunkSize
//   data_len  u32      length of the payload that follows
//   crc       u32      CRC-32C of bytes [0,12) and the payload
//   payload   data_len bytes
// A read checks magic, version, both lengths, the CRC, decompresses into
// exactly raw_len bytes and checks SHA-256 == key. Any failure is Corruption
// naming the chunk; the bad bytes are never returned. For a value in a pack
// the read checks the id written before the value instead of re-hashing: the
// SHA-256 was computed when the chunk was stored, the CRC-32C catches damage
// since, the recorded id catches a misdirected index entry, and hashing on
// every read halved a disk export's read throughput. VerifyAll (the scrub)
// re-hashes every chunk.
//
// Modes:
//   kTransactional (home): every Put/PutBatch is one Berkeley DB transaction,
//     committed with a synchronous log flush before it returns, so an
//     acknowledged put survives kill -9 and power loss. Opening runs
//     recovery. One process at a time: a second Open fails with IOError.
//   kCache (surrogate): no transactions, no log; bounded by a byte budget,
//     least-recently-used chunks are evicted. After a crash the cache may be
//     damaged; Open then recreates it empty (a cache holds no hard state).
//
// Thread-safety: all methods are safe to call concurrently.
#ifndef SLINGSHOT_STORE_CHUNK_STORE_H_
#define SLINGSHOT_STORE_CHUNK_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/cipher.h"
#include "slingshot/base/env.h"
#include "slingshot/store/chunk_source.h"
#include "slingshot/base/status.h"

namespace slingshot {

struct ChunkStoreOptions {
  enum class Mode { kTransactional, kCache };
  Mode mode = Mode::kTransactional;
  // Cache mode: the most bytes of stored values kept before eviction (0 = no limit).
  uint64_t cache_budget_bytes = 0;
  // zstd level for new chunks (1 is fast; negative levels are faster still).
  int compression_level = 1;
  // Berkeley DB buffer pool size.
  uint64_t db_cache_bytes = 64ull << 20;
  // Create the store if the directory holds none.
  bool create_if_missing = true;
  // Transactional mode: bytes kept in DIR/RESERVE (preallocated) so that a
  // store on a full file system still opens: Berkeley DB's recovery must
  // write, so an open that fails while a reserve exists releases it and
  // tries again (and says so). Made again at an open with room. 0: none;
  // at least 16 MiB (two of Berkeley DB's 8 MiB log files) to be of use.
  // Another program may take the released space before recovery does, so
  // the store also keeps recovery's room inside its own files (see
  // Checkpoint()); the reserve is for what that does not cover (a new log
  // file).
  uint64_t reserve_bytes = 0;
  // Cache mode: values are sealed under this key (base/cipher.h; the chunk
  // id is the associated data) before they reach the disk, and opened on
  // read. A surrogate's key lives only in its memory, so its cache is
  // unreadable once it stops. Null: stored as they are.
  std::shared_ptr<const LocalCipher> cipher = nullptr;
  // Pack writes, syncs, creations and removals go through it (env.h);
  // Berkeley DB does its own I/O. Null: Env::Default().
  Env* env = nullptr;
};

// A chunk ready to store: its id and its encoded value (see above).
struct EncodedChunk {
  ChunkId id;
  Bytes value;
};

// What a ref points at.
enum class ObjectKind : uint8_t { kDiskTable = 1, kChunkList = 2, kManifest = 3, kWorkingSet = 4 };
const char* ObjectKindName(ObjectKind k);

struct Ref {
  std::string name;
  ObjectKind kind;
  ChunkId object;
};

struct ChunkStoreStats {
  uint64_t chunks = 0;
  uint64_t raw_bytes = 0;     // sum of uncompressed lengths
  uint64_t stored_bytes = 0;  // sum of encoded value lengths
  uint64_t objects = 0;
  uint64_t refs = 0;
  uint64_t evictions = 0;     // cache mode, since open
  uint64_t packs = 0;               // transactional mode
  uint64_t pack_file_bytes = 0;     // size of all packs
  uint64_t pack_live_bytes = 0;     // of which indexed entries
};

struct CompactStats {
  uint64_t packs_removed = 0;
  uint64_t chunks_moved = 0;
  uint64_t bytes_reclaimed = 0;
};

class ChunkStore : public ChunkSource {
 public:
  using Mode = ChunkStoreOptions::Mode;
  static constexpr size_t kValueHeaderSize = 16;

  // Opens (or creates) the store in dir. InvalidArgument if dir holds a store
  // of the other mode; Unsupported for a newer format version.
  static Result<std::unique_ptr<ChunkStore>> Open(const std::string& dir,
                                                  const ChunkStoreOptions& options);
  ~ChunkStore() override;

  // Encodes raw bytes as a chunk value (compresses when it saves space).
  // Pure; thread-safe; used by ingest workers.
  static Bytes EncodeValue(ByteView raw, int compression_level);
  // Decodes and verifies a value for id. Corruption on any mismatch.
  static Result<Bytes> DecodeValue(const ChunkId& id, ByteView value);

  // Stores raw bytes; returns their id. Already-present chunks are not rewritten.
  Result<ChunkId> Put(ByteView raw);
  // Stores already-encoded chunks in one transaction (one fsync in
  // transactional mode). Ids already present are skipped. Values are trusted
  // to match their ids (they come from EncodeValue in this process).
  Status PutEncoded(std::span<const EncodedChunk> chunks);
  // Stores raw chunks in one transaction; fills ids (same order) if given.
  Status PutBatch(std::span<const ByteView> raws, std::vector<ChunkId>* ids);

  Result<Bytes> Get(const ChunkId& id) override;
  // The stored value (format above), not decoded: what the chunk service
  // sends, so compressed chunks cross the network compressed. The receiver
  // verifies it with DecodeValue.
  Result<Bytes> GetEncoded(const ChunkId& id);
  Result<bool> Contains(const ChunkId& id);
  // The chunk's raw (decoded) and stored (encoded) lengths, from the index,
  // without reading the value. NotFound if absent.
  struct ChunkSize {
    uint64_t raw = 0, stored = 0;
    bool in_pack = false;
  };
  Result<ChunkSize> SizeOf(const ChunkId& id);
  // Deletes chunks (absent ids are ignored), in one transaction.
  Status Delete(std::span<const ChunkId> ids);
  // Calls fn for every chunk id in key order; stops early if fn returns false.
  Status ForEachChunk(const std::function<bool(const ChunkId&)>& fn);
  // Reads and verifies every chunk; returns how many were checked and
  // reports each bad one through bad (id + reason).
  Result<uint64_t> VerifyAll(const std::function<void(const ChunkId&, const Status&)>& bad);

  // Objects: small sealed blobs addressed by their SHA-256.
  Result<ChunkId> PutObject(ByteView bytes);
  Result<Bytes> GetObject(const ChunkId& id);
  Status DeleteObjects(std::span<const ChunkId> ids);
  Status ForEachObject(const std::function<bool(const ChunkId&)>& fn);

  // Refs: the roots that garbage collection keeps.
  Status SetRef(const Ref& ref);
  Result<Ref> GetRef(const std::string& name);
  Status DeleteRef(const std::string& name);
  Result<std::vector<Ref>> ListRefs();

  Result<ChunkStoreStats> Stats();

  // Transactional mode: rewrites packs whose unindexed (garbage) share is at
  // least min_garbage_ratio, and small packs, moving their live chunks into
  // the current pack (each verified first), then deletes them. Cache mode:
  // a no-op. Safe against crashes at any point (see above).
  Result<CompactStats> CompactPacks(double min_garbage_ratio = 0.25);

  // While a guard is alive, chunks and objects stored are remembered, and
  // IsProtected() is true for them: garbage collection never sweeps a chunk
  // stored after it began marking.
  class GcGuard;
  std::unique_ptr<GcGuard> BeginGc();
  bool IsProtected(const ChunkId& id) const;

  Mode mode() const;
  const std::string& dir() const;
  std::string Describe() const override;

  // Forces the Berkeley DB log and buffer pool to disk (transactional mode),
  // so a recovery after a crash has only what came since to redo, and
  // allocates the recovery headroom in the database and log files again
  // (blocks past their ends that recovery on a full file system may need;
  // a full file system now only logs that it has no room). In cache mode
  // flushes the buffer pool.
  Status Checkpoint();

 private:
  struct Impl;
  explicit ChunkStore(std::unique_ptr<Impl> impl);
  static Result<Bytes> DecodeValueImpl(const ChunkId& id, ByteView value, bool check_hash);
  // The stored value; *in_pack (if given) says it came from a pack with its
  // recorded id checked.
  Result<Bytes> GetValue(const ChunkId& id, bool* in_pack);
  Status PutToPacks(std::span<const EncodedChunk> chunks);
  std::unique_ptr<Impl> impl_;
};

class ChunkStore::GcGuard {
 public:
  explicit GcGuard(ChunkStore* s) : store_(s) {}
  ~GcGuard();

 private:
  ChunkStore* store_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_CHUNK_STORE_H_
