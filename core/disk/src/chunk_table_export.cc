#include "slingshot/disk/chunk_table_export.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <list>
#include <optional>
#include <unordered_map>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/mutex.h"

namespace slingshot {

struct ChunkTableExport::Impl {
  DiskTable table;
  ChunkSource* source = nullptr;
  ChunkTableExportOptions options;
  UniqueFd overlay;
  std::string overlay_path;

  mutable Mutex mu;
  std::vector<bool> in_overlay GUARDED_BY(mu);  // chunk i lives in the overlay file
  std::vector<bool> dirty GUARDED_BY(mu);       // written since the last freeze
  std::vector<bool> read_once GUARDED_BY(mu);   // recorded in first_reads
  std::vector<size_t> first_reads GUARDED_BY(mu);
  // LRU of decoded base chunks, by chunk index.
  std::list<size_t> lru GUARDED_BY(mu);
  std::unordered_map<size_t, std::pair<Bytes, std::list<size_t>::iterator>> cache GUARDED_BY(mu);
  ChunkTableExportStats stats GUARDED_BY(mu);

  // A freeze under way (BeginFreeze .. FinishFreeze).
  struct Freezing {
    ChunkStore* store = nullptr;
    DiskTable next;             // the table as of BeginFreeze, filled in
    std::vector<bool> members;  // dirty at BeginFreeze
    std::vector<bool> pending;  // members whose bytes are not yet taken
    Status failed;              // the first store error
  };
  std::optional<Freezing> freezing GUARDED_BY(mu);

  uint64_t ChunkOffset(size_t i) const { return uint64_t(i) * table.chunk_size; }

  // Reads chunk i's base bytes (id) from the source; no lock needed.
  Result<Bytes> FetchBase(size_t i, const ChunkId& id, uint32_t len) {
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes bytes, source->Get(id));
    if (bytes.size() != len) {
      return Status::Corruption("disk chunk " + std::to_string(i) + " has " + std::to_string(bytes.size()) +
                                " bytes, the table says " + std::to_string(len));
    }
    return bytes;
  }

  // Puts chunk i's base bytes into the LRU.
  const Bytes* Insert(size_t i, Bytes bytes) REQUIRES(mu) {
    if (auto it = cache.find(i); it != cache.end()) return &it->second.first;
    if (cache.size() >= options.cached_chunks && !lru.empty()) {
      cache.erase(lru.back());
      lru.pop_back();
    }
    lru.push_front(i);
    auto [pos, ok] = cache.emplace(i, std::make_pair(std::move(bytes), lru.begin()));
    (void)ok;
    return &pos->second.first;
  }

  // The base (table) bytes of chunk i, through the LRU.
  Result<const Bytes*> BaseChunk(size_t i) REQUIRES(mu) {
    auto it = cache.find(i);
    if (it != cache.end()) {
      lru.splice(lru.begin(), lru, it->second.second);
      return &it->second.first;
    }
    const uint32_t len = table.ChunkLength(i);
    Bytes bytes;
    if (table.ids[i].IsNull()) {
      bytes.assign(len, 0);
      stats.zero_chunk_reads++;
    } else {
      SLINGSHOT_ASSIGN_OR_RETURN(bytes, FetchBase(i, table.ids[i], len));
      stats.chunks_fetched++;
    }
    return Insert(i, std::move(bytes));
  }

  void Uncache(size_t i) REQUIRES(mu) {
    auto it = cache.find(i);
    if (it == cache.end()) return;
    lru.erase(it->second.second);
    cache.erase(it);
  }

  Status CopyUp(size_t i) REQUIRES(mu) {
    if (in_overlay[i]) return Status::OK();
    if (!table.ids[i].IsNull()) {
      SLINGSHOT_ASSIGN_OR_RETURN(const Bytes* base, BaseChunk(i));
      SLINGSHOT_RETURN_IF_ERROR(PwriteAll(ChunkOffset(i), ByteView(*base)));
    } else if (options.cipher || fallocate(overlay.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                           static_cast<off_t>(ChunkOffset(i)), table.ChunkLength(i)) != 0) {
      // (A hole reads as zeros, which the cipher would not give back as zeros.)
      // Old bytes from before a freeze may sit there: zero them.
      Bytes zeros(table.ChunkLength(i), 0);
      SLINGSHOT_RETURN_IF_ERROR(PwriteAll(ChunkOffset(i), ByteView(zeros)));
    }
    Uncache(i);
    in_overlay[i] = true;
    stats.chunks_copied_up++;
    return Status::OK();
  }

  // Stores chunk i's bytes as the overlay holds them (the null id if all
  // zero) into the freeze's table.
  Status StoreForFreeze(size_t i, ByteView bytes) REQUIRES(mu) {
    Freezing& f = *freezing;
    if (IsAllZero(bytes)) {
      f.next.ids[i] = ChunkId();
      return Status::OK();
    }
    SLINGSHOT_ASSIGN_OR_RETURN(f.next.ids[i], f.store->Put(bytes));
    return Status::OK();
  }

  // Before a write changes chunk i during a freeze that has yet to take
  // its bytes: take them now. A store error fails the freeze, not the write.
  void KeepBeforeWrite(size_t i) REQUIRES(mu) {
    if (!freezing || !freezing->pending[i]) return;
    freezing->pending[i] = false;
    if (!freezing->failed.ok()) return;
    Bytes buf(table.ChunkLength(i));
    Status s = PreadOverlay(buf.data(), buf.size(), ChunkOffset(i));
    if (s.ok()) s = StoreForFreeze(i, buf);
    if (!s.ok()) freezing->failed = s.Annotate("disk chunk " + std::to_string(i) + " for the checkpoint");
    stats.kept_before_write++;
  }

  // The overlay's bytes go through the cipher, if any (options.cipher).
  Status PwriteAll(uint64_t off, ByteView data) {
    if (!options.cipher) {
      return slingshot::PwriteAll(overlay.get(), data.data(), data.size(), off, "disk overlay " + overlay_path);
    }
    Bytes enc(data.begin(), data.end());
    options.cipher->Xor(off, enc.data(), enc.size());
    return slingshot::PwriteAll(overlay.get(), enc.data(), enc.size(), off, "disk overlay " + overlay_path);
  }
  Status PreadOverlay(uint8_t* out, size_t n, uint64_t off) {
    SLINGSHOT_RETURN_IF_ERROR(PreadExact(overlay.get(), out, n, off, "disk overlay " + overlay_path));
    if (options.cipher) options.cipher->Xor(off, out, n);
    return Status::OK();
  }

  // Calls fn(chunk index, offset within chunk, position in the request, length)
  // for each piece of [offset, offset+length).
  template <typename Fn>
  Status ForPieces(uint64_t offset, uint64_t length, Fn fn) REQUIRES(mu) {
    uint64_t pos = 0;
    while (pos < length) {
      uint64_t abs = offset + pos;
      size_t i = static_cast<size_t>(abs / table.chunk_size);
      uint32_t in = static_cast<uint32_t>(abs % table.chunk_size);
      uint64_t n = std::min<uint64_t>(length - pos, table.ChunkLength(i) - in);
      SLINGSHOT_RETURN_IF_ERROR(fn(i, in, pos, n));
      pos += n;
    }
    return Status::OK();
  }

  Status CheckRange(uint64_t offset, uint64_t length) const {
    if (offset > table.image_size || length > table.image_size - offset) {
      return Status::InvalidArgument("disk request [" + std::to_string(offset) + ", +" +
                                     std::to_string(length) + ") is past the end (" +
                                     std::to_string(table.image_size) + " bytes)");
    }
    return Status::OK();
  }
};

Result<std::unique_ptr<ChunkTableExport>> ChunkTableExport::Open(
    const DiskTable& table, ChunkSource* source, const std::string& overlay_path,
    const ChunkTableExportOptions& options) {
  if (table.ids.size() != (table.image_size + table.chunk_size - 1) / table.chunk_size) {
    return Status::InvalidArgument("disk table's id count does not match its size");
  }
  auto impl = std::make_unique<Impl>();
  impl->table = table;
  impl->source = source;
  impl->options = options;
  if (impl->options.cached_chunks == 0) impl->options.cached_chunks = 1;
  impl->overlay_path = overlay_path;
  impl->overlay.Reset(open(overlay_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!impl->overlay.valid()) return Status::FromErrno("creating disk overlay " + overlay_path, errno);
  if (ftruncate(impl->overlay.get(), static_cast<off_t>(table.image_size)) != 0) {
    return Status::FromErrno("sizing disk overlay " + overlay_path, errno);
  }
  {
    MutexLock l(&impl->mu);
    impl->in_overlay.assign(table.ids.size(), false);
    impl->dirty.assign(table.ids.size(), false);
    impl->read_once.assign(table.ids.size(), false);
  }
  return std::unique_ptr<ChunkTableExport>(new ChunkTableExport(std::move(impl)));
}

ChunkTableExport::ChunkTableExport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChunkTableExport::~ChunkTableExport() { unlink(impl_->overlay_path.c_str()); }

uint64_t ChunkTableExport::size() const { return impl_->table.image_size; }
bool ChunkTableExport::read_only() const { return impl_->options.read_only; }

Status ChunkTableExport::Read(uint64_t offset, std::span<uint8_t> out) {
  Impl& m = *impl_;
  SLINGSHOT_RETURN_IF_ERROR(m.CheckRange(offset, out.size()));
  // Chunks that must come from the source are fetched without the lock, so
  // that a slow fetch (from the home, over the WAN) does not hold up other
  // requests, and several connections verify chunks in parallel.
  struct Need {
    size_t index;
    ChunkId id;
    uint32_t len;
    Result<Bytes> bytes = Status::IOError("not fetched yet");
  };
  std::vector<Need> need;
  {
    MutexLock l(&m.mu);
    if (out.empty()) return Status::OK();
    size_t first = static_cast<size_t>(offset / m.table.chunk_size);
    size_t last = static_cast<size_t>((offset + out.size() - 1) / m.table.chunk_size);
    for (size_t i = first; i <= last; ++i) {
      if (m.in_overlay[i] || m.table.ids[i].IsNull() || m.cache.count(i)) continue;
      need.push_back(Need{i, m.table.ids[i], m.table.ChunkLength(i)});
    }
  }
  for (auto& n : need) n.bytes = m.FetchBase(n.index, n.id, n.len);
  MutexLock l(&m.mu);
  std::unordered_map<size_t, const Bytes*> fetched;
  for (auto& n : need) {
    SLINGSHOT_RETURN_IF_ERROR(n.bytes.status());
    m.stats.chunks_fetched++;
    // A write or a freeze may have come in between: use the bytes only if
    // the chunk is still that base chunk.
    if (!m.in_overlay[n.index] && m.table.ids[n.index] == n.id) fetched[n.index] = &*n.bytes;
  }
  return m.ForPieces(offset, out.size(), [&](size_t i, uint32_t in, uint64_t pos, uint64_t n) {
    m.mu.AssertHeld();  // ForPieces runs the lambda under the lock taken above
    if (m.in_overlay[i]) {
      return m.PreadOverlay(out.data() + pos, n, m.ChunkOffset(i) + in);
    }
    if (!m.read_once[i] && !m.table.ids[i].IsNull()) {
      m.read_once[i] = true;
      m.first_reads.push_back(i);
    }
    const Bytes* base;
    if (auto f = fetched.find(i); f != fetched.end()) {
      base = f->second;
      if (!m.cache.count(i)) m.Insert(i, *base);
    } else {
      SLINGSHOT_ASSIGN_OR_RETURN(base, m.BaseChunk(i));
    }
    std::memcpy(out.data() + pos, base->data() + in, n);
    return Status::OK();
  });
}

std::vector<ChunkId> ChunkTableExport::FirstReads() const {
  MutexLock l(&impl_->mu);
  std::vector<ChunkId> ids;
  ids.reserve(impl_->first_reads.size());
  for (size_t i : impl_->first_reads) ids.push_back(impl_->table.ids[i]);
  return ids;
}

Status ChunkTableExport::Write(uint64_t offset, ByteView data) {
  Impl& m = *impl_;
  if (m.options.read_only) return Status::InvalidArgument("this disk export is read-only");
  SLINGSHOT_RETURN_IF_ERROR(m.CheckRange(offset, data.size()));
  MutexLock l(&m.mu);
  return m.ForPieces(offset, data.size(), [&](size_t i, uint32_t in, uint64_t pos, uint64_t n) {
    m.mu.AssertHeld();  // ForPieces runs the lambda under the lock taken above
    m.KeepBeforeWrite(i);
    // A write covering the whole chunk needs no copy-up of the old bytes.
    if (!m.in_overlay[i] && !(in == 0 && n == m.table.ChunkLength(i))) {
      SLINGSHOT_RETURN_IF_ERROR(m.CopyUp(i));
    }
    SLINGSHOT_RETURN_IF_ERROR(m.PwriteAll(m.ChunkOffset(i) + in, data.subspan(pos, n)));
    if (!m.in_overlay[i]) {
      m.Uncache(i);
      m.in_overlay[i] = true;
    }
    if (!m.dirty[i]) {
      m.dirty[i] = true;
      m.stats.dirty_chunks++;
    }
    return Status::OK();
  });
}

Status ChunkTableExport::Flush() {
  if (fdatasync(impl_->overlay.get()) != 0) {
    return Status::FromErrno("flushing disk overlay " + impl_->overlay_path, errno);
  }
  return Status::OK();
}

Status ChunkTableExport::Trim(uint64_t offset, uint64_t length) {
  // Trimmed ranges read as zeros: write zeros through the overlay.
  Impl& m = *impl_;
  SLINGSHOT_RETURN_IF_ERROR(m.CheckRange(offset, length));
  Bytes zeros(std::min<uint64_t>(length, m.table.chunk_size), 0);
  uint64_t done = 0;
  while (done < length) {
    uint64_t n = std::min<uint64_t>(length - done, zeros.size());
    SLINGSHOT_RETURN_IF_ERROR(Write(offset + done, ByteView(zeros.data(), n)));
    done += n;
  }
  return Status::OK();
}

Result<DiskTable> ChunkTableExport::Freeze(ChunkStore* store) {
  SLINGSHOT_RETURN_IF_ERROR(BeginFreeze(store));
  return FinishFreeze();
}

Status ChunkTableExport::BeginFreeze(ChunkStore* store) {
  Impl& m = *impl_;
  MutexLock l(&m.mu);
  if (m.freezing) return Status::InvalidArgument("a freeze of this disk is under way");
  Impl::Freezing f;
  f.store = store;
  f.next = m.table;
  f.members = m.dirty;
  f.pending = m.dirty;
  m.freezing = std::move(f);
  // The overlay keeps serving what it holds; only "dirty" starts over.
  m.dirty.assign(m.dirty.size(), false);
  m.stats.dirty_chunks = 0;
  return Status::OK();
}

Result<DiskTable> ChunkTableExport::FinishFreeze() {
  Impl& m = *impl_;
  {
    MutexLock l(&m.mu);
    if (!m.freezing) return Status::InvalidArgument("no freeze of this disk is under way");
  }
  // A chunk at a time: its bytes taken under the lock, stored outside it,
  // so the guest's requests go on meanwhile (and a write to a chunk whose
  // bytes are taken no longer waits).
  Bytes buf;
  for (size_t i = 0;; ++i) {
    ChunkStore* store = nullptr;
    Status s;
    {
      MutexLock l(&m.mu);
      Impl::Freezing& f = *m.freezing;
      while (i < f.pending.size() && !f.pending[i]) ++i;
      if (i >= f.pending.size() || !f.failed.ok()) break;
      f.pending[i] = false;
      buf.resize(m.table.ChunkLength(i));
      s = m.PreadOverlay(buf.data(), buf.size(), m.ChunkOffset(i));
      if (s.ok() && IsAllZero(buf)) {
        f.next.ids[i] = ChunkId();
        continue;
      }
      store = f.store;
    }
    Result<ChunkId> put = s.ok() ? store->Put(buf) : Result<ChunkId>(s);
    MutexLock l(&m.mu);
    Impl::Freezing& f = *m.freezing;
    if (put.ok()) {
      f.next.ids[i] = *put;
    } else if (f.failed.ok()) {
      f.failed = put.status().Annotate("disk chunk " + std::to_string(i) + " for the checkpoint");
    }
  }
  MutexLock l(&m.mu);
  Impl::Freezing f = std::move(*m.freezing);
  m.freezing.reset();
  if (!f.failed.ok()) {
    // Its chunks stay dirty for the next freeze.
    for (size_t i = 0; i < f.members.size(); ++i) {
      if (f.members[i] && !m.dirty[i]) {
        m.dirty[i] = true;
        m.stats.dirty_chunks++;
      }
    }
    return f.failed;
  }
  m.table = f.next;
  return std::move(f.next);
}

ChunkTableExportStats ChunkTableExport::stats() const {
  MutexLock l(&impl_->mu);
  return impl_->stats;
}

}  // namespace slingshot
