#include "slingshot/store/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/base/file_util.h"
#include "slingshot/store/gc.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"

namespace slingshot {
namespace {

constexpr Magic kIndexMagic = {'S', 'S', 'B', 'N'};
constexpr uint16_t kIndexVersion = 1;
constexpr char kIndexName[] = "SLINGSHOT-BUNDLE";
constexpr size_t kMaxIndex = 64u << 20;
constexpr size_t kMaxObject = 256u << 20;
constexpr size_t kMaxRefs = 1u << 20;

// The trailer: a zstd skippable frame (zstd tools skip it) that holds the
// CRC-32C and length of every byte before it, so that a flip anywhere in the
// file is caught, including bits the zstd format tells decoders to ignore.
//   u32 0x184D2A5E  u32 20 (payload size)
//   "SSBT"  u16 version 1  u16 0  u64 length  u32 crc
constexpr uint32_t kSkippableMagic = 0x184D2A5E;
constexpr size_t kTrailerSize = 28;

Bytes Trailer(uint64_t length, uint32_t crc) {
  Bytes t;
  Encoder e(&t);
  e.U32(kSkippableMagic);
  e.U32(kTrailerSize - 8);
  e.Raw("SSBT", 4);
  e.U16(1);
  e.U16(0);
  e.U64(length);
  e.U32(crc);
  return t;
}

struct ArchiveWriteDeleter { void operator()(archive* a) const { archive_write_free(a); } };
struct ArchiveReadDeleter { void operator()(archive* a) const { archive_read_free(a); } };
struct EntryDeleter { void operator()(archive_entry* e) const { archive_entry_free(e); } };

// The zstd stream under the tar writer: one frame, with a content checksum.
struct ZstdSink {
  int fd = -1;
  std::string path;
  ZSTD_CCtx* cctx = nullptr;
  Bytes out = Bytes(ZSTD_CStreamOutSize());
  uint64_t written = 0;
  uint32_t crc = 0;  // of every byte written, for the trailer
  Status status;

  ~ZstdSink() { ZSTD_freeCCtx(cctx); }

  Status Emit(const void* p, size_t n) {
    SLINGSHOT_RETURN_IF_ERROR(WriteAll(fd, p, n, path));
    crc = crc32c::Extend(crc, p, n);
    written += n;
    return Status::OK();
  }

  Status Init(int level) {
    cctx = ZSTD_createCCtx();
    if (!cctx) return Status::ResourceExhausted("zstd: out of memory");
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    return Status::OK();
  }

  Status Feed(const void* data, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data, n, 0};
    for (;;) {
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      size_t left = ZSTD_compressStream2(cctx, &o, &in, mode);
      if (ZSTD_isError(left)) return Status::IOError(std::string("zstd: ") + ZSTD_getErrorName(left));
      SLINGSHOT_RETURN_IF_ERROR(Emit(out.data(), o.pos));
      bool done = mode == ZSTD_e_end ? left == 0 : in.pos == in.size;
      if (done) return Status::OK();
    }
  }

  static la_ssize_t WriteCb(archive* a, void* ctx, const void* buf, size_t n) {
    auto* self = static_cast<ZstdSink*>(ctx);
    self->status = self->Feed(buf, n, ZSTD_e_continue);
    if (!self->status.ok()) {
      archive_set_error(a, EIO, "%s", self->status.message().c_str());
      return -1;
    }
    return static_cast<la_ssize_t>(n);
  }
};

Status ArchiveStatus(archive* a, const std::string& what) {
  const char* e = archive_error_string(a);
  return Status::IOError(what + ": " + (e ? e : "libarchive error"));
}

Status WriteEntry(archive* a, const std::string& name, ByteView data, const ZstdSink& sink) {
  std::unique_ptr<archive_entry, EntryDeleter> e(archive_entry_new());
  archive_entry_set_pathname(e.get(), name.c_str());
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_mtime(e.get(), 0, 0);
  archive_entry_set_uid(e.get(), 0);
  archive_entry_set_gid(e.get(), 0);
  if (archive_write_header(a, e.get()) != ARCHIVE_OK) {
    return sink.status.ok() ? ArchiveStatus(a, "write bundle entry " + name) : sink.status;
  }
  size_t off = 0;
  while (off < data.size()) {
    la_ssize_t w = archive_write_data(a, data.data() + off, data.size() - off);
    if (w <= 0) return sink.status.ok() ? ArchiveStatus(a, "write bundle entry " + name) : sink.status;
    off += static_cast<size_t>(w);
  }
  return Status::OK();
}

Bytes EncodeIndex(const std::vector<Ref>& refs, uint64_t objects, uint64_t chunks) {
  Bytes body;
  Encoder e(&body);
  e.U32(static_cast<uint32_t>(refs.size()));
  for (const auto& r : refs) {
    e.Str(r.name);
    e.U8(static_cast<uint8_t>(r.kind));
    e.Id(r.object);
  }
  e.U64(objects);
  e.U64(chunks);
  return SealFrame(kIndexMagic, kIndexVersion, body);
}

struct Index {
  std::vector<Ref> refs;
  uint64_t objects = 0, chunks = 0;
};

Result<Index> DecodeIndex(ByteView bytes) {
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(bytes, kIndexMagic, kIndexVersion, kMaxIndex, "bundle index"));
  Decoder d(f.body, "bundle index");
  Index idx;
  uint32_t n = d.U32();
  if (d.ok() && n > kMaxRefs) d.Fail("ref count " + std::to_string(n) + " exceeds the limit");
  for (uint32_t i = 0; d.ok() && i < n; ++i) {
    Ref r;
    r.name = d.Str(1024, "ref name");
    uint8_t kind = d.U8();
    if (kind < 1 || kind > 3) d.Fail("ref " + r.name + " has unknown kind " + std::to_string(kind));
    r.kind = static_cast<ObjectKind>(kind);
    r.object = d.Id();
    if (r.name.empty()) d.Fail("empty ref name");
    idx.refs.push_back(std::move(r));
  }
  idx.objects = d.U64();
  idx.chunks = d.U64();
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  return idx;
}

// Decompresses the bundle file for the tar reader, and checks that the zstd
// frame ends (with its checksum verified) exactly at the end of the file.
struct ZstdSource {
  UniqueFd fd;
  std::string path;
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  Bytes in = Bytes(ZSTD_DStreamInSize());
  Bytes out = Bytes(ZSTD_DStreamOutSize());
  ZSTD_inBuffer ib{in.data(), 0, 0};
  bool eof = false;
  bool frame_done = false;
  uint64_t file_bytes = 0;  // bytes read so far
  uint64_t data_end = 0;    // where the trailer starts
  uint32_t crc = 0;
  Status status;

  // Sizes the file and checks the trailer's own fields (its CRC is checked
  // by CheckTrailer once every byte before it has been read).
  Status Init() {
    struct stat sb;
    if (::fstat(fd.get(), &sb) != 0) return Status::FromErrno("stat " + path, errno);
    uint64_t size = static_cast<uint64_t>(sb.st_size);
    if (size < kTrailerSize) return Status::Corruption(path + ": too short to be a bundle");
    data_end = size - kTrailerSize;
    return Status::OK();
  }

  Status CheckTrailer() {
    uint8_t t[kTrailerSize];
    SLINGSHOT_RETURN_IF_ERROR(PreadExact(fd.get(), t, kTrailerSize, data_end, path));
    Bytes want = Trailer(data_end, crc);
    if (std::memcmp(t, want.data(), 16) != 0) {
      return Status::Corruption(path + ": bundle trailer is missing or damaged (truncated or not a slingshot bundle)");
    }
    if (std::memcmp(t, want.data(), kTrailerSize) != 0) {
      return Status::Corruption(path + ": bundle checksum mismatch (the file was damaged)");
    }
    return Status::OK();
  }

  ~ZstdSource() { ZSTD_freeDCtx(dctx); }

  // Next decompressed block; empty at the end of the stream.
  Result<ByteView> Next() {
    for (;;) {
      if (ib.pos == ib.size && !eof) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(in.size(), data_end - file_bytes));
        ssize_t r = 0;
        if (want > 0) {
          do r = ::read(fd.get(), in.data(), want); while (r < 0 && errno == EINTR);
          if (r < 0) return Status::FromErrno("read " + path, errno);
        }
        if (r == 0) eof = true;
        crc = crc32c::Extend(crc, in.data(), static_cast<size_t>(r));
        file_bytes += static_cast<uint64_t>(r);
        ib = {in.data(), static_cast<size_t>(r), 0};
      }
      if (ib.pos == ib.size && eof) {
        if (!frame_done) return Status::Corruption(path + ": the compressed stream is truncated");
        return ByteView();
      }
      if (frame_done) {
        return Status::Corruption(path + ": unexpected bytes after the end of the compressed stream");
      }
      ZSTD_outBuffer ob{out.data(), out.size(), 0};
      size_t ret = ZSTD_decompressStream(dctx, &ob, &ib);
      if (ZSTD_isError(ret)) {
        return Status::Corruption(path + ": the compressed stream is damaged (zstd: " + ZSTD_getErrorName(ret) + ")");
      }
      if (ret == 0) frame_done = true;  // frame complete, checksum verified
      if (ob.pos > 0) return ByteView(out.data(), ob.pos);
    }
  }

  static la_ssize_t ReadCb(archive* a, void* ctx, const void** buf) {
    auto* self = static_cast<ZstdSource*>(ctx);
    auto r = self->Next();
    if (!r.ok()) {
      self->status = r.status();
      archive_set_error(a, EIO, "%s", self->status.message().c_str());
      return -1;
    }
    *buf = r->data();
    return static_cast<la_ssize_t>(r->size());
  }

  Status DrainToEnd() {
    for (;;) {
      SLINGSHOT_ASSIGN_OR_RETURN(ByteView b, Next());
      if (b.empty()) return CheckTrailer();
      if (!IsAllZero(b)) return Status::Corruption(path + ": data after the end of the archive");
    }
  }
};

Result<Bytes> ReadEntryData(archive* a, size_t size, const std::string& name, const ZstdSource& src) {
  Bytes data(size);
  size_t off = 0;
  while (off < size) {
    la_ssize_t r = archive_read_data(a, data.data() + off, size - off);
    if (r < 0) return src.status.ok() ? Status::Corruption("bundle entry " + name + ": " + (archive_error_string(a) ? archive_error_string(a) : "read error")) : src.status;
    if (r == 0) return Status::Corruption("bundle entry " + name + " is truncated");
    off += static_cast<size_t>(r);
  }
  return data;
}

// Structural check of an object by its type; manifests are verified against
// the trusted key when one is given.
Status CheckObject(ByteView b, const ChunkId& id, const BundleImportOptions& o) {
  auto is = [&](const char* m) { return b.size() >= 4 && std::memcmp(b.data(), m, 4) == 0; };
  Status st;
  if (is("SSDT")) st = DiskTable::Decode(b).status();
  else if (is("SSCL")) st = ChunkList::Decode(b).status();
  else if (is("SSMS")) st = o.trusted_key ? VerifyManifest(b, *o.trusted_key).status() : DecodeSignedManifestUnverified(b).status();
  else st = Status::Corruption("unknown object type");
  return st.Annotate("bundle object " + id.ToHex());
}

}  // namespace

Result<BundleStats> ExportBundle(ChunkStore* store, const std::string& path, const BundleExportOptions& options) {
  std::vector<Ref> refs;
  if (options.refs.empty()) {
    SLINGSHOT_ASSIGN_OR_RETURN(refs, store->ListRefs());
  } else {
    std::vector<std::string> names = options.refs;
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    for (const auto& n : names) {
      SLINGSHOT_ASSIGN_OR_RETURN(Ref r, store->GetRef(n));
      refs.push_back(std::move(r));
    }
  }
  std::vector<std::string> names;
  for (const auto& r : refs) names.push_back(r.name);
  std::map<ChunkId, Bytes> objects;
  std::set<ChunkId> chunks;
  if (!refs.empty()) {
    SLINGSHOT_RETURN_IF_ERROR(WalkReachable(
        store, names,
        [&](const ChunkId& id, ByteView b) { objects.emplace(id, Bytes(b.begin(), b.end())); return Status::OK(); },
        [&](const ChunkId& id) { chunks.insert(id); return Status::OK(); }));
  }

  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("create " + tmp, errno);
  auto fail = [&](Status st) { ::unlink(tmp.c_str()); return st; };
  ZstdSink sink;
  sink.fd = fd.get();
  sink.path = tmp;
  SLINGSHOT_RETURN_IF_ERROR(sink.Init(options.zstd_level));
  std::unique_ptr<archive, ArchiveWriteDeleter> a(archive_write_new());
  archive_write_set_format_ustar(a.get());
  if (archive_write_open(a.get(), &sink, nullptr, &ZstdSink::WriteCb, nullptr) != ARCHIVE_OK) {
    return fail(ArchiveStatus(a.get(), "open bundle " + tmp));
  }
  BundleStats stats;
  stats.refs = refs.size();
  Status st = WriteEntry(a.get(), kIndexName, EncodeIndex(refs, objects.size(), chunks.size()), sink);
  for (auto it = objects.begin(); st.ok() && it != objects.end(); ++it) {
    st = WriteEntry(a.get(), "objects/" + it->first.ToHex(), it->second, sink);
    ++stats.objects;
  }
  for (auto it = chunks.begin(); st.ok() && it != chunks.end(); ++it) {
    auto data = store->Get(*it);
    if (!data.ok()) { st = data.status(); break; }
    st = WriteEntry(a.get(), "chunks/" + it->ToHex(), *data, sink);
    ++stats.chunks;
    stats.chunk_bytes += data->size();
  }
  if (!st.ok()) return fail(st);
  if (archive_write_close(a.get()) != ARCHIVE_OK) return fail(sink.status.ok() ? ArchiveStatus(a.get(), "finish bundle") : sink.status);
  st = sink.Feed(nullptr, 0, ZSTD_e_end);
  if (st.ok()) {
    Bytes trailer = Trailer(sink.written, sink.crc);
    st = sink.Emit(trailer.data(), trailer.size());
  }
  if (st.ok() && ::fsync(fd.get()) != 0) st = Status::FromErrno("fsync " + tmp, errno);
  fd.Reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Status::FromErrno("rename " + tmp, errno);
  if (!st.ok()) return fail(st);
  SLINGSHOT_RETURN_IF_ERROR(SyncDir(std::filesystem::path(path).parent_path().string()));
  stats.file_bytes = sink.written;
  return stats;
}

Result<BundleStats> ImportBundle(const std::string& path, ChunkStore* store, const BundleImportOptions& options) {
  ZstdSource src;
  src.path = path;
  src.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!src.fd.valid()) return Status::FromErrno("open bundle " + path, errno);
  SLINGSHOT_RETURN_IF_ERROR(src.Init());
  std::unique_ptr<archive, ArchiveReadDeleter> a(archive_read_new());
  archive_read_support_format_tar(a.get());
  if (archive_read_open(a.get(), &src, nullptr, &ZstdSource::ReadCb, nullptr) != ARCHIVE_OK) {
    return src.status.ok() ? Status::Corruption(path + ": not a bundle (" + (archive_error_string(a.get()) ? archive_error_string(a.get()) : "unreadable") + ")") : src.status;
  }
  auto bad = [&](const std::string& why) { return Status::Corruption("bundle " + path + ": " + why); };

  BundleStats stats;
  std::optional<Index> index;
  std::string last_object, last_chunk;
  std::vector<EncodedChunk> batch;
  size_t batch_bytes = 0;
  auto flush = [&]() -> Status {
    Status s = store->PutEncoded(batch);
    batch.clear();
    batch_bytes = 0;
    return s;
  };
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) {
      return src.status.ok() ? bad(std::string("damaged archive (") + (archive_error_string(a.get()) ? archive_error_string(a.get()) : "unreadable") + ")") : src.status;
    }
    std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    if (archive_entry_filetype(e) != AE_IFREG || !archive_entry_size_is_set(e) || archive_entry_size(e) < 0) {
      return bad("entry '" + name + "' is not a regular file with a size");
    }
    uint64_t size = static_cast<uint64_t>(archive_entry_size(e));
    if (!index) {
      if (name != kIndexName) return bad("first entry is '" + name + "', not the " + kIndexName + " index");
      if (size > kMaxIndex) return bad("index of " + std::to_string(size) + " bytes exceeds the limit");
      SLINGSHOT_ASSIGN_OR_RETURN(Bytes ib, ReadEntryData(a.get(), size, name, src));
      SLINGSHOT_ASSIGN_OR_RETURN(index, DecodeIndex(ib));
      continue;
    }
    bool is_object = name.rfind("objects/", 0) == 0, is_chunk = name.rfind("chunks/", 0) == 0;
    if (!is_object && !is_chunk) return bad("unexpected entry '" + name + "'");
    std::string hex = name.substr(is_object ? 8 : 7);
    auto id = ChunkId::FromHex(hex);
    if (!id.ok()) return bad("entry '" + name + "' is not named by an id");
    std::string& last = is_object ? last_object : last_chunk;
    if (hex <= last || (is_object && !last_chunk.empty())) return bad("entry '" + name + "' is out of order or repeated");
    last = hex;
    if (size > (is_object ? kMaxObject : kMaxChunkSize) || size == 0) {
      return bad("entry '" + name + "' has size " + std::to_string(size) + ", outside the allowed range");
    }
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes data, ReadEntryData(a.get(), size, name, src));
    if (ChunkId::Of(data) != *id) return bad("entry '" + name + "' does not hash to its name (damaged or forged)");
    if (is_object) {
      SLINGSHOT_RETURN_IF_ERROR(CheckObject(data, *id, options));
      SLINGSHOT_RETURN_IF_ERROR(store->PutObject(data).status());
      ++stats.objects;
    } else {
      batch.push_back({*id, ChunkStore::EncodeValue(data, 1)});
      batch_bytes += data.size();
      ++stats.chunks;
      stats.chunk_bytes += data.size();
      if (batch_bytes >= (8u << 20)) SLINGSHOT_RETURN_IF_ERROR(flush());
    }
  }
  if (!index) return bad("no index entry (empty archive?)");
  SLINGSHOT_RETURN_IF_ERROR(src.DrainToEnd());
  SLINGSHOT_RETURN_IF_ERROR(flush());
  if (stats.objects != index->objects || stats.chunks != index->chunks) {
    return bad("holds " + std::to_string(stats.objects) + " objects and " + std::to_string(stats.chunks) +
               " chunks; its index lists " + std::to_string(index->objects) + " and " + std::to_string(index->chunks));
  }
  // Every ref's whole graph must now be in the store before any ref is set.
  for (const auto& ref : index->refs) {
    Status st = WalkObjects(
        store, {ref.object}, [](const ChunkId&, ByteView) { return Status::OK(); },
        [&](const ChunkId& c) -> Status {
          SLINGSHOT_ASSIGN_OR_RETURN(bool has, store->Contains(c));
          return has ? Status::OK() : Status::NotFound("chunk " + c.ToHex() + " is missing");
        });
    if (!st.ok()) return bad("ref '" + ref.name + "' is incomplete: " + st.message());
  }
  for (const auto& ref : index->refs) SLINGSHOT_RETURN_IF_ERROR(store->SetRef(ref));
  stats.refs = index->refs.size();
  stats.file_bytes = src.file_bytes + kTrailerSize;
  return stats;
}

}  // namespace slingshot
