// A chunk store on a real, small file system (a tmpfs of its own) that
// fills up: puts fail cleanly, everything acknowledged stays, and the store
// still opens on the full file system (its reserve is released for Berkeley
// DB's recovery), then makes its reserve again once there is room. Needs
// root (mount); label nbd.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../unit/test_util.h"
#include "slingshot/store/chunk_store.h"

namespace slingshot::testing {
namespace {

class SmallFileSystem {
 public:
  explicit SmallFileSystem(const std::string& dir, const char* size) : dir_(dir) {
    std::filesystem::create_directories(dir);
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, (std::string("size=") + size).c_str()) == 0;
  }
  ~SmallFileSystem() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

TEST(FullDiskTest, AStoreOnAFullFileSystemFailsPutsCleanlyAndStillOpens) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
  TempDir t;
  SmallFileSystem fsys(t / "fs", "64m");
  ASSERT_TRUE(fsys.mounted()) << "mount tmpfs: " << std::strerror(errno);
  const std::string dir = t / "fs/store";
  ChunkStoreOptions o;
  o.reserve_bytes = 16 << 20;
  o.compression_level = 0;
  std::vector<ChunkId> kept;
  {
    auto store = ChunkStore::Open(dir, o);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_EQ(std::filesystem::file_size(dir + "/RESERVE"), 16u << 20);
    // Room to make later, then fill the rest.
    std::ofstream(t / "fs/filler", std::ios::binary) << std::string(24 << 20, 'f');
    for (int i = 0;; ++i) {
      Bytes b = RandomBytes(64 << 10, 1000 + i);
      auto id = (*store)->Put(b);
      if (!id.ok()) {
        EXPECT_NE(id.status().message().find("No space left on device"), std::string::npos) << id.status().ToString();
        break;
      }
      kept.push_back(*id);
      ASSERT_LT(i, 4000) << "the file system never filled";
    }
    ASSERT_GT(kept.size(), 10u);
  }
  // Reopened on the full file system: it opens, and what was acknowledged is there.
  {
    ::testing::internal::CaptureStderr();
    auto store = ChunkStore::Open(dir, o);
    std::string said = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(store.ok()) << store.status().ToString() << "\n" << said;
    for (const auto& id : kept) ASSERT_TRUE((*store)->Get(id).ok()) << id.Short();
    // Still (nearly) full: puts fail cleanly or fit, and nothing breaks.
    for (int i = 0; i < 100; ++i) {
      auto id = (*store)->Put(RandomBytes(64 << 10, 5000 + i));
      if (!id.ok()) break;
      kept.push_back(*id);
    }
  }
  // Space returns: the next open makes its reserve again, and puts work.
  std::filesystem::remove(t / "fs/filler");
  auto store = ChunkStore::Open(dir, o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(std::filesystem::exists(dir + "/RESERVE"));
  for (const auto& id : kept) ASSERT_TRUE((*store)->Get(id).ok()) << id.Short();
  Bytes later = RandomBytes(64 << 10, 2);
  ASSERT_TRUE((*store)->Put(later).ok());
  EXPECT_EQ(*(*store)->Get(ChunkId::Of(later)), later);
  uint64_t bad = 0;
  ASSERT_TRUE((*store)->VerifyAll([&](const ChunkId&, const Status&) { ++bad; }).ok());
  EXPECT_EQ(bad, 0u);
}

}  // namespace
}  // namespace slingshot::testing
