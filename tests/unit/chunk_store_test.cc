// ChunkStore on real Berkeley DB files in temp dirs: round trips, both
// modes, corruption, lying lengths, crash durability (kill -9), GC.
#include "slingshot/store/chunk_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/gc.h"
#include "slingshot/base/file_util.h"
#include "test_util.h"

namespace slingshot {
namespace {

using testing::RandomBytes;
using testing::TempDir;
using testing::TextBytes;

std::unique_ptr<ChunkStore> OpenTxn(const std::string& dir) {
  auto s = ChunkStore::Open(dir, {});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::unique_ptr<ChunkStore> OpenCache(const std::string& dir, uint64_t budget) {
  ChunkStoreOptions o;
  o.mode = ChunkStoreOptions::Mode::kCache;
  o.cache_budget_bytes = budget;
  auto s = ChunkStore::Open(dir, o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

TEST(ChunkStoreTest, PutGetContainsRoundTrip) {
  TempDir t;
  auto store = OpenTxn(t.path());
  Bytes a = RandomBytes(65536, 1), b = TextBytes(10000, 2);
  auto ida = store->Put(a);
  auto idb = store->Put(b);
  ASSERT_TRUE(ida.ok() && idb.ok());
  EXPECT_EQ(*ida, ChunkId::Of(a));
  EXPECT_EQ(*store->Get(*ida), a);
  EXPECT_EQ(*store->Get(*idb), b);
  EXPECT_TRUE(*store->Contains(*ida));
  ChunkId absent = ChunkId::Of(AsBytes("absent"));
  EXPECT_FALSE(*store->Contains(absent));
  EXPECT_TRUE(store->Get(absent).status().IsNotFound());
  // Putting again is a no-op.
  ASSERT_TRUE(store->Put(a).ok());
  EXPECT_EQ(store->Stats()->chunks, 2u);
}

TEST(ChunkStoreTest, DataSurvivesReopen) {
  TempDir t;
  std::vector<ByteView> views;
  std::vector<Bytes> chunks;
  for (int i = 0; i < 20; ++i) chunks.push_back(RandomBytes(1000 + i * 997, i));
  for (auto& c : chunks) views.push_back(c);
  std::vector<ChunkId> ids;
  {
    auto store = OpenTxn(t.path());
    ASSERT_TRUE(store->PutBatch(views, &ids).ok());
  }
  auto store = OpenTxn(t.path());
  for (size_t i = 0; i < chunks.size(); ++i) EXPECT_EQ(*store->Get(ids[i]), chunks[i]);
}

TEST(ChunkStoreTest, CompressibleChunksAreStoredCompressed) {
  TempDir t;
  auto store = OpenTxn(t.path());
  ASSERT_TRUE(store->Put(TextBytes(65536, 3)).ok());
  ASSERT_TRUE(store->Put(RandomBytes(65536, 4)).ok());
  auto s = store->Stats();
  EXPECT_EQ(s->raw_bytes, 2u * 65536);
  // The text chunk shrinks a lot; the random one is kept raw (+ header).
  EXPECT_LT(s->stored_bytes, 65536u + 16 + 20000);
}

TEST(ChunkStoreTest, EveryBitFlipOfAnEncodedValueIsDetected) {
  for (Bytes raw : {TextBytes(300, 5), RandomBytes(120, 6)}) {
    ChunkId id = ChunkId::Of(raw);
    Bytes v = ChunkStore::EncodeValue(raw, 1);
    ASSERT_EQ(*ChunkStore::DecodeValue(id, v), raw);
    for (size_t bit = 0; bit < v.size() * 8; ++bit) {
      Bytes w = v;
      w[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      auto r = ChunkStore::DecodeValue(id, w);
      ASSERT_FALSE(r.ok()) << "bit " << bit;
      ASSERT_TRUE(r.status().IsCorruption());
    }
  }
}

TEST(ChunkStoreTest, LyingLengthInValueHeaderIsRefused) {
  Bytes raw = TextBytes(1000, 7);
  ChunkId id = ChunkId::Of(raw);
  Bytes v = ChunkStore::EncodeValue(raw, 1);
  // Claim a 1 GiB chunk and fix up the CRC so only the length lies.
  PutU32(v.data() + 4, 1u << 30);
  PutU32(v.data() + 12, crc32c::Extend(crc32c::Value(v.data(), 12), v.data() + 16, v.size() - 16));
  auto r = ChunkStore::DecodeValue(id, v);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exceeds the chunk size limit"), std::string::npos);
  // A raw length within bounds that disagrees with the zstd frame.
  Bytes w = ChunkStore::EncodeValue(raw, 1);
  PutU32(w.data() + 4, 999);
  PutU32(w.data() + 12, crc32c::Extend(crc32c::Value(w.data(), 12), w.data() + 16, w.size() - 16));
  EXPECT_TRUE(ChunkStore::DecodeValue(id, w).status().IsCorruption());
}

// Finds the file under dir that holds needle; returns its path and offset.
std::pair<std::string, size_t> Locate(const std::string& dir, ByteView needle) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    Bytes b = testing::ReadFile(e.path().string());
    size_t at = testing::Find(b, needle);
    if (at != std::string::npos) return {e.path().string(), at};
  }
  return {"", 0};
}

void FlippedBitIsReported(ChunkStoreOptions::Mode mode) {
  TempDir t;
  Bytes raw = RandomBytes(65536, 8);  // incompressible: stored verbatim
  ChunkStoreOptions o;
  o.mode = mode;
  ChunkId id;
  {
    auto store = std::move(ChunkStore::Open(t.path(), o)).value();
    id = *store->Put(raw);
    ASSERT_TRUE(store->Checkpoint().ok());
  }
  auto [file, at] = Locate(t.path(), ByteView(raw).subspan(30000, 64));
  ASSERT_FALSE(file.empty()) << "chunk bytes not found in the store's files";
  testing::FlipBit(file, (at + 10) * 8 + 3);
  auto store = std::move(ChunkStore::Open(t.path(), o)).value();
  auto r = store->Get(id);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(id.ToHex()), std::string::npos);
  uint64_t bad = 0;
  ASSERT_TRUE(store->VerifyAll([&](const ChunkId& b, const Status&) { bad += b == id; }).ok());
  EXPECT_EQ(bad, 1u);
}

TEST(ChunkStoreTest, FlippedBitInAPackIsReported) { FlippedBitIsReported(ChunkStoreOptions::Mode::kTransactional); }
TEST(ChunkStoreTest, FlippedBitInTheCacheDatabaseIsReported) { FlippedBitIsReported(ChunkStoreOptions::Mode::kCache); }

TEST(ChunkStoreTest, DamagedIndexRecordIsReported) {
  TempDir t;
  ChunkId id;
  {
    auto store = OpenTxn(t.path());
    id = *store->Put(RandomBytes(5000, 9));
    ASSERT_TRUE(store->Checkpoint().ok());
  }
  // The one 28-byte location record: "SL", version 1, 0, pack 1.
  const std::string file = t / "chunks.db";
  Bytes db = testing::ReadFile(file);
  const uint8_t prefix[] = {'S', 'L', 1, 0, 1, 0, 0, 0};
  size_t at = testing::Find(db, ByteView(prefix, sizeof(prefix)));
  ASSERT_NE(at, std::string::npos);
  testing::FlipBit(file, (at + 9) * 8);  // inside the pack offset
  auto store = OpenTxn(t.path());
  auto r = store->Get(id);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

TEST(ChunkStoreTest, CompactionReclaimsPacksAndKeepsLiveChunks) {
  TempDir t;
  std::vector<Bytes> keep, drop;
  std::vector<ChunkId> keep_ids, drop_ids;
  for (int round = 0; round < 3; ++round) {  // three processes, three packs
    auto store = OpenTxn(t.path());
    for (int i = 0; i < 20; ++i) {
      Bytes b = RandomBytes(20000, round * 100 + i);
      (i % 4 == 0 ? keep : drop).push_back(b);
      (i % 4 == 0 ? keep_ids : drop_ids).push_back(*store->Put(b));
    }
  }
  auto store = OpenTxn(t.path());
  auto before = store->Stats();
  EXPECT_EQ(before->packs, 3u);
  ASSERT_TRUE(store->Delete(drop_ids).ok());
  auto c = store->CompactPacks(0.25);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->packs_removed, 3u);
  EXPECT_EQ(c->chunks_moved, keep.size());
  auto after = store->Stats();
  EXPECT_EQ(after->packs, 1u);
  EXPECT_LT(after->pack_file_bytes, before->pack_file_bytes / 3);
  for (size_t i = 0; i < keep.size(); ++i) ASSERT_EQ(*store->Get(keep_ids[i]), keep[i]);
  store.reset();
  store = OpenTxn(t.path());  // and after a restart
  for (size_t i = 0; i < keep.size(); ++i) ASSERT_EQ(*store->Get(keep_ids[i]), keep[i]);
  for (const auto& id : drop_ids) EXPECT_FALSE(*store->Contains(id));
}

TEST(ChunkStoreTest, CompactionRefusesToCopyADamagedChunk) {
  TempDir t;
  Bytes raw = RandomBytes(30000, 10);
  ChunkId id, other;
  {
    auto store = OpenTxn(t.path());
    id = *store->Put(raw);
    other = *store->Put(RandomBytes(30000, 11));
  }
  auto [file, at] = Locate(t.path(), ByteView(raw).subspan(10000, 64));
  ASSERT_NE(file.find("pack-"), std::string::npos);
  testing::FlipBit(file, at * 8);
  auto store = OpenTxn(t.path());
  ASSERT_TRUE(store->Delete(std::vector<ChunkId>{other}).ok());
  auto c = store->CompactPacks(0.1);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsCorruption());
  EXPECT_TRUE(std::filesystem::exists(file)) << "the pack with the only copy must be kept";
}

TEST(ChunkStoreTest, ModeMismatchIsRefused) {
  TempDir t;
  { auto s = OpenTxn(t.path()); }
  ChunkStoreOptions o;
  o.mode = ChunkStoreOptions::Mode::kCache;
  auto r = ChunkStore::Open(t.path(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  ChunkStoreOptions none;
  none.create_if_missing = false;
  EXPECT_TRUE(ChunkStore::Open(t / "nothing", none).status().IsNotFound());
}

TEST(ChunkStoreTest, CacheEvictsLeastRecentlyUsedWithinBudget) {
  TempDir t;
  const uint64_t budget = 12 * (65536 + 16);
  auto cache = OpenCache(t.path(), budget);
  std::vector<ChunkId> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(*cache->Put(RandomBytes(65536, 100 + i)));
  ASSERT_TRUE(cache->Get(ids[0]).ok());  // chunk 0 becomes the most recent
  for (int i = 10; i < 20; ++i) ids.push_back(*cache->Put(RandomBytes(65536, 100 + i)));
  auto s = cache->Stats();
  EXPECT_LE(s->stored_bytes, budget);
  EXPECT_EQ(s->evictions, 8u);
  EXPECT_TRUE(*cache->Contains(ids[0]));
  EXPECT_FALSE(*cache->Contains(ids[1]));
  EXPECT_TRUE(*cache->Contains(ids[19]));
}

TEST(ChunkStoreTest, CacheReopenKeepsBudgetAndDamagedCacheStartsEmpty) {
  TempDir t;
  {
    auto cache = OpenCache(t.path(), 0);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache->Put(RandomBytes(65536, 200 + i)).ok());
    ASSERT_TRUE(cache->Checkpoint().ok());
  }
  {
    auto cache = OpenCache(t.path(), 4 * 65552);  // a smaller budget applies at once
    EXPECT_LE(cache->Stats()->stored_bytes, 4u * 65552);
  }
  testing::WriteFile(t / "chunks.db", AsBytes("this is not a database"));
  auto cache = OpenCache(t.path(), 0);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->Stats()->chunks, 0u);
  EXPECT_TRUE(cache->Put(RandomBytes(10, 1)).ok());
}

TEST(ChunkStoreTest, GarbageInBerkeleyDbRegionFilesIsSweptAndTheStoreOpens) {
  TempDir t;
  Bytes kept = RandomBytes(50000, 31);
  { ASSERT_TRUE(OpenTxn(t.path())->Put(kept).ok()); }
  // Region files hold nothing durable: garbage in them (or ones an older
  // version left) must neither crash nor stop the open.
  for (const char* name : {"/__db.001", "/__db.002"}) {
    std::ofstream(t.path() + name, std::ios::binary) << std::string(64 << 10, 'x');
  }
  auto store = OpenTxn(t.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(*store->Get(ChunkId::Of(kept)), kept);
  EXPECT_FALSE(std::filesystem::exists(t.path() + "/__db.001"));
  uint64_t bad = 0;
  ASSERT_TRUE(store->VerifyAll([&](const ChunkId&, const Status&) { ++bad; }).ok());
  EXPECT_EQ(bad, 0u);
  // And the regions stay in memory: none is mapped from a file.
  EXPECT_FALSE(std::filesystem::exists(t.path() + "/__db.001"));
}

TEST(ChunkStoreTest, ADamagedLogIsReportedWithStepsThatWorkAndNothingCrashes) {
  TempDir t;
  {
    auto s = OpenTxn(t.path());
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(s->Put(RandomBytes(20000, 500 + i)).ok());
  }
  const std::string log = t.path() + "/log.0000000001";
  Bytes b = *ReadFileBounded(log, 64 << 20);
  size_t used = b.size();
  while (used > 0 && b[used - 1] == 0) --used;
  ASSERT_GT(used, 100000u);
  for (size_t tenth : {3, 6, 9}) {
    for (size_t i = 0; i < 8; ++i) b[used * tenth / 10 + i] ^= 0xa5;
  }
  testing::WriteFile(log, b);
  auto store = ChunkStore::Open(t.path(), {});
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(store.status().IsCorruption()) << store.status().ToString();
  EXPECT_NE(store.status().message().find("could not recover"), std::string::npos) << store.status().ToString();
  EXPECT_NE(store.status().message().find("bundle import"), std::string::npos) << store.status().ToString();
  EXPECT_EQ(store.status().message().find("reopen the store"), std::string::npos) << store.status().ToString();
}

// The reserve for recovery on a full disk holds real blocks, also after a
// copy of the store made it a hole (cp and rsync make zeros sparse).
TEST(ChunkStoreTest, TheReserveIsAllocatedAgainWhenACopyMadeItSparse) {
  TempDir t;
  ChunkStoreOptions o;
  o.reserve_bytes = 1 << 20;
  auto allocated = [&] {
    struct stat st;
    return ::stat((t.path() + "/RESERVE").c_str(), &st) == 0 ? uint64_t(st.st_blocks) * 512 : 0;
  };
  { ASSERT_TRUE(ChunkStore::Open(t.path(), o).ok()); }
  EXPECT_GE(allocated(), o.reserve_bytes);
  // As a copy leaves it: the same size, no blocks.
  ASSERT_EQ(::unlink((t.path() + "/RESERVE").c_str()), 0);
  { std::ofstream(t.path() + "/RESERVE"); }
  ASSERT_EQ(::truncate((t.path() + "/RESERVE").c_str(), static_cast<off_t>(o.reserve_bytes)), 0);
  ASSERT_LT(allocated(), o.reserve_bytes);
  { ASSERT_TRUE(ChunkStore::Open(t.path(), o).ok()); }
  EXPECT_GE(allocated(), o.reserve_bytes);
}

TEST(ChunkStoreTest, SecondOpenWhileInUseIsRefused) {
  TempDir t;
  for (auto mode : {ChunkStoreOptions::Mode::kTransactional, ChunkStoreOptions::Mode::kCache}) {
    ChunkStoreOptions o;
    o.mode = mode;
    std::string dir = t / (mode == ChunkStoreOptions::Mode::kCache ? "cache" : "store");
    auto first = ChunkStore::Open(dir, o);
    ASSERT_TRUE(first.ok());
    ChunkId id = *(*first)->Put(AsBytes("kept"));
    auto second = ChunkStore::Open(dir, o);
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.status().message().find("in use by another process"), std::string::npos);
    first->reset();
    auto third = ChunkStore::Open(dir, o);
    ASSERT_TRUE(third.ok()) << third.status().ToString();
    EXPECT_TRUE(*(*third)->Contains(id));
  }
}

// RLIMIT_FSIZE stands in for a full disk: the failed put reports it and
// loses nothing that was stored before; the store works once space returns.
TEST(ChunkStoreTest, FullDiskFailsThePutAndLosesNothing) {
  TempDir t;
  Bytes before = RandomBytes(50000, 21), big = RandomBytes(3 << 20, 22), after = RandomBytes(1000, 23);
  { ASSERT_TRUE(OpenTxn(t.path())->Put(before).ok()); }
  int code = testing::RunInChild([&] {
    ::signal(SIGXFSZ, SIG_IGN);
    auto s = ChunkStore::Open(t.path(), {});
    if (!s.ok()) return 10;
    rlimit lim;
    lim.rlim_cur = lim.rlim_max = 1u << 20;  // no file may grow past 1 MiB
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 11;
    auto r = (*s)->Put(big);
    if (r.ok() || r.status().code() != Status::Code::kIOError) return 12;
    return (*s)->Put(after).ok() ? 0 : 13;
  });
  ASSERT_EQ(code, 0);
  auto store = OpenTxn(t.path());
  EXPECT_EQ(*store->Get(ChunkId::Of(before)), before);
  EXPECT_EQ(*store->Get(ChunkId::Of(after)), after);
  EXPECT_FALSE(*store->Contains(ChunkId::Of(big)));
  uint64_t bad = 0;
  ASSERT_TRUE(store->VerifyAll([&](const ChunkId&, const Status&) { ++bad; }).ok());
  EXPECT_EQ(bad, 0u);
}

TEST(ChunkStoreTest, ObjectsAndRefs) {
  TempDir t;
  auto store = OpenTxn(t.path());
  Bytes obj = TextBytes(500, 9);
  ChunkId oid = *store->PutObject(obj);
  EXPECT_EQ(*store->GetObject(oid), obj);
  ASSERT_TRUE(store->SetRef({"disk/a", ObjectKind::kDiskTable, oid}).ok());
  ASSERT_TRUE(store->SetRef({"disk/b", ObjectKind::kDiskTable, oid}).ok());
  auto refs = store->ListRefs();
  ASSERT_EQ(refs->size(), 2u);
  EXPECT_EQ((*refs)[0].name, "disk/a");
  EXPECT_EQ(store->GetRef("disk/b")->object, oid);
  ASSERT_TRUE(store->DeleteRef("disk/a").ok());
  EXPECT_TRUE(store->GetRef("disk/a").status().IsNotFound());
  EXPECT_FALSE(store->SetRef({"", ObjectKind::kDiskTable, oid}).ok());
}

// The child stores batches and reports each acknowledged batch on a pipe;
// it is killed with SIGKILL mid-stream. Everything acknowledged must be
// there after recovery, and nothing stored may be damaged.
TEST(ChunkStoreTest, AcknowledgedPutsSurviveKill9) {
  TempDir t;
  { auto s = OpenTxn(t.path()); }
  auto batch_chunk = [](uint64_t batch, int j) { return RandomBytes(8192 + 4096 * j, batch * 16 + j); };
  auto last = testing::KillDuringWrites(
      [&](const std::function<void(uint64_t)>& ack) {
        auto s = ChunkStore::Open(t.path(), {});
        if (!s.ok()) return;
        for (uint64_t b = 0;; ++b) {
          std::vector<Bytes> cs;
          std::vector<ByteView> vs;
          for (int j = 0; j < 8; ++j) cs.push_back(batch_chunk(b, j));
          for (auto& c : cs) vs.push_back(c);
          if (!(*s)->PutBatch(vs, nullptr).ok()) return;
          ack(b);
        }
      },
      /*after=*/26);
  ASSERT_TRUE(last.has_value()) << "the writer failed before it was killed";
  const uint64_t acked = *last;

  auto store = OpenTxn(t.path());
  for (uint64_t i = 0; i <= acked; ++i) {
    for (int j = 0; j < 8; ++j) {
      Bytes want = batch_chunk(i, j);
      auto got = store->Get(ChunkId::Of(want));
      ASSERT_TRUE(got.ok()) << "batch " << i << " chunk " << j << ": " << got.status().ToString();
      ASSERT_EQ(*got, want);
    }
  }
  uint64_t bad = 0;
  ASSERT_TRUE(store->VerifyAll([&](const ChunkId&, const Status&) { ++bad; }).ok());
  EXPECT_EQ(bad, 0u);

  // The killed writer's pack may end in a torn entry: compacting every pack
  // must step over it and keep every acknowledged chunk.
  auto c = store->CompactPacks(0.0);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_GE(c->packs_removed, 1u);
  store.reset();
  store = OpenTxn(t.path());
  for (uint64_t i = 0; i <= acked; ++i) {
    for (int j = 0; j < 8; ++j) ASSERT_EQ(*store->Get(ChunkId::Of(batch_chunk(i, j))), batch_chunk(i, j));
  }
}

TEST(GcTest, SweepsOnlyWhatNoRefReaches) {
  TempDir t;
  auto store = OpenTxn(t.path());
  Bytes img1 = RandomBytes(10 * 65536, 11), img2 = RandomBytes(6 * 65536, 12);
  std::memcpy(img2.data(), img1.data(), 65536);  // one shared chunk
  testing::WriteFile(t / "1.img", img1);
  testing::WriteFile(t / "2.img", img2);
  for (auto [name, file] : {std::pair{"disk/1", "1.img"}, std::pair{"disk/2", "2.img"}}) {
    auto imp = ImportDisk(t / file, store.get());
    ASSERT_TRUE(imp.ok());
    ASSERT_TRUE(store->SetRef({name, ObjectKind::kDiskTable, *store->PutObject(imp->table.Encode())}).ok());
  }
  ASSERT_TRUE(store->Put(AsBytes("orphan chunk")).ok());
  auto g = CollectGarbage(store.get());
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->swept_chunks, 1u);
  EXPECT_EQ(g->live_chunks, 15u);

  ASSERT_TRUE(store->DeleteRef("disk/1").ok());
  g = CollectGarbage(store.get());
  EXPECT_EQ(g->swept_chunks, 9u);
  EXPECT_EQ(g->swept_objects, 1u);
  auto r = store->GetRef("disk/2");
  auto table = DiskTable::Decode(*store->GetObject(r->object));
  ASSERT_TRUE(ExportDisk(*table, store.get(), t / "2.out").ok());
  EXPECT_EQ(testing::ReadFile(t / "2.out"), img2);
}

TEST(GcTest, RefusesToSweepWhenAReachableObjectIsMissing) {
  TempDir t;
  auto store = OpenTxn(t.path());
  ASSERT_TRUE(store->Put(AsBytes("some chunk")).ok());
  ChunkId ghost = ChunkId::Of(AsBytes("no such object"));
  ASSERT_TRUE(store->SetRef({"disk/ghost", ObjectKind::kDiskTable, ghost}).ok());
  auto g = CollectGarbage(store.get());
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("before sweeping anything"), std::string::npos);
  EXPECT_EQ(store->Stats()->chunks, 1u);
}

TEST(GcTest, ChunksStoredDuringCollectionAreKept) {
  TempDir t;
  auto store = OpenTxn(t.path());
  auto guard = store->BeginGc();
  ChunkId id = *store->Put(AsBytes("stored while marking"));
  EXPECT_TRUE(store->IsProtected(id));
  guard.reset();
  EXPECT_FALSE(store->IsProtected(id));
}

}  // namespace
}  // namespace slingshot
