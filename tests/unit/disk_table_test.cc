// Disk chunk tables: import/export bit-identical, zero chunks, format checks.
#include "slingshot/store/disk_table.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "test_util.h"

namespace slingshot {
namespace {

using testing::RandomBytes;
using testing::TempDir;

Bytes MixedImage(size_t chunks, size_t tail) {
  Bytes img;
  Bytes block = RandomBytes(65536, 77);
  for (size_t i = 0; i < chunks; ++i) {
    Bytes c;
    switch (i % 4) {
      case 0: c.assign(65536, 0); break;
      case 1: c = RandomBytes(65536, i); break;
      case 2: c = block; break;
      default: c = testing::TextBytes(65536, i); break;
    }
    img.insert(img.end(), c.begin(), c.end());
  }
  Bytes t = RandomBytes(tail, 999);
  img.insert(img.end(), t.begin(), t.end());
  return img;
}

TEST(DiskTableTest, ImportExportIsBitIdentical) {
  for (size_t tail : {size_t{0}, size_t{1}, size_t{4095}, size_t{65535}}) {
    TempDir t;
    auto store = std::move(ChunkStore::Open(t / "store", {})).value();
    Bytes img = MixedImage(37, tail);
    testing::WriteFile(t / "in.img", img);
    DiskImportOptions o;
    o.writer.batch_bytes = 256 * 1024;  // several batches in flight
    auto imp = ImportDisk(t / "in.img", store.get(), o);
    ASSERT_TRUE(imp.ok()) << imp.status().ToString();
    EXPECT_EQ(imp->table.image_size, img.size());
    EXPECT_EQ(imp->table.ids.size(), 37u + (tail ? 1 : 0));
    ASSERT_TRUE(ExportDisk(imp->table, store.get(), t / "out.img").ok());
    ASSERT_EQ(testing::ReadFile(t / "out.img"), img) << "tail " << tail;
  }
}

TEST(DiskTableTest, ZeroChunksAreNotStoredAndDuplicatesStoredOnce) {
  TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  testing::WriteFile(t / "in.img", MixedImage(40, 0));
  auto imp = ImportDisk(t / "in.img", store.get());
  ASSERT_TRUE(imp.ok());
  EXPECT_EQ(imp->stats.zero_chunks, 10u);
  EXPECT_EQ(imp->stats.dup_chunks, 9u);   // the repeated block after its first copy
  EXPECT_EQ(imp->stats.new_chunks, 21u);  // 10 random + 1 block + 10 text
  EXPECT_EQ(store->Stats()->chunks, 21u);
  size_t nulls = 0;
  for (auto& id : imp->table.ids) nulls += id.IsNull();
  EXPECT_EQ(nulls, 10u);
  // A second import stores nothing new.
  auto again = ImportDisk(t / "in.img", store.get());
  EXPECT_EQ(again->stats.new_chunks, 0u);
  EXPECT_EQ(again->table.ids, imp->table.ids);
}

TEST(DiskTableTest, ExportWritesHolesForZeroChunks) {
  TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  Bytes img(64 * 65536, 0);
  img[5] = 1;
  testing::WriteFile(t / "in.img", img);
  auto imp = ImportDisk(t / "in.img", store.get());
  ASSERT_TRUE(ExportDisk(imp->table, store.get(), t / "out.img").ok());
  struct stat sb;
  ASSERT_EQ(::stat((t / "out.img").c_str(), &sb), 0);
  EXPECT_EQ(static_cast<size_t>(sb.st_size), img.size());
  EXPECT_LT(static_cast<size_t>(sb.st_blocks) * 512, img.size() / 4);  // sparse
  EXPECT_EQ(testing::ReadFile(t / "out.img"), img);
}

TEST(DiskTableTest, EncodeDecodeAndEveryBitFlipDetected) {
  DiskTable tb;
  tb.image_size = 3 * 65536 + 100;
  tb.ids = {ChunkId::Of(AsBytes("a")), ChunkId(), ChunkId::Of(AsBytes("b")), ChunkId::Of(AsBytes("c"))};
  Bytes e = tb.Encode();
  auto d = DiskTable::Decode(e);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ids, tb.ids);
  EXPECT_EQ(d->ChunkLength(3), 100u);
  for (size_t bit = 0; bit < e.size() * 8; ++bit) {
    Bytes f = e;
    f[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    ASSERT_FALSE(DiskTable::Decode(f).ok()) << bit;
  }
}

TEST(DiskTableTest, LyingCountOrSizeIsRefused) {
  // A table whose count disagrees with its image size, sealed with a valid CRC.
  Bytes body;
  Encoder enc(&body);
  enc.U32(65536);
  enc.U64(10ull << 40);  // 10 TiB image
  enc.U32(2);            // but only two chunks
  enc.Id(ChunkId());
  enc.Id(ChunkId());
  auto r = DiskTable::Decode(SealFrame({'S', 'S', 'D', 'T'}, 1, body));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  // A count that promises more ids than bytes present.
  Bytes b2;
  Encoder e2(&b2);
  e2.U32(65536);
  e2.U64(1000ull * 65536);
  e2.U32(1000);
  EXPECT_TRUE(DiskTable::Decode(SealFrame({'S', 'S', 'D', 'T'}, 1, b2)).status().IsCorruption());
}

// An image in memory (a guest's RAM): chunks known to be zero are not even
// read, the rest are stored like a disk's; ReadImage hands back every
// non-zero chunk at its offset, and a chunk of the wrong length is refused.
TEST(DiskTableTest, AnImageInMemoryImportsWithKnownZerosAndReadsBackByOffset) {
  TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  Bytes img = MixedImage(40, 0);
  std::vector<bool> known_zero(40, false);
  for (size_t i = 0; i < 40; i += 4) known_zero[i] = true;  // MixedImage's zero chunks
  // Chunk 5 is random but claimed zero: the claim is trusted (not read).
  known_zero[5] = true;
  auto imp = ImportImage(img, known_zero, store.get());
  ASSERT_TRUE(imp.ok()) << imp.status().ToString();
  EXPECT_EQ(imp->table.image_size, img.size());
  EXPECT_EQ(imp->stats.zero_chunks, 11u);
  EXPECT_TRUE(imp->table.ids[5].IsNull());
  EXPECT_EQ(imp->table.ids[1], ChunkId::Of(ByteView(img.data() + 65536, 65536)));
  // Without the claims it is the disk import's table, but for chunk 5.
  testing::WriteFile(t / "in.img", img);
  auto disk = ImportDisk(t / "in.img", store.get());
  ASSERT_TRUE(disk.ok());
  for (size_t i = 0; i < 40; ++i) {
    if (i != 5) {
      EXPECT_EQ(imp->table.ids[i], disk->table.ids[i]) << i;
    }
  }
  Bytes back(img.size(), 0);
  size_t puts = 0;
  Status st = ReadImage(disk->table, store.get(), [&](uint64_t off, ByteView b) {
    std::copy(b.begin(), b.end(), back.begin() + static_cast<ptrdiff_t>(off));
    ++puts;
    return Status::OK();
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(back, img);
  EXPECT_EQ(puts, 30u);
  // A chunk whose length is wrong for its slot.
  DiskTable wrong = disk->table;
  wrong.ids[1] = *store->Put(RandomBytes(100, 3));
  st = ReadImage(wrong, store.get(), [](uint64_t, ByteView) { return Status::OK(); });
  EXPECT_TRUE(st.IsCorruption()) << st.ToString();
  // put's own error ends it.
  st = ReadImage(disk->table, store.get(), [](uint64_t, ByteView) { return Status::IOError("full"); });
  EXPECT_FALSE(st.ok());
}

TEST(DiskTableTest, MissingOrWrongChunkFailsExport) {
  TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  DiskTable tb;
  tb.image_size = 65536;
  tb.ids = {ChunkId::Of(RandomBytes(65536, 1))};
  EXPECT_TRUE(ExportDisk(tb, store.get(), t / "x.img").IsNotFound());
  // Right hash, wrong length for its slot.
  Bytes small = RandomBytes(100, 2);
  tb.ids = {*store->Put(small)};
  EXPECT_TRUE(ExportDisk(tb, store.get(), t / "x.img").IsCorruption());
}

TEST(DiskTableTest, InvalidChunkSizeAndMissingImage) {
  TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  testing::WriteFile(t / "in.img", Bytes(100, 1));
  DiskImportOptions o;
  o.chunk_size = 3000;
  EXPECT_EQ(ImportDisk(t / "in.img", store.get(), o).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(ImportDisk(t / "nope.img", store.get()).status().code(), Status::Code::kIOError);
}

}  // namespace
}  // namespace slingshot
