#include "slingshot/store/chunk_store.h"

#include <db_cxx.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <cstring>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <filesystem>
#include <list>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/base/env.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"

namespace slingshot {
namespace fs = std::filesystem;
namespace {

constexpr uint8_t kValueVersion = 1;
constexpr uint8_t kCodecRaw = 0;
constexpr uint8_t kCodecZstd = 1;
constexpr Magic kStoreMagic = {'S', 'S', 'S', 'T'};
constexpr uint16_t kStoreVersion = 1;
constexpr size_t kMaxObjectSize = 256u << 20;  // a 16 TiB disk's chunk table
constexpr size_t kMaxRefName = 1024;
constexpr int kDeadlockRetries = 20;
// A Berkeley DB checkpoint after this many bytes of logged index records, so
// that old log files can be removed (DB_LOG_AUTO_REMOVE).
constexpr uint64_t kCheckpointEveryBytes = 64ull << 20;

// Pack files (transactional mode): chunk values appended once, fsynced,
// then indexed. See chunk_store.h.
constexpr char kPackMagic[4] = {'S', 'S', 'P', 'K'};
constexpr uint16_t kPackVersion = 1;
constexpr uint64_t kPackHeaderSize = 16;
constexpr uint64_t kPackRollBytes = 1ull << 30;
constexpr uint32_t kLogFileBytes = 8u << 20;  // Berkeley DB log file size
// Blocks allocated past the end of each database file (headroom), so that
// recovery on a full file system writes the pages it must without asking
// the file system for space another program may have taken.
constexpr off_t kDbHeadroomBytes = 4 << 20;
constexpr size_t kEntryHeader = ChunkId::kSize + ChunkStore::kValueHeaderSize;

// Index record of a chunk that lives in a pack, 28 bytes:
//   "SL", u8 version 1, u8 0, u32 pack, u64 offset (of the value), u32 value
//   length, u32 raw length, u32 CRC-32C of the preceding 24 bytes.
constexpr size_t kLocationSize = 28;
struct Location {
  uint32_t pack = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t raw_len = 0;
};

std::array<uint8_t, kLocationSize> EncodeLocation(const Location& l) {
  std::array<uint8_t, kLocationSize> b{};
  b[0] = 'S';
  b[1] = 'L';
  b[2] = 1;
  PutU32(b.data() + 4, l.pack);
  PutU64(b.data() + 8, l.offset);
  PutU32(b.data() + 16, l.length);
  PutU32(b.data() + 20, l.raw_len);
  PutU32(b.data() + 24, crc32c::Value(b.data(), 24));
  return b;
}

bool IsLocation(ByteView v) { return v.size() >= 2 && v[0] == 'S' && v[1] == 'L'; }

Result<Location> DecodeLocation(const ChunkId& id, ByteView v) {
  if (v.size() != kLocationSize || v[2] != 1 || v[3] != 0 || crc32c::Value(v.data(), 24) != GetU32(v.data() + 24)) {
    return Status::Corruption("chunk " + id.ToHex() + ": its index record is damaged");
  }
  Location l{GetU32(v.data() + 4), GetU64(v.data() + 8), GetU32(v.data() + 16), GetU32(v.data() + 20)};
  if (l.length < ChunkStore::kValueHeaderSize || l.length > ChunkStore::kValueHeaderSize + kMaxChunkSize + 1024 ||
      l.offset < kPackHeaderSize + ChunkId::kSize) {
    return Status::Corruption("chunk " + id.ToHex() + ": its index record holds an impossible location");
  }
  return l;
}

std::string PackName(uint32_t n) {
  char b[32];
  std::snprintf(b, sizeof(b), "pack-%08u.dat", n);
  return b;
}

Status DbStatus(int ret, const std::string& what) {
  if (ret == DB_NOTFOUND) return Status::NotFound(what + ": not found");
  if (ret == ENOSPC) return Status::FromErrno(what, ret);
  if (ret == DB_RUNRECOVERY) {
    return Status::Corruption(what + ": Berkeley DB needs recovery (" + db_strerror(ret) +
                              "); reopen the store, which runs recovery");
  }
  return Status::IOError(what + ": " + db_strerror(ret));
}

void DbErrorCallback(const DbEnv*, const char* prefix, const char* msg) {
  std::string m = "berkeley db";
  if (prefix) m += std::string(" ") + prefix;
  m += ": ";
  m += msg;
  LogWarning(m);
}

// A Dbt that Berkeley DB fills with malloc'd memory, freed on destruction.
struct MallocDbt : Dbt {
  MallocDbt() { set_flags(DB_DBT_MALLOC); }
  ~MallocDbt() { free(get_data()); }
  ByteView view() const { return {static_cast<const uint8_t*>(get_data()), get_size()}; }
};

// A Dbt that reads only the first N bytes of a value into its own buffer.
template <size_t N>
struct PrefixDbt : Dbt {
  uint8_t buf[N];
  PrefixDbt() : Dbt(buf, N) {
    set_ulen(N);
    set_flags(DB_DBT_USERMEM | DB_DBT_PARTIAL);
    set_doff(0);
    set_dlen(N);
  }
  ByteView view() const { return {buf, get_size()}; }
};

Dbt KeyDbt(const ChunkId& id) {
  return Dbt(const_cast<uint8_t*>(id.bytes.data()), ChunkId::kSize);
}

}  // namespace

const char* ObjectKindName(ObjectKind k) {
  switch (k) {
    case ObjectKind::kDiskTable: return "disk-table";
    case ObjectKind::kChunkList: return "chunk-list";
    case ObjectKind::kManifest: return "manifest";
    case ObjectKind::kWorkingSet: return "working-set";
  }
  return "unknown";
}

struct ChunkStore::Impl {
  std::string dir;
  ChunkStoreOptions options;
  UniqueFd lock;  // one process at a time: recovery must never run under another
  std::unique_ptr<DbEnv> env;
  std::unique_ptr<Db> chunks, objects, refs;
  std::atomic<uint64_t> bytes_since_checkpoint{0};
  std::atomic<uint64_t> evictions{0};

  // Cache mode: LRU over stored chunks.
  Mutex lru_mu;
  std::list<ChunkId> lru GUARDED_BY(lru_mu);  // front = most recent
  struct LruEntry {
    std::list<ChunkId>::iterator it;
    uint32_t size;
  };
  std::unordered_map<ChunkId, LruEntry, ChunkIdHash> lru_index GUARDED_BY(lru_mu);
  uint64_t lru_bytes GUARDED_BY(lru_mu) = 0;

  // Packs (transactional mode).
  std::string pack_dir;
  Mutex pack_mu;
  std::unique_ptr<WritableFile> active_pack_fd GUARDED_BY(pack_mu);  // null until the first write
  Env* fs() const { return options.env ? options.env : Env::Default(); }
  uint32_t active_pack GUARDED_BY(pack_mu) = 0;
  uint64_t active_size GUARDED_BY(pack_mu) = 0;
  uint32_t max_pack GUARDED_BY(pack_mu) = 0;
  Mutex read_fds_mu;
  std::map<uint32_t, std::shared_ptr<UniqueFd>> read_fds GUARDED_BY(read_fds_mu);

  // Garbage-collection protection.
  mutable Mutex gc_mu;
  int gc_active GUARDED_BY(gc_mu) = 0;
  std::unordered_set<ChunkId, ChunkIdHash> gc_recent GUARDED_BY(gc_mu);

  bool txn() const { return options.mode == Mode::kTransactional; }

  Status ScanPacks() EXCLUDES(pack_mu) {
    MutexLock l(&pack_mu);
    pack_dir = dir + "/packs";
    std::error_code ec;
    fs::create_directories(pack_dir, ec);
    if (ec) return Status::IOError("create " + pack_dir + ": " + ec.message());
    for (const auto& e : fs::directory_iterator(pack_dir, ec)) {
      unsigned n = 0;
      std::string name = e.path().filename().string();
      if (std::sscanf(name.c_str(), "pack-%8u.dat", &n) == 1 && PackName(n) == name) max_pack = std::max(max_pack, n);
    }
    return ec ? Status::IOError("list " + pack_dir + ": " + ec.message()) : Status::OK();
  }

  // A new pack for this process's writes: a pack is never appended to after
  // a restart, so damage from a crash can only sit at the end of a pack.
  Status StartPack() REQUIRES(pack_mu) {
    uint32_t n = max_pack + 1;
    std::string path = pack_dir + "/" + PackName(n);
    auto fd = fs()->NewFile(path, 0644);
    if (!fd.ok()) return fd.status().Annotate("create pack");
    uint8_t h[kPackHeaderSize] = {};
    std::memcpy(h, kPackMagic, 4);
    PutU16(h + 4, kPackVersion);
    PutU32(h + 8, n);
    PutU32(h + 12, crc32c::Value(h, 12));
    Status st = (*fd)->WriteAt(0, ByteView(h, sizeof(h)));
    if (st.ok()) st = (*fd)->Sync();
    if (st.ok()) st = fs()->SyncDir(pack_dir);
    if (!st.ok()) {
      (void)fs()->RemoveFile(path);
      return st;
    }
    max_pack = n;
    active_pack = n;
    active_size = kPackHeaderSize;
    active_pack_fd = std::move(*fd);
    return Status::OK();
  }

  // Appends entries (id + value) to the active pack and makes them durable.
  Status AppendToPack(const std::vector<const EncodedChunk*>& chunks, std::vector<Location>* locs) {
    size_t total = 0;
    for (const auto* c : chunks) total += ChunkId::kSize + c->value.size();
    MutexLock l(&pack_mu);
    if (!active_pack_fd || active_size + total > kPackRollBytes) SLINGSHOT_RETURN_IF_ERROR(StartPack());
    std::vector<ByteView> pieces;
    pieces.reserve(2 * chunks.size());
    locs->clear();
    uint64_t off = active_size;
    for (const auto* c : chunks) {
      pieces.emplace_back(c->id.bytes.data(), ChunkId::kSize);
      pieces.emplace_back(c->value.data(), c->value.size());
      locs->push_back({active_pack, off + ChunkId::kSize, static_cast<uint32_t>(c->value.size()),
                       GetU32(c->value.data() + 4)});
      off += ChunkId::kSize + c->value.size();
    }
    Status st = active_pack_fd->WriteAt(active_size, pieces);
    if (st.ok()) st = active_pack_fd->Sync();
    if (!st.ok()) {
      // Nothing was indexed; the bytes are garbage. Leave this pack behind
      // (after a failed fsync its pages cannot be trusted) and use a new one.
      (void)active_pack_fd->Truncate(active_size);
      active_pack_fd.reset();
      // A pack that holds nothing yet goes (a full disk must not leave one
      // empty pack per try behind).
      if (active_size == kPackHeaderSize) {
        (void)fs()->RemoveFile(pack_dir + "/" + PackName(active_pack));
        (void)fs()->SyncDir(pack_dir);
      }
      return st.Annotate("append to pack");
    }
    active_size += total;
    return Status::OK();
  }

  Result<std::shared_ptr<UniqueFd>> PackReadFd(uint32_t n) {
    MutexLock l(&read_fds_mu);
    auto it = read_fds.find(n);
    if (it != read_fds.end()) return it->second;
    std::string path = pack_dir + "/" + PackName(n);
    auto fd = std::make_shared<UniqueFd>(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd->valid()) {
      int e = errno;
      if (e == ENOENT) return Status::Corruption("pack " + path + " is missing");
      return Status::FromErrno("open " + path, e);
    }
    read_fds[n] = fd;
    return fd;
  }

  void ForgetPack(uint32_t n) {
    MutexLock l(&read_fds_mu);
    read_fds.erase(n);
  }

  // The encoded value of a chunk from its index record (inline or in a pack).
  // A pack value is read together with the id written before it, which must
  // be id: *in_pack says that check was made.
  Result<Bytes> ValueOf(const ChunkId& id, ByteView record, bool* in_pack = nullptr) {
    if (in_pack) *in_pack = false;
    if (!txn() && options.cipher) {
      auto v = options.cipher->Open(record, ByteView(id.bytes.data(), id.bytes.size()));
      if (!v.ok()) return v.status().Annotate("chunk " + id.ToHex() + " in cache " + dir);
      return v;
    }
    if (!IsLocation(record)) return Bytes(record.begin(), record.end());
    SLINGSHOT_ASSIGN_OR_RETURN(Location loc, DecodeLocation(id, record));
    SLINGSHOT_ASSIGN_OR_RETURN(auto fd, PackReadFd(loc.pack));
    if (loc.offset < ChunkId::kSize) return Status::Corruption("chunk " + id.ToHex() + ": its pack offset is inside the pack header");
    Bytes v(ChunkId::kSize + loc.length);
    Status st = PreadExact(fd->get(), v.data(), v.size(), loc.offset - ChunkId::kSize, PackName(loc.pack));
    if (!st.ok()) return st.Annotate("chunk " + id.ToHex());
    if (std::memcmp(v.data(), id.bytes.data(), ChunkId::kSize) != 0) {
      return Status::Corruption("chunk " + id.ToHex() + ": " + PackName(loc.pack) + " holds another chunk where the index points");
    }
    v.erase(v.begin(), v.begin() + ChunkId::kSize);
    if (in_pack) *in_pack = true;
    return v;
  }

  ~Impl() { Close(); }

  void Close() {
    if (env && txn()) env->txn_checkpoint(0, 0, 0);
    for (auto* db : {&chunks, &objects, &refs}) {
      if (*db) (*db)->close(0);
      db->reset();
    }
    if (env) env->close(0);
    env.reset();
  }

  Status OpenDb(std::unique_ptr<Db>* out, const char* file, uint32_t pagesize) {
    auto db = std::make_unique<Db>(env.get(), DB_CXX_NO_EXCEPTIONS);
    if (pagesize) db->set_pagesize(pagesize);
    uint32_t flags = DB_CREATE | DB_THREAD | (txn() ? DB_AUTO_COMMIT : 0);
    int ret = db->open(nullptr, file, nullptr, DB_BTREE, flags, 0644);
    if (ret != 0) {
      db->close(0);
      return DbStatus(ret, "open " + dir + "/" + file);
    }
    *out = std::move(db);
    return Status::OK();
  }

  // Headroom for recovery, inside the store's own files (transactional
  // mode): every block of each database file up to its end plus
  // kDbHeadroomBytes, and of the newest log file up to its full size, is
  // allocated now (FALLOC_FL_KEEP_SIZE: sizes do not change, holes are
  // filled), so a recovery that must flush pages and append to the log on
  // a file system another program has filled finds its blocks already
  // there. New log files are zeroed whole when made (DB_LOG_ZERO). Done
  // at open and at each Checkpoint(); false (and said once per open) if
  // the file system has no room for it now.
  bool Headroom() {
    if (!txn()) return true;
    std::vector<std::pair<std::string, off_t>> files;  // path, the end to allocate to
    std::string newest_log;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.size() > 3 && name.substr(name.size() - 3) == ".db") files.emplace_back(e.path().string(), -1);
      if (name.rfind("log.", 0) == 0 && name > fs::path(newest_log).filename().string()) newest_log = e.path().string();
    }
    if (!newest_log.empty()) files.emplace_back(newest_log, off_t{kLogFileBytes});
    bool ok = true;
    for (const auto& [path, end] : files) {
      UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      struct stat st;
      if (!fd.valid() || ::fstat(fd.get(), &st) != 0) continue;
      const off_t want = end >= 0 ? std::max(end, st.st_size) : st.st_size + kDbHeadroomBytes;
      if (::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, want) != 0) {
        if (errno == EOPNOTSUPP) return true;  // a file system without it: the reserve alone
        if (!headroom_warned) {
          LogWarning("chunk store " + dir + ": no room for recovery headroom in " + path + " (" +
                     std::strerror(errno) + "); free space on its file system");
          headroom_warned = true;
        }
        ok = false;
      }
    }
    if (ok) headroom_warned = false;
    return ok;
  }
  Mutex headroom_mu;  // one Headroom() at a time after open
  bool headroom_warned = false;

  // A page write cut short (a full disk) leaves a database file whose size
  // is not a multiple of its page size, and recovery then cannot write that
  // page. The partial page was never complete, so nothing of it counts:
  // recovery writes it again from the log. Cut it off.
  static void CutPartialPage(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    struct stat st;
    uint8_t meta[24];
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || ::pread(fd.get(), meta, sizeof(meta), 0) != sizeof(meta)) return;
    uint32_t page;
    std::memcpy(&page, meta + 20, 4);  // DBMETA's pagesize, in the host's byte order
    if (page < 512 || page > 65536 || (page & (page - 1)) != 0) return;
    const off_t whole = st.st_size - st.st_size % static_cast<off_t>(page);
    if (whole == st.st_size || whole == 0) return;
    LogWarning("database " + path + " ends in a partial page (" + std::to_string(st.st_size - whole) +
               " bytes, a write cut short by a full disk?); cutting it: recovery writes it again from the log");
    if (::ftruncate(fd.get(), whole) != 0 || ::fsync(fd.get()) != 0) {
      LogWarning("cut " + path + ": " + std::strerror(errno));
    }
  }

  Status OpenEnv() {
    env = std::make_unique<DbEnv>(DB_CXX_NO_EXCEPTIONS);
    env->set_errcall(DbErrorCallback);
    env->set_errpfx(dir.c_str());
    uint64_t cache = std::max<uint64_t>(options.db_cache_bytes, 8ull << 20);
    env->set_cachesize(static_cast<uint32_t>(cache >> 30), static_cast<uint32_t>(cache & ((1u << 30) - 1)), 1);
    uint32_t flags = DB_CREATE | DB_THREAD | DB_INIT_MPOOL;
    if (txn()) {
      // Log files are allocated whole when they are made: small ones (the
      // log holds index records and objects, the chunks are in packs) keep
      // a full disk's needs small. kLogFileBytes * 2 fits in the reserve.
      env->set_lg_bsize(kLogFileBytes / 4);
      env->set_lg_max(kLogFileBytes);
      env->set_lk_detect(DB_LOCK_DEFAULT);
      env->log_set_config(DB_LOG_AUTO_REMOVE, 1);
      env->log_set_config(DB_LOG_ZERO, 1);
      // Regions in this process's memory (DB_PRIVATE; the directory lock
      // makes this the only process): no region file is mapped, so a full
      // disk cannot fault a write through a mapping (SIGBUS) and damaged
      // region files cannot crash the open. Region files hold nothing
      // durable: any left by an older version go, and recovery rebuilds the
      // state from the databases and the log.
      flags |= DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_RECOVER | DB_PRIVATE;
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        if (name.size() > 5 && name.rfind("__db.", 0) == 0 &&
            name.find_first_not_of("0123456789", 5) == std::string::npos) {
          fs::remove(e.path(), ec);
        } else if (name.size() > 3 && name.substr(name.size() - 3) == ".db") {
          CutPartialPage(e.path().string());
        }
      }
    } else {
      flags |= DB_INIT_CDB | DB_PRIVATE;
    }
    int ret = env->open(dir.c_str(), flags, 0644);
    if (ret != 0) {
      env->close(0);
      env.reset();
      if (ret == DB_RUNRECOVERY && txn()) {
        // Recovery itself failed: reopening would fail the same way.
        return Status::Corruption(
            "Berkeley DB could not recover the store in " + dir + " (" + db_strerror(ret) +
            "): its file system is full, or its log (log.*) is damaged. Nothing was changed. If the disk is full, "
            "free space on it and start again; otherwise restore " + dir + " from a copy, or make a new store and "
            "`slingshot-home bundle import` a bundle of it");
      }
      return DbStatus(ret, "open Berkeley DB environment " + dir);
    }
    // 16 KiB pages: a 64 KiB chunk spills into few overflow pages with little slack.
    SLINGSHOT_RETURN_IF_ERROR(OpenDb(&chunks, "chunks.db", 16384));
    SLINGSHOT_RETURN_IF_ERROR(OpenDb(&objects, "objects.db", 16384));
    SLINGSHOT_RETURN_IF_ERROR(OpenDb(&refs, "refs.db", 0));
    return Status::OK();
  }

  // Runs fn(txn) in a transaction (transactional mode) with deadlock retry,
  // or directly (cache mode). fn returns a Berkeley DB code.
  Status RunWrite(const std::string& what, const std::function<int(DbTxn*)>& fn) {
    if (!txn()) {
      int ret = fn(nullptr);
      return ret == 0 ? Status::OK() : DbStatus(ret, what);
    }
    for (int attempt = 0;; ++attempt) {
      DbTxn* t = nullptr;
      int ret = env->txn_begin(nullptr, &t, 0);
      if (ret != 0) return DbStatus(ret, what + ": begin transaction");
      ret = fn(t);
      if (ret == 0) {
        ret = t->commit(0);  // synchronous: the log is on disk when this returns
        if (ret == 0) return Status::OK();
        return DbStatus(ret, what + ": commit");
      }
      t->abort();
      if ((ret == DB_LOCK_DEADLOCK || ret == DB_LOCK_NOTGRANTED) && attempt < kDeadlockRetries) continue;
      return DbStatus(ret, what);
    }
  }

  void Remember(const ChunkId& id) {
    MutexLock l(&gc_mu);
    if (gc_active > 0) gc_recent.insert(id);
  }

  void MaybeCheckpoint(uint64_t bytes) {
    if (!txn()) return;
    if (bytes_since_checkpoint.fetch_add(bytes) + bytes >= kCheckpointEveryBytes) {
      bytes_since_checkpoint = 0;
      int ret = env->txn_checkpoint(0, 0, 0);
      if (ret != 0) LogWarning("chunk store checkpoint failed: " + std::string(db_strerror(ret)));
    }
  }

  // Cache mode bookkeeping.
  void LruTouch(const ChunkId& id) {
    MutexLock l(&lru_mu);
    auto it = lru_index.find(id);
    if (it != lru_index.end()) lru.splice(lru.begin(), lru, it->second.it);
  }
  void LruInsert(const ChunkId& id, uint32_t size) {
    MutexLock l(&lru_mu);
    if (lru_index.count(id)) return;
    lru.push_front(id);
    lru_index[id] = {lru.begin(), size};
    lru_bytes += size;
  }
  void LruErase(const ChunkId& id) {
    MutexLock l(&lru_mu);
    auto it = lru_index.find(id);
    if (it == lru_index.end()) return;
    lru_bytes -= it->second.size;
    lru.erase(it->second.it);
    lru_index.erase(it);
  }
  void EvictOverBudget() {
    uint64_t budget = options.cache_budget_bytes;
    if (txn() || budget == 0) return;
    MutexLock l(&lru_mu);
    while (lru_bytes > budget && !lru.empty()) {
      ChunkId victim = lru.back();
      Dbt key = KeyDbt(victim);
      int ret = chunks->del(nullptr, &key, 0);
      if (ret != 0 && ret != DB_NOTFOUND) {
        LogWarning("cache eviction of " + victim.Short() + " failed: " + db_strerror(ret));
        break;
      }
      auto it = lru_index.find(victim);
      lru_bytes -= it->second.size;
      lru_index.erase(it);
      lru.pop_back();
      ++evictions;
    }
  }

  // Rebuilds the LRU index from the database (in key order: the recency of a
  // previous run is not kept, a cache has no hard state).
  Status LoadLru() {
    Dbc* cur = nullptr;
    int ret = chunks->cursor(nullptr, &cur, 0);
    if (ret != 0) return DbStatus(ret, "scan cache " + dir);
    uint8_t kbuf[ChunkId::kSize];
    Dbt key(kbuf, sizeof(kbuf));
    key.set_ulen(sizeof(kbuf));
    key.set_flags(DB_DBT_USERMEM);
    PrefixDbt<kValueHeaderSize> data;
    const uint8_t* hdr = data.buf;
    while ((ret = cur->get(&key, &data, DB_NEXT)) == 0) {
      if (key.get_size() != ChunkId::kSize) continue;
      ChunkId id;
      std::memcpy(id.bytes.data(), kbuf, ChunkId::kSize);
      uint32_t size = data.get_size() == kValueHeaderSize
                          ? static_cast<uint32_t>(kValueHeaderSize + GetU32(hdr + 8))
                          : static_cast<uint32_t>(kValueHeaderSize);
      LruInsert(id, size);
    }
    cur->close();
    return ret == DB_NOTFOUND ? Status::OK() : DbStatus(ret, "scan cache " + dir);
  }
};

ChunkStore::ChunkStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChunkStore::~ChunkStore() = default;

Result<std::unique_ptr<ChunkStore>> ChunkStore::Open(const std::string& dir,
                                                     const ChunkStoreOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->options = options;
  const std::string marker = dir + "/STORE";
  const uint8_t want_mode = options.mode == Mode::kTransactional ? 1 : 2;
  auto existing = ReadFileBounded(marker, 4096);
  if (existing.ok()) {
    SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f,
                               OpenFrame(*existing, kStoreMagic, kStoreVersion, 64, marker));
    Decoder d(f.body, marker);
    uint8_t mode = d.U8();
    SLINGSHOT_RETURN_IF_ERROR(d.Finish(false));
    if (mode != want_mode) {
      return Status::InvalidArgument(dir + " holds a " + (mode == 1 ? "transactional" : "cache") +
                                     " store; open it in that mode");
    }
  } else if (existing.status().IsNotFound()) {
    if (!options.create_if_missing) {
      return Status::NotFound("no chunk store in " + dir +
                              " (create one with `slingshot-home store init`)");
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Status::IOError("create " + dir + ": " + ec.message());
    Bytes body{want_mode};
    SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(marker, SealFrame(kStoreMagic, kStoreVersion, body)));
  } else {
    return existing.status();
  }

  SLINGSHOT_ASSIGN_OR_RETURN(impl->lock, LockDirectory(dir, "chunk store"));
  Status st = impl->OpenEnv();
  if (!st.ok() && options.mode == Mode::kCache) {
    // A cache holds nothing that cannot be fetched again: start it afresh.
    LogWarning("chunk cache " + dir + " could not be opened (" + st.ToString() +
               "); recreating it empty");
    impl->Close();
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().filename() != "STORE" && e.path().filename() != "LOCK") fs::remove_all(e.path(), ec);
    }
    st = impl->OpenEnv();
  }
  const std::string reserve = dir + "/RESERVE";
  if (!st.ok() && options.mode == Mode::kTransactional && fs::exists(reserve)) {
    impl->Close();
    std::error_code ec;
    fs::remove(reserve, ec);
    LogWarning("chunk store " + dir + " did not open (" + st.message() +
               "); released its reserve for recovery and trying again. The file system is probably full: free "
               "space on it; the reserve is made again at the next open with room");
    st = impl->OpenEnv();
  }
  if (!st.ok()) return st;
  impl->Headroom();
  if (options.mode == Mode::kTransactional && options.reserve_bytes > 0) {
    // Allocated even when it exists: a copy (cp, rsync, a restore from
    // backup) makes the reserve a hole that holds no space.
    UniqueFd fd(::open(reserve.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    int err = fd.valid() ? ::posix_fallocate(fd.get(), 0, static_cast<off_t>(options.reserve_bytes)) : errno;
    if (err != 0) {
      fd.Reset();
      std::error_code ec;
      fs::remove(reserve, ec);
      LogWarning("chunk store " + dir + ": no room for its " + HumanBytes(options.reserve_bytes) +
                 " reserve (" + std::strerror(err) + "): free space, or a full disk may keep it from opening");
    } else if (::fsync(fd.get()) != 0) {
      LogWarning("chunk store " + dir + ": sync of its reserve failed: " + std::strerror(errno));
    }
  }
  if (options.mode == Mode::kTransactional) SLINGSHOT_RETURN_IF_ERROR(impl->ScanPacks());
  if (options.mode == Mode::kCache) {
    SLINGSHOT_RETURN_IF_ERROR(impl->LoadLru());
    impl->EvictOverBudget();
  }
  return std::unique_ptr<ChunkStore>(new ChunkStore(std::move(impl)));
}

Bytes ChunkStore::EncodeValue(ByteView raw, int compression_level) {
  Bytes out(kValueHeaderSize + ZSTD_compressBound(raw.size()));
  uint8_t codec = kCodecZstd;
  size_t n = ZSTD_compress(out.data() + kValueHeaderSize, out.size() - kValueHeaderSize,
                           raw.data(), raw.size(), compression_level);
  if (ZSTD_isError(n) || n >= raw.size()) {  // incompressible: keep it raw
    codec = kCodecRaw;
    n = raw.size();
    std::memcpy(out.data() + kValueHeaderSize, raw.data(), n);
  }
  out.resize(kValueHeaderSize + n);
  uint8_t* h = out.data();
  h[0] = 'S';
  h[1] = 'C';
  h[2] = kValueVersion;
  h[3] = codec;
  PutU32(h + 4, static_cast<uint32_t>(raw.size()));
  PutU32(h + 8, static_cast<uint32_t>(n));
  uint32_t crc = crc32c::Value(h, 12);
  crc = crc32c::Extend(crc, h + kValueHeaderSize, n);
  PutU32(h + 12, crc);
  return out;
}

Result<Bytes> ChunkStore::DecodeValue(const ChunkId& id, ByteView v) { return DecodeValueImpl(id, v, true); }

Result<Bytes> ChunkStore::DecodeValueImpl(const ChunkId& id, ByteView v, bool check_hash) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("chunk " + id.ToHex() + ": " + why);
  };
  if (v.size() < kValueHeaderSize) return bad("stored value is " + std::to_string(v.size()) + " bytes, shorter than its header");
  if (v[0] != 'S' || v[1] != 'C') return bad("stored value has a bad magic");
  if (v[2] != kValueVersion) return bad("stored value has unknown version " + std::to_string(v[2]));
  uint8_t codec = v[3];
  uint32_t raw_len = GetU32(v.data() + 4), data_len = GetU32(v.data() + 8);
  if (raw_len > kMaxChunkSize) return bad("raw length " + std::to_string(raw_len) + " exceeds the chunk size limit");
  if (data_len != v.size() - kValueHeaderSize) return bad("payload length field " + std::to_string(data_len) + " disagrees with the stored " + std::to_string(v.size() - kValueHeaderSize) + " bytes");
  uint32_t crc = crc32c::Extend(crc32c::Value(v.data(), 12), v.data() + kValueHeaderSize, data_len);
  if (crc != GetU32(v.data() + 12)) return bad("checksum mismatch in the stored value");
  Bytes raw(raw_len);
  ByteView payload = v.subspan(kValueHeaderSize);
  if (codec == kCodecRaw) {
    if (data_len != raw_len) return bad("raw chunk length mismatch");
    std::memcpy(raw.data(), payload.data(), raw_len);
  } else if (codec == kCodecZstd) {
    unsigned long long content = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (content != raw_len) return bad("compressed frame declares " + std::to_string(content) + " bytes, header says " + std::to_string(raw_len));
    size_t n = ZSTD_decompress(raw.data(), raw.size(), payload.data(), payload.size());
    if (ZSTD_isError(n)) return bad(std::string("zstd: ") + ZSTD_getErrorName(n));
    if (n != raw_len) return bad("decompressed to " + std::to_string(n) + " bytes, expected " + std::to_string(raw_len));
  } else {
    return bad("unknown codec " + std::to_string(codec));
  }
  if (check_hash && ChunkId::Of(raw) != id) return bad("content does not hash to its id");
  return raw;
}

Result<ChunkId> ChunkStore::Put(ByteView raw) {
  if (raw.size() > kMaxChunkSize) return Status::InvalidArgument("chunk of " + std::to_string(raw.size()) + " bytes exceeds the limit");
  EncodedChunk c{ChunkId::Of(raw), EncodeValue(raw, impl_->options.compression_level)};
  SLINGSHOT_RETURN_IF_ERROR(PutEncoded(std::span<const EncodedChunk>(&c, 1)));
  return c.id;
}

Status ChunkStore::PutBatch(std::span<const ByteView> raws, std::vector<ChunkId>* ids) {
  std::vector<EncodedChunk> enc;
  enc.reserve(raws.size());
  for (ByteView r : raws) {
    if (r.size() > kMaxChunkSize) return Status::InvalidArgument("chunk of " + std::to_string(r.size()) + " bytes exceeds the limit");
    enc.push_back({ChunkId::Of(r), EncodeValue(r, impl_->options.compression_level)});
  }
  SLINGSHOT_RETURN_IF_ERROR(PutEncoded(enc));
  if (ids) {
    ids->clear();
    for (auto& e : enc) ids->push_back(e.id);
  }
  return Status::OK();
}

Status ChunkStore::PutEncoded(std::span<const EncodedChunk> chunks) {
  if (chunks.empty()) return Status::OK();
  if (impl_->txn()) return PutToPacks(chunks);
  std::vector<uint8_t> inserted(chunks.size(), 0);
  Status st = impl_->RunWrite("store " + std::to_string(chunks.size()) + " chunks in " + impl_->dir, [&](DbTxn* t) {
    for (size_t i = 0; i < chunks.size(); ++i) {
      Dbt key = KeyDbt(chunks[i].id);
      Bytes sealed;
      ByteView stored = chunks[i].value;
      if (impl_->options.cipher) {
        sealed = impl_->options.cipher->Seal(stored, ByteView(chunks[i].id.bytes.data(), chunks[i].id.bytes.size()));
        stored = sealed;
      }
      Dbt data(const_cast<uint8_t*>(stored.data()), static_cast<uint32_t>(stored.size()));
      int ret = impl_->chunks->put(t, &key, &data, DB_NOOVERWRITE);
      if (ret == DB_KEYEXIST) continue;
      if (ret != 0) return ret;
      inserted[i] = 1;
    }
    return 0;
  });
  if (!st.ok()) return st;
  for (size_t i = 0; i < chunks.size(); ++i) {
    impl_->Remember(chunks[i].id);
    if (inserted[i]) impl_->LruInsert(chunks[i].id, static_cast<uint32_t>(chunks[i].value.size()));
  }
  impl_->EvictOverBudget();
  return Status::OK();
}

// Transactional mode: values go to a pack (written once, fsynced), then the
// index entries are committed in one transaction. A crash between the two
// leaves unindexed bytes in a pack: garbage, never a dangling index entry.
Status ChunkStore::PutToPacks(std::span<const EncodedChunk> chunks) {
  std::vector<const EncodedChunk*> fresh;
  std::unordered_set<ChunkId, ChunkIdHash> batch;
  for (const auto& c : chunks) {
    if (!batch.insert(c.id).second) continue;
    SLINGSHOT_ASSIGN_OR_RETURN(bool has, Contains(c.id));
    if (!has) fresh.push_back(&c);
  }
  for (const auto& c : chunks) impl_->Remember(c.id);
  if (fresh.empty()) return Status::OK();
  std::vector<Location> locs;
  SLINGSHOT_RETURN_IF_ERROR(impl_->AppendToPack(fresh, &locs));
  SLINGSHOT_RETURN_IF_ERROR(impl_->RunWrite("index " + std::to_string(fresh.size()) + " chunks in " + impl_->dir, [&](DbTxn* t) {
    for (size_t i = 0; i < fresh.size(); ++i) {
      Dbt key = KeyDbt(fresh[i]->id);
      auto rec = EncodeLocation(locs[i]);
      Dbt data(rec.data(), kLocationSize);
      int ret = impl_->chunks->put(t, &key, &data, DB_NOOVERWRITE);
      if (ret != 0 && ret != DB_KEYEXIST) return ret;  // a concurrent put won: our copy is garbage
    }
    return 0;
  }));
  impl_->MaybeCheckpoint(locs.size() * (kLocationSize + 64));
  return Status::OK();
}

Result<Bytes> ChunkStore::Get(const ChunkId& id) {
  bool in_pack = false;
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes value, GetValue(id, &in_pack));
  // A pack value whose recorded id matched and whose CRC checks was hashed
  // when it was stored; VerifyAll re-hashes it. An inline value is hashed on
  // every read.
  return DecodeValueImpl(id, value, !in_pack);
}

Result<Bytes> ChunkStore::GetEncoded(const ChunkId& id) { return GetValue(id, nullptr); }

Result<Bytes> ChunkStore::GetValue(const ChunkId& id, bool* in_pack) {
  Dbt key = KeyDbt(id);
  MallocDbt data;
  int ret = impl_->chunks->get(nullptr, &key, &data, 0);
  if (ret == DB_NOTFOUND) return Status::NotFound("chunk " + id.ToHex() + " is not in " + Describe());
  if (ret != 0) return DbStatus(ret, "read chunk " + id.Short() + " from " + impl_->dir);
  if (!impl_->txn()) impl_->LruTouch(id);
  return impl_->ValueOf(id, data.view(), in_pack);
}

Result<bool> ChunkStore::Contains(const ChunkId& id) {
  Dbt key = KeyDbt(id);
  int ret = impl_->chunks->exists(nullptr, &key, 0);
  if (ret == 0) return true;
  if (ret == DB_NOTFOUND) return false;
  return DbStatus(ret, "look up chunk " + id.Short());
}

Status ChunkStore::Delete(std::span<const ChunkId> ids) {
  if (ids.empty()) return Status::OK();
  Status st = impl_->RunWrite("delete chunks from " + impl_->dir, [&](DbTxn* t) {
    for (const auto& id : ids) {
      Dbt key = KeyDbt(id);
      int ret = impl_->chunks->del(t, &key, 0);
      if (ret != 0 && ret != DB_NOTFOUND) return ret;
    }
    return 0;
  });
  if (st.ok() && !impl_->txn()) {
    for (const auto& id : ids) impl_->LruErase(id);
  }
  return st;
}

namespace {
// Iterates keys of db (values not read); keys must be 32-byte ids.
Status ForEachKeyId(Db* db, const std::string& what, const std::function<bool(const ChunkId&)>& fn) {
  Dbc* cur = nullptr;
  int ret = db->cursor(nullptr, &cur, 0);
  if (ret != 0) return DbStatus(ret, what);
  uint8_t kbuf[ChunkId::kSize];
  Dbt key(kbuf, sizeof(kbuf));
  key.set_ulen(sizeof(kbuf));
  key.set_flags(DB_DBT_USERMEM);
  Dbt data;
  data.set_flags(DB_DBT_USERMEM | DB_DBT_PARTIAL);
  data.set_dlen(0);
  data.set_ulen(0);
  Status st;
  while ((ret = cur->get(&key, &data, DB_NEXT)) == 0) {
    if (key.get_size() != ChunkId::kSize) {
      st = Status::Corruption(what + ": a key of " + std::to_string(key.get_size()) + " bytes is not a chunk id");
      break;
    }
    ChunkId id;
    std::memcpy(id.bytes.data(), kbuf, ChunkId::kSize);
    if (!fn(id)) break;
  }
  cur->close();
  if (!st.ok()) return st;
  if (ret != 0 && ret != DB_NOTFOUND) return DbStatus(ret, what);
  return Status::OK();
}
}  // namespace

Status ChunkStore::ForEachChunk(const std::function<bool(const ChunkId&)>& fn) {
  return ForEachKeyId(impl_->chunks.get(), "scan chunks of " + impl_->dir, fn);
}

Result<uint64_t> ChunkStore::VerifyAll(const std::function<void(const ChunkId&, const Status&)>& bad) {
  std::vector<ChunkId> ids;
  SLINGSHOT_RETURN_IF_ERROR(ForEachChunk([&](const ChunkId& id) { ids.push_back(id); return true; }));
  for (const auto& id : ids) {
    auto v = GetEncoded(id);
    Result<Bytes> r = v.ok() ? DecodeValue(id, *v) : Result<Bytes>(v.status());
    if (!r.ok() && !r.status().IsNotFound()) bad(id, r.status());
  }
  return static_cast<uint64_t>(ids.size());
}

Result<ChunkId> ChunkStore::PutObject(ByteView bytes) {
  if (bytes.size() > kMaxObjectSize) return Status::InvalidArgument("object of " + std::to_string(bytes.size()) + " bytes exceeds the limit");
  ChunkId id = ChunkId::Of(bytes);
  Status st = impl_->RunWrite("store object " + id.Short(), [&](DbTxn* t) {
    Dbt key = KeyDbt(id);
    Dbt data(const_cast<uint8_t*>(bytes.data()), static_cast<uint32_t>(bytes.size()));
    int ret = impl_->objects->put(t, &key, &data, DB_NOOVERWRITE);
    return ret == DB_KEYEXIST ? 0 : ret;
  });
  if (!st.ok()) return st;
  impl_->Remember(id);
  return id;
}

Result<Bytes> ChunkStore::GetObject(const ChunkId& id) {
  Dbt key = KeyDbt(id);
  MallocDbt data;
  int ret = impl_->objects->get(nullptr, &key, &data, 0);
  if (ret == DB_NOTFOUND) return Status::NotFound("object " + id.ToHex() + " is not in " + Describe());
  if (ret != 0) return DbStatus(ret, "read object " + id.Short());
  if (data.get_size() > kMaxObjectSize) return Status::Corruption("object " + id.ToHex() + " is larger than any object may be");
  if (ChunkId::Of(data.view()) != id) return Status::Corruption("object " + id.ToHex() + " does not hash to its id (damaged)");
  return Bytes(data.view().begin(), data.view().end());
}

Status ChunkStore::DeleteObjects(std::span<const ChunkId> ids) {
  return impl_->RunWrite("delete objects", [&](DbTxn* t) {
    for (const auto& id : ids) {
      Dbt key = KeyDbt(id);
      int ret = impl_->objects->del(t, &key, 0);
      if (ret != 0 && ret != DB_NOTFOUND) return ret;
    }
    return 0;
  });
}

Status ChunkStore::ForEachObject(const std::function<bool(const ChunkId&)>& fn) {
  return ForEachKeyId(impl_->objects.get(), "scan objects of " + impl_->dir, fn);
}

Status ChunkStore::SetRef(const Ref& ref) {
  if (ref.name.empty() || ref.name.size() > kMaxRefName) return Status::InvalidArgument("ref name must be 1.." + std::to_string(kMaxRefName) + " bytes");
  std::array<uint8_t, 1 + ChunkId::kSize> v;
  v[0] = static_cast<uint8_t>(ref.kind);
  std::memcpy(v.data() + 1, ref.object.bytes.data(), ChunkId::kSize);
  return impl_->RunWrite("set ref " + ref.name, [&](DbTxn* t) {
    Dbt key(const_cast<char*>(ref.name.data()), static_cast<uint32_t>(ref.name.size()));
    Dbt data(v.data(), static_cast<uint32_t>(v.size()));
    return impl_->refs->put(t, &key, &data, 0);
  });
}

namespace {
Result<Ref> DecodeRef(std::string name, ByteView v) {
  if (v.size() != 1 + ChunkId::kSize || v[0] < 1 || v[0] > 4) return Status::Corruption("ref " + name + " is damaged");
  Ref r{std::move(name), static_cast<ObjectKind>(v[0]), {}};
  std::memcpy(r.object.bytes.data(), v.data() + 1, ChunkId::kSize);
  return r;
}
}  // namespace

Result<Ref> ChunkStore::GetRef(const std::string& name) {
  Dbt key(const_cast<char*>(name.data()), static_cast<uint32_t>(name.size()));
  MallocDbt data;
  int ret = impl_->refs->get(nullptr, &key, &data, 0);
  if (ret == DB_NOTFOUND) return Status::NotFound("no ref named '" + name + "' in " + impl_->dir);
  if (ret != 0) return DbStatus(ret, "read ref " + name);
  return DecodeRef(name, data.view());
}

Status ChunkStore::DeleteRef(const std::string& name) {
  return impl_->RunWrite("delete ref " + name, [&](DbTxn* t) {
    Dbt key(const_cast<char*>(name.data()), static_cast<uint32_t>(name.size()));
    int ret = impl_->refs->del(t, &key, 0);
    return ret == DB_NOTFOUND ? 0 : ret;
  });
}

Result<std::vector<Ref>> ChunkStore::ListRefs() {
  Dbc* cur = nullptr;
  int ret = impl_->refs->cursor(nullptr, &cur, 0);
  if (ret != 0) return DbStatus(ret, "list refs");
  std::vector<Ref> out;
  MallocDbt key, data;
  Status st;
  key.set_flags(DB_DBT_REALLOC);
  data.set_flags(DB_DBT_REALLOC);
  while ((ret = cur->get(&key, &data, DB_NEXT)) == 0) {
    std::string name(static_cast<const char*>(key.get_data()), key.get_size());
    auto r = DecodeRef(name, data.view());
    if (!r.ok()) { st = r.status(); break; }
    out.push_back(std::move(r).value());
  }
  cur->close();
  if (!st.ok()) return st;
  if (ret != 0 && ret != DB_NOTFOUND) return DbStatus(ret, "list refs");
  return out;
}

Result<ChunkStore::ChunkSize> ChunkStore::SizeOf(const ChunkId& id) {
  Dbt key = KeyDbt(id);
  PrefixDbt<kLocationSize> d;
  const uint8_t* hdr = d.buf;
  int ret = impl_->chunks->get(nullptr, &key, &d, 0);
  if (ret == DB_NOTFOUND) return Status::NotFound("chunk " + id.ToHex() + " is not in " + impl_->dir);
  if (ret != 0) return DbStatus(ret, "read chunk header");
  ChunkSize size;
  ByteView rec = d.view();
  if (IsLocation(rec)) {
    SLINGSHOT_ASSIGN_OR_RETURN(Location loc, DecodeLocation(id, rec));
    size.raw = loc.raw_len;
    size.stored = loc.length;
    size.in_pack = true;
  } else if (d.get_size() >= kValueHeaderSize) {
    size.raw = GetU32(hdr + 4);
    size.stored = kValueHeaderSize + GetU32(hdr + 8);
  }
  return size;
}

Result<ChunkStoreStats> ChunkStore::Stats() {
  ChunkStoreStats s;
  std::vector<ChunkId> ids;
  SLINGSHOT_RETURN_IF_ERROR(ForEachChunk([&](const ChunkId& id) { ids.push_back(id); return true; }));
  for (const auto& id : ids) {
    auto size = SizeOf(id);
    if (size.status().IsNotFound()) continue;  // deleted since the scan
    SLINGSHOT_RETURN_IF_ERROR(size.status());
    ++s.chunks;
    s.raw_bytes += size->raw;
    s.stored_bytes += size->stored;
    if (size->in_pack) s.pack_live_bytes += ChunkId::kSize + size->stored;
  }
  SLINGSHOT_RETURN_IF_ERROR(ForEachObject([&](const ChunkId&) { ++s.objects; return true; }));
  SLINGSHOT_ASSIGN_OR_RETURN(auto refs, ListRefs());
  s.refs = refs.size();
  if (impl_->txn()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(impl_->pack_dir, ec)) {
      ++s.packs;
      s.pack_file_bytes += e.file_size(ec);
    }
  }
  s.evictions = impl_->evictions;
  return s;
}

Result<CompactStats> ChunkStore::CompactPacks(double min_garbage_ratio) {
  CompactStats cs;
  if (!impl_->txn()) return cs;
  // Live entries per pack, from the index.
  struct PackUse {
    uint64_t live_bytes = 0;
    uint64_t live_entries = 0;
  };
  std::map<uint32_t, PackUse> use;
  {
    Dbc* cur = nullptr;
    int ret = impl_->chunks->cursor(nullptr, &cur, 0);
    if (ret != 0) return DbStatus(ret, "scan index");
    MallocDbt key, data;
    key.set_flags(DB_DBT_REALLOC);
    data.set_flags(DB_DBT_REALLOC);
    Status st;
    while ((ret = cur->get(&key, &data, DB_NEXT)) == 0) {
      if (!IsLocation(data.view()) || key.get_size() != ChunkId::kSize) continue;
      ChunkId id;
      std::memcpy(id.bytes.data(), key.get_data(), ChunkId::kSize);
      auto loc = DecodeLocation(id, data.view());
      if (!loc.ok()) { st = loc.status(); break; }
      use[loc->pack].live_bytes += ChunkId::kSize + loc->length;
      ++use[loc->pack].live_entries;
    }
    cur->close();
    if (!st.ok()) return st.Annotate("compaction stopped before changing anything");
    if (ret != DB_NOTFOUND) return DbStatus(ret, "scan index");
  }
  uint32_t active;
  {
    MutexLock l(&impl_->pack_mu);
    // The pack being appended to is sealed (the next append starts a new
    // one) once at least half of it is garbage, so it is compacted too: a
    // store that deletes as fast as it adds never fills one pack with the
    // dead for a whole roll size.
    if (impl_->active_pack_fd) {
      const uint64_t size = impl_->active_size;
      const uint64_t live = use[impl_->active_pack].live_bytes;
      const uint64_t garbage = size > kPackHeaderSize + live ? size - kPackHeaderSize - live : 0;
      if (static_cast<double>(garbage) >= std::max(0.5, min_garbage_ratio) * static_cast<double>(size)) {
        impl_->active_pack_fd.reset();
      }
    }
    active = impl_->active_pack_fd ? impl_->active_pack : 0;
  }
  std::vector<std::pair<uint32_t, uint64_t>> packs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(impl_->pack_dir, ec)) {
    unsigned n = 0;
    std::string name = e.path().filename().string();
    if (std::sscanf(name.c_str(), "pack-%8u.dat", &n) == 1 && PackName(n) == name && n != active) {
      packs.emplace_back(n, e.file_size(ec));
    }
  }
  std::sort(packs.begin(), packs.end());
  for (auto [n, size] : packs) {
    const PackUse u = use[n];
    const uint64_t garbage = size > kPackHeaderSize + u.live_bytes ? size - kPackHeaderSize - u.live_bytes : 0;
    const bool small = size < kPackRollBytes / 16 && packs.size() > 1;
    if (u.live_entries > 0 && !small && static_cast<double>(garbage) < min_garbage_ratio * static_cast<double>(size)) continue;
    const std::string path = impl_->pack_dir + "/" + PackName(n);
    // Copy the live entries (those the index still points at) to the active pack.
    uint64_t moved = 0;
    if (u.live_entries > 0) {
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd.valid()) return Status::FromErrno("open " + path, errno);
      std::vector<EncodedChunk> batch;
      std::vector<Location> old_locs;
      size_t batch_bytes = 0;
      auto relocate = [&]() -> Status {
        if (batch.empty()) return Status::OK();
        std::vector<const EncodedChunk*> ptrs;
        for (auto& c : batch) ptrs.push_back(&c);
        std::vector<Location> locs;
        SLINGSHOT_RETURN_IF_ERROR(impl_->AppendToPack(ptrs, &locs));
        SLINGSHOT_RETURN_IF_ERROR(impl_->RunWrite("relocate chunks from " + path, [&](DbTxn* t) {
          for (size_t i = 0; i < batch.size(); ++i) {
            Dbt key = KeyDbt(batch[i].id);
            MallocDbt cur;
            int ret = impl_->chunks->get(t, &key, &cur, DB_RMW);
            if (ret == DB_NOTFOUND) continue;  // deleted meanwhile
            if (ret != 0) return ret;
            auto now = DecodeLocation(batch[i].id, cur.view());
            if (!now.ok() || now->pack != old_locs[i].pack || now->offset != old_locs[i].offset) continue;
            auto rec = EncodeLocation(locs[i]);
            Dbt data(rec.data(), kLocationSize);
            if ((ret = impl_->chunks->put(t, &key, &data, 0)) != 0) return ret;
          }
          return 0;
        }));
        moved += batch.size();
        batch.clear();
        old_locs.clear();
        batch_bytes = 0;
        return Status::OK();
      };
      uint64_t off = kPackHeaderSize;
      while (off + kEntryHeader <= size) {
        uint8_t h[kEntryHeader];
        if (!PreadExact(fd.get(), h, sizeof(h), off, path).ok()) break;
        ChunkId id;
        std::memcpy(id.bytes.data(), h, ChunkId::kSize);
        const uint8_t* vh = h + ChunkId::kSize;
        uint32_t data_len = GetU32(vh + 8);
        if (vh[0] != 'S' || vh[1] != 'C' || data_len > kMaxChunkSize + 1024 ||
            off + kEntryHeader + data_len > size) {
          break;  // the torn end of a pack written before a crash
        }
        const uint64_t value_off = off + ChunkId::kSize;
        const uint32_t value_len = static_cast<uint32_t>(kValueHeaderSize + data_len);
        off += kEntryHeader + data_len;
        Dbt key = KeyDbt(id);
        MallocDbt cur;
        if (impl_->chunks->get(nullptr, &key, &cur, 0) != 0) continue;
        auto loc = DecodeLocation(id, cur.view());
        if (!loc.ok() || loc->pack != n || loc->offset != value_off) continue;  // garbage
        EncodedChunk c{id, Bytes(value_len)};
        SLINGSHOT_RETURN_IF_ERROR(PreadExact(fd.get(), c.value.data(), value_len, value_off, path));
        // Verify before copying: compaction must not launder a damaged value.
        SLINGSHOT_RETURN_IF_ERROR(DecodeValue(id, c.value).status().Annotate("compaction kept " + path));
        batch.push_back(std::move(c));
        old_locs.push_back(*loc);
        batch_bytes += value_len;
        if (batch_bytes >= (16u << 20)) SLINGSHOT_RETURN_IF_ERROR(relocate());
      }
      SLINGSHOT_RETURN_IF_ERROR(relocate());
      if (moved != u.live_entries) {
        return Status::Corruption(path + ": " + std::to_string(u.live_entries - moved) +
                                  " indexed chunks could not be found in it; the pack was kept. Run `store verify`");
      }
    }
    impl_->ForgetPack(n);
    SLINGSHOT_RETURN_IF_ERROR(impl_->fs()->RemoveFile(path));
    ++cs.packs_removed;
    cs.bytes_reclaimed += garbage;
    cs.chunks_moved += moved;
  }
  if (cs.packs_removed) SLINGSHOT_RETURN_IF_ERROR(impl_->fs()->SyncDir(impl_->pack_dir));
  return cs;
}

std::unique_ptr<ChunkStore::GcGuard> ChunkStore::BeginGc() {
  MutexLock l(&impl_->gc_mu);
  ++impl_->gc_active;
  return std::make_unique<GcGuard>(this);
}

ChunkStore::GcGuard::~GcGuard() {
  MutexLock l(&store_->impl_->gc_mu);
  if (--store_->impl_->gc_active == 0) store_->impl_->gc_recent.clear();
}

bool ChunkStore::IsProtected(const ChunkId& id) const {
  MutexLock l(&impl_->gc_mu);
  return impl_->gc_recent.count(id) != 0;
}

ChunkStore::Mode ChunkStore::mode() const { return impl_->options.mode; }
const std::string& ChunkStore::dir() const { return impl_->dir; }
std::string ChunkStore::Describe() const {
  return std::string(impl_->txn() ? "store " : "cache ") + impl_->dir;
}

Status ChunkStore::Checkpoint() {
  int ret = impl_->txn() ? impl_->env->txn_checkpoint(0, 0, DB_FORCE) : impl_->env->memp_sync(nullptr);
  if (ret != 0) return DbStatus(ret, "checkpoint " + impl_->dir);
  MutexLock l(&impl_->headroom_mu);
  impl_->Headroom();
  return Status::OK();
}

}  // namespace slingshot
