// FastCDC: size bounds, independence from write sizes, shift resilience,
// and memory images through the store.
#include "slingshot/store/chunker.h"

#include <gtest/gtest.h>

#include <set>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "slingshot/store/memory_image.h"
#include "test_util.h"

namespace slingshot {
namespace {

using testing::RandomBytes;

std::vector<Bytes> Chunk(ByteView data, const ChunkerOptions& o, size_t write_size) {
  std::vector<Bytes> out;
  FastCdcChunker c(o, [&](ByteView chunk) {
    out.emplace_back(chunk.begin(), chunk.end());
    return Status::OK();
  });
  for (size_t off = 0; off < data.size(); off += write_size) {
    EXPECT_TRUE(c.Write(data.subspan(off, std::min(write_size, data.size() - off))).ok());
  }
  EXPECT_TRUE(c.Finish().ok());
  return out;
}

TEST(FastCdcTest, ChunksRespectBoundsAndReassemble) {
  ChunkerOptions o;
  Bytes data = RandomBytes(4 << 20, 1);
  auto chunks = Chunk(data, o, 1 << 20);
  Bytes joined;
  double total = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i + 1 < chunks.size()) {
      ASSERT_GE(chunks[i].size(), o.min_size);
    }
    ASSERT_LE(chunks[i].size(), o.max_size);
    total += static_cast<double>(chunks[i].size());
    joined.insert(joined.end(), chunks[i].begin(), chunks[i].end());
  }
  EXPECT_EQ(joined, data);
  double avg = total / static_cast<double>(chunks.size());
  EXPECT_GT(avg, o.avg_size * 0.6);
  EXPECT_LT(avg, o.avg_size * 1.6);
}

TEST(FastCdcTest, BoundariesDoNotDependOnWriteSizes) {
  ChunkerOptions o;
  Bytes data = RandomBytes(1 << 20, 2);
  auto ref = Chunk(data, o, data.size());
  for (size_t ws : {size_t{1}, size_t{7}, size_t{4096}, size_t{65537}}) {
    ASSERT_EQ(Chunk(data, o, ws), ref) << "write size " << ws;
  }
}

TEST(FastCdcTest, InsertionShiftsOnlyNearbyBoundaries) {
  ChunkerOptions o;
  Bytes data = RandomBytes(2 << 20, 3);
  Bytes shifted = data;
  Bytes ins = RandomBytes(100, 4);
  shifted.insert(shifted.begin() + 1000, ins.begin(), ins.end());
  auto a = Chunk(data, o, 65536), b = Chunk(shifted, o, 65536);
  std::set<ChunkId> ids;
  for (auto& c : a) ids.insert(ChunkId::Of(c));
  size_t shared = 0;
  for (auto& c : b) shared += ids.count(ChunkId::Of(c));
  EXPECT_GE(shared, b.size() - 3) << "of " << b.size();
}

TEST(FastCdcTest, ZeroRunsCutAtMaxAndOptionsAreValidated) {
  ChunkerOptions o;
  auto chunks = Chunk(Bytes(1 << 20, 0), o, 1 << 20);
  for (auto& c : chunks) EXPECT_EQ(c.size(), o.max_size);
  ChunkerOptions bad{8192, 4096, 65536};
  EXPECT_FALSE(bad.Validate().ok());
  ChunkerOptions too_big{4096, 8192, 64u << 20};
  EXPECT_FALSE(too_big.Validate().ok());
  EXPECT_TRUE(o.Validate().ok());
}

TEST(FastCdcTest, CallbackErrorStopsTheStream) {
  ChunkerOptions o;
  int calls = 0;
  FastCdcChunker c(o, [&](ByteView) { return ++calls == 2 ? Status::IOError("sink full") : Status::OK(); });
  Status st = c.Write(RandomBytes(1 << 20, 5));
  EXPECT_EQ(st.code(), Status::Code::kIOError);
  EXPECT_EQ(c.Write(Bytes(10)).code(), Status::Code::kIOError);
  EXPECT_EQ(calls, 2);
}

TEST(MemoryImageTest, StreamInStreamOutThroughTheStore) {
  testing::TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  Bytes image = RandomBytes(3 << 20, 6);
  std::fill(image.begin() + (1 << 20), image.begin() + (2 << 20), 0);  // a zeroed MiB
  MemoryImageWriter w(store.get(), ChunkerOptions{});
  for (size_t off = 0; off < image.size(); off += 12345) {
    ASSERT_TRUE(w.Write(ByteView(image).subspan(off, std::min<size_t>(12345, image.size() - off))).ok());
  }
  auto list = w.Finish();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->total_size, image.size());
  EXPECT_GT(w.stats().zero_chunks, 0u);
  auto decoded = ChunkList::Decode(list->Encode());
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->entries, list->entries);
  Bytes out;
  ASSERT_TRUE(ReadMemoryImage(*decoded, store.get(), [&](ByteView b) {
    out.insert(out.end(), b.begin(), b.end());
    return Status::OK();
  }).ok());
  EXPECT_EQ(out, image);
}

TEST(MemoryImageTest, SecondCheckpointSharesMostChunks) {
  testing::TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  Bytes v1 = RandomBytes(4 << 20, 7);
  Bytes v2 = v1;
  // The guest dirtied a few pages, and the stream gained a header.
  for (size_t p : {size_t{100000}, size_t{2000000}, size_t{3500000}}) v2[p] ^= 0xff;
  Bytes hdr = RandomBytes(37, 8);
  v2.insert(v2.begin(), hdr.begin(), hdr.end());
  for (const Bytes* v : {&v1, &v2}) {
    MemoryImageWriter w(store.get(), ChunkerOptions{});
    ASSERT_TRUE(w.Write(*v).ok());
    ASSERT_TRUE(w.Finish().ok());
    if (v == &v2) {
      EXPECT_GT(w.stats().dup_bytes, v2.size() * 9 / 10);
      EXPECT_LT(w.stats().new_bytes, v2.size() / 10);
    }
  }
}

TEST(MemoryImageTest, ListWithLyingSizesIsRefused) {
  ChunkList l;
  l.entries = {{ChunkId::Of(AsBytes("x")), 100}, {ChunkId::Of(AsBytes("y")), 200}};
  l.total_size = 301;  // does not add up
  EXPECT_TRUE(ChunkList::Decode(l.Encode()).status().IsCorruption());
  l.total_size = 300;
  EXPECT_TRUE(ChunkList::Decode(l.Encode()).ok());
  l.entries[0].size = 0;
  l.total_size = 200;
  EXPECT_TRUE(ChunkList::Decode(l.Encode()).status().IsCorruption());
}

TEST(MemoryImageTest, WrongLengthChunkStopsTheStream) {
  testing::TempDir t;
  auto store = std::move(ChunkStore::Open(t / "store", {})).value();
  Bytes c = RandomBytes(500, 9);
  ChunkList l;
  l.entries = {{*store->Put(c), 499}};
  l.total_size = 499;
  Status st = ReadMemoryImage(l, store.get(), [](ByteView) { return Status::OK(); });
  EXPECT_TRUE(st.IsCorruption());
}

}  // namespace
}  // namespace slingshot
