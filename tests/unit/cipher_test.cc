// LocalCipher (base/cipher.h), and what a surrogate keeps on disk under it:
// the chunk cache's values and a disk overlay, unreadable without the key
// of the process that wrote them.
#include "slingshot/base/cipher.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "slingshot/base/file_util.h"
#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/store/disk_table.h"
#include "test_util.h"

namespace slingshot {
namespace {

using testing::TempDir;

// Whether needle appears in any file under dir.
bool AnyFileHolds(const std::string& dir, ByteView needle) {
  if (std::filesystem::is_regular_file(dir)) {
    auto b = ReadFileBounded(dir, 1ull << 30);
    return b.ok() && std::search(b->begin(), b->end(), needle.begin(), needle.end()) != b->end();
  }
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    auto b = ReadFileBounded(e.path().string(), 1ull << 30);
    if (b.ok() && std::search(b->begin(), b->end(), needle.begin(), needle.end()) != b->end()) return true;
  }
  return false;
}

TEST(CipherTest, SealOpensOnlyUnalteredUnderItsKeyAndAad) {
  auto c = LocalCipher::Random(), other = LocalCipher::Random();
  ASSERT_TRUE(c.ok() && other.ok());
  Bytes plain = testing::TextBytes(5000, 1);
  const std::string aad_text = "chunk id";
  ByteView aad = AsBytes(aad_text);
  Bytes sealed = (*c)->Seal(plain, aad);
  EXPECT_EQ(sealed.size(), plain.size() + LocalCipher::kOverhead);
  EXPECT_EQ(*(*c)->Open(sealed, aad), plain);
  EXPECT_NE((*c)->Seal(plain, aad), sealed);  // a fresh nonce each time
  EXPECT_TRUE((*other)->Open(sealed, aad).status().IsCorruption());
  EXPECT_TRUE((*c)->Open(sealed, AsBytes("another id")).status().IsCorruption());
  for (size_t at : {size_t{0}, size_t{12}, sealed.size() / 2, sealed.size() - 1}) {
    Bytes bad = sealed;
    bad[at] ^= 1;
    EXPECT_TRUE((*c)->Open(bad, aad).status().IsCorruption()) << at;
  }
  EXPECT_TRUE((*c)->Open(Bytes(10), aad).status().IsCorruption());
}

TEST(CipherTest, XorAtAnyOffsetMatchesTheWholeStream) {
  auto c = LocalCipher::Random();
  ASSERT_TRUE(c.ok());
  Bytes plain = testing::RandomBytes(10000, 2);
  Bytes whole = plain;
  (*c)->Xor(4096, whole.data(), whole.size());
  EXPECT_NE(whole, plain);
  // Pieces at unaligned offsets give the same bytes; twice is the identity.
  Bytes pieces = plain;
  for (size_t at = 0; at < pieces.size();) {
    size_t n = std::min<size_t>(pieces.size() - at, 1 + (at * 7) % 333);
    (*c)->Xor(4096 + at, pieces.data() + at, n);
    at += n;
  }
  EXPECT_EQ(pieces, whole);
  (*c)->Xor(4096, whole.data(), whole.size());
  EXPECT_EQ(whole, plain);
}

TEST(CipherTest, ACacheUnderAKeyKeepsNoPlainValueAndAnotherKeyReadsNothing) {
  TempDir t;
  auto key = LocalCipher::Random();
  ASSERT_TRUE(key.ok());
  ChunkStoreOptions o;
  o.mode = ChunkStoreOptions::Mode::kCache;
  o.compression_level = 0;
  o.cipher = *key;
  const std::string m = "MARKER-in-the-users-document-";
  Bytes marker(m.begin(), m.end());
  Bytes value = marker;
  value.resize(20000, 'x');
  ChunkId id;
  {
    auto cache = ChunkStore::Open(t.path(), o);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    auto put = (*cache)->Put(value);
    ASSERT_TRUE(put.ok());
    id = *put;
    EXPECT_EQ(*(*cache)->Get(id), value);
    ASSERT_TRUE((*cache)->Checkpoint().ok());  // its pages on the disk
    EXPECT_FALSE(AnyFileHolds(t.path(), marker)) << "the cache holds the value in plain";
  }
  o.cipher = *LocalCipher::Random();  // the next run's key
  auto cache = ChunkStore::Open(t.path(), o);
  ASSERT_TRUE(cache.ok());
  auto r = (*cache)->Get(id);
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

TEST(CipherTest, AnOverlayUnderAKeyServesTheWritesAndHoldsNoneInPlain) {
  TempDir t;
  auto store = ChunkStore::Open(t / "store", {});
  ASSERT_TRUE(store.ok());
  testing::WriteFile(t / "disk.img", testing::RandomBytes(1 << 20, 3));
  auto imp = ImportDisk(t / "disk.img", store->get());
  ASSERT_TRUE(imp.ok());
  ChunkTableExportOptions o;
  o.cipher = *LocalCipher::Random();
  auto e = ChunkTableExport::Open(imp->table, store->get(), t / "overlay", o);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  const std::string m = "MARKER-typed-into-the-notepad";
  Bytes marker(m.begin(), m.end());
  ASSERT_TRUE((*e)->Write(70000, marker).ok());       // inside a chunk: copied up
  ASSERT_TRUE((*e)->Write(0, Bytes(65536, 0)).ok());  // a whole chunk of zeros
  ASSERT_TRUE((*e)->Flush().ok());
  Bytes back(marker.size());
  ASSERT_TRUE((*e)->Read(70000, back).ok());
  EXPECT_EQ(back, marker);
  Bytes zeros(100);
  ASSERT_TRUE((*e)->Read(100, zeros).ok());
  EXPECT_EQ(zeros, Bytes(100, 0));
  EXPECT_FALSE(AnyFileHolds(t / "overlay", marker)) << "the overlay holds the write in plain";
  // A freeze stores what the guest wrote, decrypted.
  auto frozen = (*e)->Freeze(store->get());
  ASSERT_TRUE(frozen.ok()) << frozen.status().ToString();
  Bytes image = *ReadFileBounded(t / "disk.img", 2 << 20);
  std::copy(marker.begin(), marker.end(), image.begin() + 70000);
  std::fill(image.begin(), image.begin() + 65536, 0);
  auto exported = ExportDisk(*frozen, store->get(), t / "out.img");
  ASSERT_TRUE(exported.ok()) << exported.ToString();
  EXPECT_EQ(*ReadFileBounded(t / "out.img", 2 << 20), image);
}

}  // namespace
}  // namespace slingshot
