#include "slingshot/disk/chunk_table_export.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/file_util.h"
#include "test_util.h"
#include "../fakes/fault_env.h"

namespace slingshot::testing {
namespace {

class ChunkTableExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = ChunkStore::Open(dir_ / "store", {});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    // 2 MiB + a short tail: random, a zero region, text.
    image_ = RandomBytes((2 << 20) + 1000, 5);
    std::fill(image_.begin() + (512 << 10), image_.begin() + (768 << 10), 0);
    std::ofstream(dir_ / "disk.img", std::ios::binary)
        .write(reinterpret_cast<const char*>(image_.data()), image_.size());
    auto imp = ImportDisk(dir_ / "disk.img", store_.get());
    ASSERT_TRUE(imp.ok()) << imp.status().ToString();
    table_ = imp->table;
  }

  std::unique_ptr<ChunkTableExport> Open(bool read_only = false) {
    ChunkTableExportOptions o;
    o.read_only = read_only;
    o.cached_chunks = 4;
    auto e = ChunkTableExport::Open(table_, store_.get(), dir_ / "overlay", o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(*e) : nullptr;
  }

  Bytes ReadAll(ChunkTableExport* e) {
    Bytes out(e->size());
    Status s = e->Read(0, out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  TempDir dir_;
  std::unique_ptr<ChunkStore> store_;
  Bytes image_;
  DiskTable table_;
};

TEST_F(ChunkTableExportTest, ReadsAssembleChunksAndZeroChunksCostNothing) {
  auto e = Open();
  EXPECT_EQ(e->size(), image_.size());
  EXPECT_TRUE(ReadAll(e.get()) == image_);
  size_t zero = 0;
  for (auto& id : table_.ids) zero += id.IsNull();
  EXPECT_EQ(zero, 4u);  // 256 KiB of zeros in 64 KiB chunks
  auto st = e->stats();
  EXPECT_EQ(st.zero_chunk_reads, zero);
  EXPECT_EQ(st.chunks_fetched, table_.ids.size() - zero);
  // Unaligned reads across chunk borders.
  Bytes piece(100000);
  ASSERT_TRUE(e->Read(60000, piece).ok());
  EXPECT_TRUE(std::equal(piece.begin(), piece.end(), image_.begin() + 60000));
  EXPECT_EQ(e->Read(image_.size() - 10, std::span<uint8_t>(piece.data(), 11)).code(),
            Status::Code::kInvalidArgument);
}

TEST_F(ChunkTableExportTest, RandomWritesMatchAModelAndFreezeStoresThem) {
  auto e = Open();
  Bytes model = image_;
  std::mt19937_64 rng(11);
  for (int round = 0; round < 3; ++round) {
    for (int op = 0; op < 200; ++op) {
      uint64_t off = rng() % model.size();
      uint64_t len = std::min<uint64_t>(1 + rng() % 150000, model.size() - off);
      if (rng() % 5 == 0) {
        ASSERT_TRUE(e->Trim(off, len).ok());
        std::fill(model.begin() + off, model.begin() + off + len, 0);
      } else {
        Bytes data = RandomBytes(len, rng());
        ASSERT_TRUE(e->Write(off, data).ok());
        std::copy(data.begin(), data.end(), model.begin() + off);
      }
    }
    ASSERT_TRUE(ReadAll(e.get()) == model) << "round " << round;
    EXPECT_GT(e->stats().dirty_chunks, 0u);
    auto frozen = e->Freeze(store_.get());
    ASSERT_TRUE(frozen.ok()) << frozen.status().ToString();
    EXPECT_EQ(e->stats().dirty_chunks, 0u);
    // The frozen table, rebuilt from the store alone, is the disk.
    ASSERT_TRUE(ExportDisk(*frozen, store_.get(), dir_ / "frozen.img").ok());
    auto rebuilt = ReadFileBounded(dir_ / "frozen.img", 8 << 20);
    ASSERT_TRUE(rebuilt.ok());
    EXPECT_TRUE(*rebuilt == model) << "round " << round;
    // And the export goes on serving the same bytes.
    EXPECT_TRUE(ReadAll(e.get()) == model);
  }
  // The original table is untouched: the source never saw a write.
  ASSERT_TRUE(ExportDisk(table_, store_.get(), dir_ / "orig.img").ok());
  EXPECT_TRUE(*ReadFileBounded(dir_ / "orig.img", 8 << 20) == image_);
}

// A checkpoint whose guest runs while its memory is saved: the table is
// the disk as it was at BeginFreeze, whatever the guest writes meanwhile;
// a write to a chunk the freeze has yet to take stores its old bytes first.
TEST_F(ChunkTableExportTest, ATwoStepFreezeIsTheDiskAsOfItsBeginWhateverIsWrittenMeanwhile) {
  auto e = Open();
  const uint64_t kChunk = table_.chunk_size;
  Bytes model = image_;
  auto write = [&](uint64_t off, uint64_t len, uint64_t seed) {
    Bytes data = RandomBytes(len, seed);
    ASSERT_TRUE(e->Write(off, data).ok());
    std::copy(data.begin(), data.end(), model.begin() + off);
  };
  write(100, 5000, 1);                   // chunk 0
  write(5 * kChunk + 7, 3 * kChunk, 2);  // chunks 5..8
  const Bytes at_begin = model;
  ASSERT_TRUE(e->BeginFreeze(store_.get()).ok());
  EXPECT_EQ(e->BeginFreeze(store_.get()).code(), Status::Code::kInvalidArgument);
  write(0, 64, 3);                        // chunk 0: its old bytes kept first
  write(6 * kChunk, kChunk, 4);           // chunk 6, whole: kept first too
  write(20 * kChunk + 5, 10, 5);          // chunk 20: not in this freeze
  EXPECT_EQ(e->stats().kept_before_write, 2u);
  EXPECT_EQ(e->stats().dirty_chunks, 3u);
  EXPECT_TRUE(ReadAll(e.get()) == model);
  auto frozen = e->FinishFreeze();
  ASSERT_TRUE(frozen.ok()) << frozen.status().ToString();
  ASSERT_TRUE(ExportDisk(*frozen, store_.get(), dir_ / "frozen.img").ok());
  EXPECT_TRUE(*ReadFileBounded(dir_ / "frozen.img", 8 << 20) == at_begin);
  EXPECT_TRUE(ReadAll(e.get()) == model);
  // The next freeze takes what came after.
  auto next = e->Freeze(store_.get());
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  ASSERT_TRUE(ExportDisk(*next, store_.get(), dir_ / "next.img").ok());
  EXPECT_TRUE(*ReadFileBounded(dir_ / "next.img", 8 << 20) == model);
  EXPECT_EQ(e->FinishFreeze().status().code(), Status::Code::kInvalidArgument);
}

// A freeze whose store fills fails, the guest's writes meanwhile do not,
// and its chunks stay dirty: the next freeze (with room) has them all.
TEST_F(ChunkTableExportTest, AFreezeThatCannotStoreFailsAloneAndItsChunksStayDirty) {
  fake::FaultInjectionEnv env;
  ChunkStoreOptions so;
  so.env = &env;
  auto full = ChunkStore::Open(dir_ / "full-store", so);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  auto e = Open();
  Bytes model = image_;
  for (uint64_t c : {1, 9, 17}) {
    Bytes data = RandomBytes(3000, c);
    ASSERT_TRUE(e->Write(c * table_.chunk_size, data).ok());
    std::copy(data.begin(), data.end(), model.begin() + c * table_.chunk_size);
  }
  env.SetFreeSpace(100);
  ASSERT_TRUE(e->BeginFreeze(full->get()).ok());
  Bytes late = RandomBytes(10, 9);
  ASSERT_TRUE(e->Write(9 * table_.chunk_size, late).ok());  // its old bytes cannot be stored: no matter
  std::copy(late.begin(), late.end(), model.begin() + 9 * table_.chunk_size);
  auto failed = e->FinishFreeze();
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("No space left"), std::string::npos) << failed.status().ToString();
  EXPECT_EQ(e->stats().dirty_chunks, 3u);
  EXPECT_TRUE(ReadAll(e.get()) == model);
  auto frozen = e->Freeze(store_.get());
  ASSERT_TRUE(frozen.ok()) << frozen.status().ToString();
  ASSERT_TRUE(ExportDisk(*frozen, store_.get(), dir_ / "frozen.img").ok());
  EXPECT_TRUE(*ReadFileBounded(dir_ / "frozen.img", 8 << 20) == model);
}

TEST_F(ChunkTableExportTest, ZeroedChunksFreezeAsNullIds) {
  auto e = Open();
  ASSERT_TRUE(e->Trim(0, 3 * 65536).ok());
  auto frozen = e->Freeze(store_.get());
  ASSERT_TRUE(frozen.ok());
  EXPECT_TRUE(frozen->ids[0].IsNull() && frozen->ids[1].IsNull() && frozen->ids[2].IsNull());
  EXPECT_EQ(frozen->ids[3], table_.ids[3]);
}

TEST_F(ChunkTableExportTest, ReadOnlyAndOutOfRangeAreRefused) {
  auto ro = Open(true);
  EXPECT_TRUE(ro->read_only());
  EXPECT_FALSE(ro->Write(0, AsBytes("x")).ok());
  ro.reset();
  auto e = Open();
  EXPECT_EQ(e->Write(image_.size(), AsBytes("x")).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(e->Trim(0, image_.size() + 1).code(), Status::Code::kInvalidArgument);
}

// A source whose copy of one chunk is damaged.
class DamagedSource : public ChunkSource {
 public:
  DamagedSource(ChunkSource* inner, ChunkId bad) : inner_(inner), bad_(bad) {}
  Result<Bytes> Get(const ChunkId& id) override {
    if (id == bad_) return Status::Corruption("chunk " + id.ToHex() + " does not match its id");
    return inner_->Get(id);
  }
  std::string Describe() const override { return "damaged"; }

 private:
  ChunkSource* inner_;
  ChunkId bad_;
};

TEST_F(ChunkTableExportTest, ADamagedChunkIsAnErrorNotData) {
  DamagedSource src(store_.get(), table_.ids[1]);
  auto e = ChunkTableExport::Open(table_, &src, dir_ / "overlay", {});
  ASSERT_TRUE(e.ok());
  Bytes out(4096);
  EXPECT_TRUE((*e)->Read(0, out).ok());
  Status s = (*e)->Read(65536, out);
  EXPECT_EQ(s.code(), Status::Code::kCorruption) << s.ToString();
  // A partial write into that chunk needs its old bytes: refused too.
  EXPECT_EQ((*e)->Write(65536 + 10, AsBytes("abc")).code(), Status::Code::kCorruption);
  // A whole-chunk write does not: it replaces the chunk.
  Bytes whole(65536, 7);
  EXPECT_TRUE((*e)->Write(65536, whole).ok());
  EXPECT_TRUE((*e)->Read(65536, out).ok());
  EXPECT_EQ(out[0], 7);
}

}  // namespace
}  // namespace slingshot::testing
