// Bundles: round trips, byte-identical output, corruption anywhere in the
// file, incomplete bundles, manifests under a trusted key.
#include "slingshot/store/bundle.h"

#include <gtest/gtest.h>

#include "slingshot/store/disk_table.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "test_util.h"

namespace slingshot {
namespace {

using testing::TempDir;

struct Fixture {
  TempDir t;
  std::unique_ptr<ChunkStore> store = std::move(ChunkStore::Open(t / "store", {})).value();
  Bytes image;

  // A disk, a memory image and a manifest naming both.
  void Populate(const SigningKey& key, uint64_t seed = 1) {
    image = testing::RandomBytes(6 * 65536 + 1000, seed);
    std::fill(image.begin() + 65536, image.begin() + 2 * 65536, 0);
    testing::WriteFile(t / "disk.img", image);
    auto imp = ImportDisk(t / "disk.img", store.get());
    ASSERT_TRUE(imp.ok());
    ChunkId table = *store->PutObject(imp->table.Encode());
    MemoryImageWriter w(store.get(), ChunkerOptions{});
    ASSERT_TRUE(w.Write(testing::TextBytes(300000, seed)).ok());
    auto list = w.Finish();
    ChunkId lid = *store->PutObject(list->Encode());
    Manifest m;
    m.service_id = "notepad";
    m.service_type = "rfb";
    m.epoch = 1;
    m.disk_table = table;
    m.disk_size = image.size();
    m.memory_list = lid;
    m.memory_size = list->total_size;
    ChunkId mid = *store->PutObject(SignManifest(m, key));
    ASSERT_TRUE(store->SetRef({"disk/root", ObjectKind::kDiskTable, table}).ok());
    ASSERT_TRUE(store->SetRef({"manifest/notepad", ObjectKind::kManifest, mid}).ok());
  }
};

TEST(BundleTest, ExportImportRoundTrip) {
  auto key = SigningKey::Generate();
  Fixture a;
  a.Populate(*key);
  auto ex = ExportBundle(a.store.get(), a.t / "b.tar.zst");
  ASSERT_TRUE(ex.ok()) << ex.status().ToString();
  EXPECT_EQ(ex->refs, 2u);
  EXPECT_EQ(ex->objects, 3u);

  TempDir t2;
  auto dst = std::move(ChunkStore::Open(t2 / "store", {})).value();
  BundleImportOptions o;
  o.trusted_key = &key->public_key();
  auto im = ImportBundle(a.t / "b.tar.zst", dst.get(), o);
  ASSERT_TRUE(im.ok()) << im.status().ToString();
  EXPECT_EQ(im->chunks, ex->chunks);
  auto ref = dst->GetRef("disk/root");
  ASSERT_TRUE(ref.ok());
  auto table = DiskTable::Decode(*dst->GetObject(ref->object));
  ASSERT_TRUE(ExportDisk(*table, dst.get(), t2 / "out.img").ok());
  EXPECT_EQ(testing::ReadFile(t2 / "out.img"), a.image);
  EXPECT_TRUE(dst->GetRef("manifest/notepad").ok());
}

TEST(BundleTest, ExportIsByteIdenticalAcrossRunsAndStores) {
  auto key = SigningKey::Generate();
  Fixture a, b;
  a.Populate(*key);
  b.Populate(*key);
  ASSERT_TRUE(ExportBundle(a.store.get(), a.t / "1.tar.zst").ok());
  ASSERT_TRUE(ExportBundle(a.store.get(), a.t / "2.tar.zst").ok());
  ASSERT_TRUE(ExportBundle(b.store.get(), b.t / "3.tar.zst").ok());
  Bytes one = testing::ReadFile(a.t / "1.tar.zst");
  EXPECT_EQ(one, testing::ReadFile(a.t / "2.tar.zst"));
  // The manifest holds no per-store data, but signatures are deterministic
  // (Ed25519) so a second store with the same content gives the same file.
  EXPECT_EQ(one, testing::ReadFile(b.t / "3.tar.zst"));
}

TEST(BundleTest, FlippedBitAnywhereIsDetectedAndSetsNoRef) {
  auto key = SigningKey::Generate();
  Fixture a;
  a.Populate(*key);
  // A small bundle so that many positions can be tried: just the disk.
  BundleExportOptions eo;
  eo.refs = {"disk/root"};
  ASSERT_TRUE(ExportBundle(a.store.get(), a.t / "b.tar.zst", eo).ok());
  Bytes good = testing::ReadFile(a.t / "b.tar.zst");
  // Every byte of the first and last 300 bytes (zstd frame header, trailer),
  // and 200 spread between.
  std::vector<size_t> positions;
  for (size_t i = 0; i < 300; ++i) positions.push_back(i);
  for (size_t i = 0; i < 200; ++i) positions.push_back(300 + i * (good.size() - 600) / 200);
  for (size_t i = good.size() - 300; i < good.size(); ++i) positions.push_back(i);
  ChunkStoreOptions cache;  // no fsyncs: the reader is under test, not the store
  cache.mode = ChunkStoreOptions::Mode::kCache;
  for (size_t pos : positions) {
    TempDir t;
    Bytes bad = good;
    bad[pos] ^= static_cast<uint8_t>(1u << (pos % 8));
    testing::WriteFile(t / "bad.tar.zst", bad);
    auto dst = std::move(ChunkStore::Open(t / "store", cache)).value();
    auto r = ImportBundle(t / "bad.tar.zst", dst.get());
    ASSERT_FALSE(r.ok()) << "flip at byte " << pos << " of " << good.size() << " went unnoticed";
    ASSERT_TRUE(dst->ListRefs()->empty()) << "a damaged bundle set a ref (byte " << pos << ")";
  }
}

TEST(BundleTest, TruncatedOrTrailingGarbageIsRejected) {
  auto key = SigningKey::Generate();
  Fixture a;
  a.Populate(*key);
  ASSERT_TRUE(ExportBundle(a.store.get(), a.t / "b.tar.zst").ok());
  Bytes good = testing::ReadFile(a.t / "b.tar.zst");
  for (size_t len : {size_t{0}, size_t{10}, good.size() / 2, good.size() - 1}) {
    TempDir t;
    testing::WriteFile(t / "x", ByteView(good).first(len));
    auto dst = std::move(ChunkStore::Open(t / "store", {})).value();
    ASSERT_FALSE(ImportBundle(t / "x", dst.get()).ok()) << len;
    ASSERT_TRUE(dst->ListRefs()->empty());
  }
  TempDir t;
  Bytes longer = good;
  longer.push_back(0);
  testing::WriteFile(t / "x", longer);
  auto dst = std::move(ChunkStore::Open(t / "store", {})).value();
  EXPECT_FALSE(ImportBundle(t / "x", dst.get()).ok());
}

TEST(BundleTest, ManifestFromAnotherKeyIsRejected) {
  auto home = SigningKey::Generate(), mallory = SigningKey::Generate();
  Fixture a;
  a.Populate(*mallory);
  ASSERT_TRUE(ExportBundle(a.store.get(), a.t / "b.tar.zst").ok());
  TempDir t;
  auto dst = std::move(ChunkStore::Open(t / "store", {})).value();
  BundleImportOptions o;
  o.trusted_key = &home->public_key();
  auto r = ImportBundle(a.t / "b.tar.zst", dst.get(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("trusted home key"), std::string::npos);
  EXPECT_TRUE(dst->ListRefs()->empty());
}

TEST(BundleTest, ExportOfAnIncompleteStoreFails) {
  auto key = SigningKey::Generate();
  Fixture a;
  a.Populate(*key);
  // Lose one chunk of the disk.
  auto table = DiskTable::Decode(*a.store->GetObject(a.store->GetRef("disk/root")->object));
  ASSERT_TRUE(a.store->Delete(std::vector<ChunkId>{table->ids[0]}).ok());
  auto r = ExportBundle(a.store.get(), a.t / "b.tar.zst");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_FALSE(std::filesystem::exists(a.t / "b.tar.zst"));
}

}  // namespace
}  // namespace slingshot
