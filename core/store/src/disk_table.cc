#include "slingshot/store/disk_table.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"

namespace slingshot {
namespace {
constexpr Magic kMagic = {'S', 'S', 'D', 'T'};
constexpr uint16_t kVersion = 1;
constexpr size_t kMaxIds = (256u << 20) / ChunkId::kSize;
constexpr uint32_t kMinChunk = 4096, kMaxChunk = 4u << 20;

Status CheckChunkSize(uint32_t cs) {
  if (cs < kMinChunk || cs > kMaxChunk || !std::has_single_bit(cs)) {
    return Status::InvalidArgument("disk chunk size " + std::to_string(cs) +
                                   " must be a power of two from 4 KiB to 4 MiB");
  }
  return Status::OK();
}
}  // namespace

uint32_t DiskTable::ChunkLength(size_t i) const {
  uint64_t start = static_cast<uint64_t>(i) * chunk_size;
  return static_cast<uint32_t>(std::min<uint64_t>(chunk_size, image_size - start));
}

Bytes DiskTable::Encode() const {
  Bytes body;
  body.reserve(16 + ids.size() * ChunkId::kSize);
  Encoder e(&body);
  e.U32(chunk_size);
  e.U64(image_size);
  e.U32(static_cast<uint32_t>(ids.size()));
  for (const auto& id : ids) e.Id(id);
  return SealFrame(kMagic, kVersion, body);
}

Result<DiskTable> DiskTable::Decode(ByteView bytes) {
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(bytes, kMagic, kVersion,
                                                      16 + kMaxIds * ChunkId::kSize, "disk chunk table"));
  Decoder d(f.body, "disk chunk table");
  DiskTable t;
  t.chunk_size = d.U32();
  t.image_size = d.U64();
  uint32_t count = d.U32();
  if (d.ok()) {
    if (!CheckChunkSize(t.chunk_size).ok()) d.Fail("bad chunk size " + std::to_string(t.chunk_size));
    else if (count != (t.image_size + t.chunk_size - 1) / t.chunk_size)
      d.Fail("holds " + std::to_string(count) + " chunks but its image size needs " +
             std::to_string((t.image_size + t.chunk_size - 1) / t.chunk_size));
    else if (count > d.remaining() / ChunkId::kSize)
      d.Fail("count " + std::to_string(count) + " exceeds the bytes present");
  }
  if (d.ok()) {
    t.ids.reserve(count);
    for (uint32_t i = 0; i < count; ++i) t.ids.push_back(d.Id());
  }
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  return t;
}

Result<DiskImport> ImportDisk(const std::string& path, ChunkStore* store,
                              const DiskImportOptions& options) {
  SLINGSHOT_RETURN_IF_ERROR(CheckChunkSize(options.chunk_size));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("open disk image " + path, errno);
  struct stat sb;
  if (::fstat(fd.get(), &sb) != 0) return Status::FromErrno("stat " + path, errno);
  if (!S_ISREG(sb.st_mode) && !S_ISBLK(sb.st_mode)) {
    return Status::InvalidArgument(path + " is not a regular file or block device");
  }
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  DiskImport out;
  out.table.chunk_size = options.chunk_size;
  ChunkWriter writer(store, options.writer);
  uint64_t offset = 0;
  for (;;) {
    SLINGSHOT_ASSIGN_OR_RETURN(size_t n, writer.AddFromFile(fd.get(), offset, options.chunk_size, path));
    offset += n;
    if (n == 0 || n % options.chunk_size != 0) break;  // end of file (a short last chunk ends it)
  }
  SLINGSHOT_ASSIGN_OR_RETURN(out.table.ids, writer.Finish());
  out.table.image_size = offset;
  out.stats = writer.stats();
  return out;
}

Result<DiskImport> ImportImage(ByteView image, const std::vector<bool>& known_zero, ChunkStore* store,
                               const DiskImportOptions& options) {
  SLINGSHOT_RETURN_IF_ERROR(CheckChunkSize(options.chunk_size));
  DiskImport out;
  out.table.chunk_size = options.chunk_size;
  out.table.image_size = image.size();
  const size_t count = (image.size() + options.chunk_size - 1) / options.chunk_size;
  out.table.ids.assign(count, ChunkId());
  std::vector<size_t> added;  // chunk indexes, in Add order
  ChunkWriter writer(store, options.writer);
  for (size_t i = 0; i < count; ++i) {
    if (i < known_zero.size() && known_zero[i]) continue;
    const size_t at = i * options.chunk_size;
    SLINGSHOT_RETURN_IF_ERROR(writer.Add(image.subspan(at, std::min<size_t>(options.chunk_size, image.size() - at))));
    added.push_back(i);
  }
  SLINGSHOT_ASSIGN_OR_RETURN(std::vector<ChunkId> ids, writer.Finish());
  for (size_t k = 0; k < added.size(); ++k) out.table.ids[added[k]] = ids[k];
  out.stats = writer.stats();
  out.stats.zero_chunks += count - added.size();
  for (size_t i = 0; i < count; ++i) {
    if (i < known_zero.size() && known_zero[i]) out.stats.zero_bytes += out.table.ChunkLength(i);
  }
  return out;
}

Status ReadImage(const DiskTable& table, ChunkSource* source,
                 const std::function<Status(uint64_t offset, ByteView bytes)>& put) {
  std::vector<ChunkId> ids;
  std::vector<size_t> index;
  for (size_t i = 0; i < table.ids.size(); ++i) {
    if (table.ids[i].IsNull()) continue;
    ids.push_back(table.ids[i]);
    index.push_back(i);
  }
  size_t next = 0;
  Status failed;
  Status st = source->GetMany(ids, [&](const ChunkId& id, Result<Bytes>&& chunk) {
    const size_t i = index[next++];
    if (!failed.ok()) return;
    if (!chunk.ok()) {
      failed = chunk.status().Annotate("chunk " + std::to_string(i) + " (" + id.Short() + ")");
      return;
    }
    if (chunk->size() != table.ChunkLength(i)) {
      failed = Status::Corruption("chunk " + std::to_string(i) + " (" + id.Short() + ") is " +
                                  std::to_string(chunk->size()) + " bytes, the table expects " +
                                  std::to_string(table.ChunkLength(i)));
      return;
    }
    failed = put(static_cast<uint64_t>(i) * table.chunk_size, *chunk);
  });
  SLINGSHOT_RETURN_IF_ERROR(st);
  SLINGSHOT_RETURN_IF_ERROR(failed);
  if (next != ids.size()) {
    return Status::IOError(source->Describe() + " delivered " + std::to_string(next) + " of " +
                           std::to_string(ids.size()) + " chunks");
  }
  return Status::OK();
}

Status ExportDisk(const DiskTable& table, ChunkSource* source, const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("create " + path, errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(table.image_size)) != 0) {
    return Status::FromErrno("size " + path, errno);
  }
  for (size_t i = 0; i < table.ids.size(); ++i) {
    if (table.ids[i].IsNull()) continue;  // a hole reads as zeros
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes data, source->Get(table.ids[i]));
    if (data.size() != table.ChunkLength(i)) {
      return Status::Corruption("chunk " + std::to_string(i) + " (" + table.ids[i].Short() + ") is " +
                                std::to_string(data.size()) + " bytes, the table expects " +
                                std::to_string(table.ChunkLength(i)));
    }
    uint64_t off = static_cast<uint64_t>(i) * table.chunk_size;
    const uint8_t* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t w = ::pwrite(fd.get(), p, left, static_cast<off_t>(off));
      if (w < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno("write " + path, errno);
      }
      p += w;
      off += static_cast<uint64_t>(w);
      left -= static_cast<size_t>(w);
    }
  }
  if (::fsync(fd.get()) != 0) return Status::FromErrno("fsync " + path, errno);
  return Status::OK();
}

}  // namespace slingshot
