#include "slingshot/store/memory_image.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"

namespace slingshot {
namespace {
constexpr Magic kMagic = {'S', 'S', 'C', 'L'};
constexpr uint16_t kVersion = 1;
constexpr size_t kEntrySize = ChunkId::kSize + 4;
constexpr size_t kMaxEntries = (256u << 20) / kEntrySize;
}  // namespace

Bytes ChunkList::Encode() const {
  Bytes body;
  body.reserve(12 + entries.size() * kEntrySize);
  Encoder e(&body);
  e.U64(total_size);
  e.U32(static_cast<uint32_t>(entries.size()));
  for (const auto& en : entries) {
    e.Id(en.id);
    e.U32(en.size);
  }
  return SealFrame(kMagic, kVersion, body);
}

Result<ChunkList> ChunkList::Decode(ByteView bytes) {
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(bytes, kMagic, kVersion,
                                                      12 + kMaxEntries * kEntrySize, "memory chunk list"));
  Decoder d(f.body, "memory chunk list");
  ChunkList l;
  l.total_size = d.U64();
  uint32_t count = d.U32();
  if (d.ok() && count > d.remaining() / kEntrySize) d.Fail("count " + std::to_string(count) + " exceeds the bytes present");
  uint64_t sum = 0;
  if (d.ok()) l.entries.reserve(count);
  for (uint32_t i = 0; d.ok() && i < count; ++i) {
    Entry en{d.Id(), d.U32()};
    if (en.size == 0 || en.size > kMaxChunkSize) d.Fail("entry " + std::to_string(i) + " has size " + std::to_string(en.size));
    sum += en.size;
    l.entries.push_back(en);
  }
  if (d.ok() && sum != l.total_size) d.Fail("chunk sizes add up to " + std::to_string(sum) + ", not the stated " + std::to_string(l.total_size));
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  return l;
}

struct MemoryImageWriter::Impl {
  ChunkWriter writer;
  FastCdcChunker chunker;
  std::vector<uint32_t> sizes;
  Impl(ChunkStore* store, const ChunkerOptions& c, const ChunkWriterOptions& w)
      : writer(store, w), chunker(c, [this](ByteView chunk) {
          sizes.push_back(static_cast<uint32_t>(chunk.size()));
          return writer.Add(chunk);
        }) {}
};

MemoryImageWriter::MemoryImageWriter(ChunkStore* store, const ChunkerOptions& chunker,
                                     const ChunkWriterOptions& writer)
    : impl_(std::make_unique<Impl>(store, chunker, writer)) {}
MemoryImageWriter::~MemoryImageWriter() = default;

Status MemoryImageWriter::Write(ByteView data) { return impl_->chunker.Write(data); }

Result<ChunkList> MemoryImageWriter::Finish() {
  SLINGSHOT_RETURN_IF_ERROR(impl_->chunker.Finish());
  SLINGSHOT_ASSIGN_OR_RETURN(std::vector<ChunkId> ids, impl_->writer.Finish());
  ChunkList list;
  list.entries.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    list.entries.push_back({ids[i], impl_->sizes[i]});
    list.total_size += impl_->sizes[i];
  }
  return list;
}

const IngestStats& MemoryImageWriter::stats() const { return impl_->writer.stats(); }

Status ReadMemoryImage(const ChunkList& list, ChunkSource* source,
                       const std::function<Status(ByteView)>& sink) {
  // Windows of chunks asked for at once (GetMany pipelines them over the
  // network), handed to the sink in order as they arrive.
  constexpr size_t kWindow = 256;
  const size_t n = list.entries.size();
  Bytes zeros;
  Status st;
  size_t at = 0;
  auto zero_run = [&](size_t end) {  // the all-zero chunks at `at` (never stored)
    while (st.ok() && at < end && list.entries[at].id.IsNull()) {
      zeros.assign(list.entries[at].size, 0);
      st = sink(zeros);
      ++at;
    }
  };
  while (at < n && st.ok()) {
    std::vector<ChunkId> ids;
    size_t end = at;
    while (end < n && ids.size() < kWindow) {
      if (!list.entries[end].id.IsNull()) ids.push_back(list.entries[end].id);
      ++end;
    }
    Status fetched = source->GetMany(ids, [&](const ChunkId&, Result<Bytes>&& data) {
      zero_run(end);
      if (!st.ok()) return;
      const auto& e = list.entries[at];
      if (!data.ok()) {
        st = data.status().Annotate("memory chunk " + std::to_string(at) + " (" + e.id.Short() + ")");
        return;
      }
      if (data->size() != e.size) {
        st = Status::Corruption("memory chunk " + std::to_string(at) + " (" + e.id.Short() + ") is " +
                                std::to_string(data->size()) + " bytes, the list says " + std::to_string(e.size));
        return;
      }
      st = sink(*data);
      ++at;
    });
    SLINGSHOT_RETURN_IF_ERROR(fetched);
    zero_run(end);
    if (st.ok() && at < end) {
      return Status::Unavailable(source->Describe() + " returned " + std::to_string(at) + " of the memory image's " +
                                 std::to_string(n) + " chunks and no error");
    }
  }
  return st;
}

Result<ChunkId> StoreFile(const std::string& path, ChunkStore* store) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("open " + path, errno);
  MemoryImageWriter w(store, ChunkerOptions{});
  Bytes buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("read " + path, errno);
    if (n == 0) break;
    SLINGSHOT_RETURN_IF_ERROR(w.Write(ByteView(buf.data(), static_cast<size_t>(n))));
  }
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkList list, w.Finish());
  return store->PutObject(list.Encode());
}

Status WriteFileFromList(const ChunkList& list, ChunkSource* source, const std::string& path) {
  const std::string tmp = path + ".part";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("create " + tmp, errno);
  Status st = ReadMemoryImage(list, source, [&](ByteView b) -> Status {
    size_t off = 0;
    while (off < b.size()) {
      ssize_t n = ::write(fd.get(), b.data() + off, b.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno("write " + tmp, errno);
      off += static_cast<size_t>(n);
    }
    return Status::OK();
  });
  if (st.ok() && ::fsync(fd.get()) != 0) st = Status::FromErrno("fsync " + tmp, errno);
  fd.Reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Status::FromErrno("rename " + tmp, errno);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

}  // namespace slingshot
