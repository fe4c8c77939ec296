#include "slingshot/store/portable.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/base/log.h"

namespace slingshot {
namespace {

constexpr Magic kIndexMagic = {'S', 'S', 'P', 'X'};
constexpr uint16_t kIndexVersion = 1;
constexpr char kPackMagic[4] = {'S', 'S', 'P', 'P'};
constexpr uint16_t kPackVersion = 1;
constexpr size_t kPackHeader = 16;
constexpr size_t kEntrySize = ChunkId::kSize + 4 + 8 + 4;
constexpr size_t kMaxIndexEntries = 16u << 20;  // 1 TiB of 64 KiB chunks
constexpr uint64_t kMaxPackBytes = 1ull << 30;   // a new pack after 1 GiB (FAT32 sticks cap files at 4 GiB)
constexpr size_t kMaxValue = kMaxChunkSize + ChunkStore::kValueHeaderSize + 64;

std::string SubDir(const std::string& dir) { return dir + "/slingshot-chunks"; }
std::string PackPath(const std::string& sub, uint32_t n) {
  char name[32];
  std::snprintf(name, sizeof(name), "/pack-%08u.dat", n);
  return sub + name;
}

using Index = std::unordered_map<ChunkId, PortableLocation, ChunkIdHash>;

Result<Index> ReadIndex(const std::string& sub) {
  std::string path = sub + "/INDEX";
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, ReadFileBounded(path, kFrameOverhead + 4 + kEntrySize * kMaxIndexEntries));
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(b, kIndexMagic, kIndexVersion,
                                                      4 + kEntrySize * kMaxIndexEntries, "stick index " + path));
  Decoder d(f.body, "stick index " + path);
  uint32_t n = d.U32();
  Index index;
  if (size_t(n) * kEntrySize != d.remaining()) {
    d.Fail("count " + std::to_string(n) + " does not match its length");
  } else {
    index.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      ChunkId id = d.Id();
      PortableLocation loc;
      loc.pack = d.U32();
      loc.offset = d.U64();
      loc.length = d.U32();
      if (loc.length > kMaxValue || loc.offset < kPackHeader + ChunkId::kSize) d.Fail("entry " + std::to_string(i) + " is out of bounds");
      index.emplace(id, loc);
    }
  }
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  return index;
}

Status WriteIndex(const std::string& sub, const Index& index) {
  std::vector<std::pair<ChunkId, PortableLocation>> sorted(index.begin(), index.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  Bytes body;
  Encoder e(&body);
  e.U32(static_cast<uint32_t>(sorted.size()));
  for (const auto& [id, loc] : sorted) {
    e.Id(id);
    e.U32(loc.pack);
    e.U64(loc.offset);
    e.U32(loc.length);
  }
  SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(sub + "/INDEX", SealFrame(kIndexMagic, kIndexVersion, body)));
  return SyncDir(sub);
}

Bytes PackHeader(uint32_t number) {
  Bytes h(kPackHeader);
  std::memcpy(h.data(), kPackMagic, 4);
  PutU16(h.data() + 4, kPackVersion);
  PutU16(h.data() + 6, 0);
  PutU32(h.data() + 8, number);
  PutU32(h.data() + 12, crc32c::Value(h.data(), 12));
  return h;
}

Status CheckPackHeader(int fd, uint32_t number, const std::string& path) {
  uint8_t h[kPackHeader];
  SLINGSHOT_RETURN_IF_ERROR(PreadExact(fd, h, sizeof(h), 0, path));
  if (std::memcmp(h, kPackMagic, 4) != 0 || GetU32(h + 12) != crc32c::Value(h, 12) ||
      GetU16(h + 4) != kPackVersion || GetU32(h + 8) != number) {
    return Status::Corruption(path + " is not stick pack " + std::to_string(number));
  }
  return Status::OK();
}

}  // namespace

// --- reader ---

PortableSource::~PortableSource() = default;

Result<std::unique_ptr<PortableSource>> PortableSource::Open(const std::string& dir) {
  std::string sub = SubDir(dir);
  if (!std::filesystem::exists(sub + "/INDEX")) {
    return Status::NotFound(dir + " holds no Slingshot chunks (write some with `slingshot-client portable sync " +
                            dir + "`)");
  }
  std::unique_ptr<PortableSource> p(new PortableSource());
  p->dir_ = dir;
  SLINGSHOT_ASSIGN_OR_RETURN(p->index_, ReadIndex(sub));
  // Open each pack named by the index once; a missing or foreign pack drops
  // its entries (the stick is a cache, not a source of truth).
  std::unordered_set<uint32_t> bad;
  for (const auto& [id, loc] : p->index_) {
    if (p->packs_.count(loc.pack) || bad.count(loc.pack)) continue;
    std::string path = PackPath(sub, loc.pack);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    Status st = fd.get() < 0 ? Status::FromErrno("open " + path, errno) : CheckPackHeader(fd.get(), loc.pack, path);
    if (!st.ok()) {
      LogWarning("portable storage: " + st.ToString() + "; its chunks will come from elsewhere");
      bad.insert(loc.pack);
      continue;
    }
    p->packs_.emplace(loc.pack, std::move(fd));
  }
  if (!bad.empty()) std::erase_if(p->index_, [&](const auto& e) { return bad.count(e.second.pack) > 0; });
  return p;
}

bool PortableSource::MayHave(const ChunkId& id) const { return index_.count(id) > 0; }

std::string PortableSource::Describe() const { return "stick " + dir_; }

Result<Bytes> PortableSource::Get(const ChunkId& id) {
  auto it = index_.find(id);
  if (it == index_.end()) {
    ++misses_;
    return Status::NotFound("chunk " + id.ToHex() + " is not on " + Describe());
  }
  auto start = std::chrono::steady_clock::now();
  const PortableLocation& loc = it->second;
  int fd = packs_.at(loc.pack).get();
  Bytes entry(ChunkId::kSize + loc.length);
  // A failed read (the stick pulled out) is an error, not a corrupt copy.
  Status st = PreadExact(fd, entry.data(), entry.size(), loc.offset - ChunkId::kSize, Describe());
  if (!st.ok()) return st;
  Result<Bytes> raw = std::memcmp(entry.data(), id.bytes.data(), ChunkId::kSize) != 0
                          ? Result<Bytes>(Status::Corruption("the stick's index points chunk " + id.Short() +
                                                             " at another chunk"))
                          : ChunkStore::DecodeValue(id, ByteView(entry).subspan(ChunkId::kSize));
  if (!raw.ok()) {
    ++corrupt_;
    return raw.status().Annotate(Describe());
  }
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
  uint64_t prev = mean_read_us_.load();
  mean_read_us_ = prev == 0 ? uint64_t(us) : (prev * 7 + uint64_t(us)) / 8;
  ++reads_;
  bytes_ += raw->size();
  return raw;
}

PortableStats PortableSource::stats() const {
  PortableStats s;
  s.chunks = index_.size();
  s.reads = reads_;
  s.bytes = bytes_;
  s.corrupt = corrupt_;
  s.misses = misses_;
  s.mean_read_us = mean_read_us_;
  return s;
}

// --- writer ---

PortableWriter::~PortableWriter() = default;

Result<std::unique_ptr<PortableWriter>> PortableWriter::Open(const std::string& dir) {
  std::string sub = SubDir(dir);
  std::error_code ec;
  std::filesystem::create_directories(sub, ec);
  if (ec) return Status::IOError("create " + sub + ": " + ec.message());
  std::unique_ptr<PortableWriter> w(new PortableWriter());
  w->dir_ = dir;
  if (std::filesystem::exists(sub + "/INDEX")) {
    auto index = ReadIndex(sub);
    if (index.ok()) {
      w->index_ = std::move(*index);
    } else {
      LogWarning("portable storage: " + index.status().ToString() + "; starting the stick afresh");
    }
  }
  for (const auto& e : std::filesystem::directory_iterator(sub, ec)) {
    unsigned n = 0;
    if (std::sscanf(e.path().filename().c_str(), "pack-%08u.dat", &n) == 1) w->next_pack_ = std::max(w->next_pack_, n + 1);
  }
  return w;
}

bool PortableWriter::Has(const ChunkId& id) const { return index_.count(id) > 0; }

Status PortableWriter::Add(const ChunkId& id, ByteView raw) {
  if (Has(id)) return Status::OK();
  std::string sub = SubDir(dir_);
  if (pack_.get() < 0 || pack_size_ >= kMaxPackBytes) {
    if (pack_.get() >= 0 && ::fsync(pack_.get()) != 0) return Status::FromErrno("fsync stick pack", errno);
    pack_number_ = next_pack_++;
    std::string path = PackPath(sub, pack_number_);
    pack_ = UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (pack_.get() < 0) return Status::FromErrno("create " + path, errno);
    Bytes h = PackHeader(pack_number_);
    SLINGSHOT_RETURN_IF_ERROR(WriteAll(pack_.get(), h.data(), h.size(), path));
    pack_size_ = h.size();
  }
  Bytes value = ChunkStore::EncodeValue(raw, 3);
  Bytes entry(id.bytes.begin(), id.bytes.end());
  entry.insert(entry.end(), value.begin(), value.end());
  SLINGSHOT_RETURN_IF_ERROR(PwriteAll(pack_.get(), entry.data(), entry.size(), pack_size_, PackPath(sub, pack_number_)));
  index_[id] = PortableLocation{pack_number_, pack_size_ + ChunkId::kSize, static_cast<uint32_t>(value.size())};
  pack_size_ += entry.size();
  stats_.added++;
  stats_.added_bytes += entry.size();
  return Status::OK();
}

Status PortableWriter::Commit(const std::unordered_set<ChunkId, ChunkIdHash>* keep) {
  std::string sub = SubDir(dir_);
  if (pack_.get() >= 0 && ::fsync(pack_.get()) != 0) return Status::FromErrno("fsync stick pack", errno);
  if (keep) {
    size_t before = index_.size();
    std::erase_if(index_, [&](const auto& e) { return keep->count(e.first) == 0; });
    stats_.dropped += before - index_.size();
  }
  stats_.kept = index_.size() - stats_.added;
  SLINGSHOT_RETURN_IF_ERROR(WriteIndex(sub, index_));
  // Packs no entry points into any more go (after the index stopped naming them).
  std::unordered_set<uint32_t> live;
  for (const auto& [id, loc] : index_) live.insert(loc.pack);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(sub, ec)) {
    unsigned n = 0;
    if (std::sscanf(e.path().filename().c_str(), "pack-%08u.dat", &n) == 1 && !live.count(n) &&
        !(pack_.get() >= 0 && n == pack_number_)) {
      std::filesystem::remove(e.path(), ec);
      stats_.packs_removed++;
    }
  }
  return Status::OK();
}

}  // namespace slingshot
