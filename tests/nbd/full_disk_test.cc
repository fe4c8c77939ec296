// A chunk store on a real, small file system (a tmpfs of its own) that
// fills up: puts fail cleanly, everything acknowledged stays, and the store
// still opens on the full file system (its reserve is released for Berkeley
// DB's recovery), then makes its reserve again once there is room. Needs
// root (mount); label nbd.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "../unit/test_util.h"
#include "slingshot/base/file_util.h"
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

// A store's directory on a small tmpfs of its own, and its options.
class FullDiskTest : public ::testing::Test {
 protected:
  void Mount(const char* size) {
    if (::geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
    fsys_.emplace(t / "fs", size);
    ASSERT_TRUE(fsys_->mounted()) << "mount tmpfs: " << std::strerror(errno);
    o.reserve_bytes = 16 << 20;
    o.compression_level = 0;
  }
  TempDir t;
  std::optional<SmallFileSystem> fsys_;
  const std::string dir = t / "fs/store";
  ChunkStoreOptions o;
};

TEST_F(FullDiskTest, AStoreOnAFullFileSystemFailsPutsCleanlyAndStillOpens) {
  Mount("64m");
  if (IsSkipped() || HasFatalFailure()) return;
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

// Takes every free block of the file system at dir, as a program filling
// the disk does; returns how many bytes it took.
uint64_t FillAll(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  off_t end = 0;
  for (off_t size = 64 << 20; fd.valid() && size >= 4096;) {
    if (::posix_fallocate(fd.get(), end, size) == 0) end += size;
    else size /= 2;
  }
  return static_cast<uint64_t>(end);
}

// A home killed in the middle of its writes, whose file system another
// program then fills, taking even the space its reserve would give back:
// the store still opens, because the room its recovery writes into is
// already allocated inside its own files (the headroom), and everything
// acknowledged is there.
TEST_F(FullDiskTest, AStoreKilledMidWriteOpensOnAFileSystemFilledEvenOfItsReserve) {
  Mount("96m");
  if (IsSkipped() || HasFatalFailure()) return;
  {
    auto store = ChunkStore::Open(dir, o);  // made, with a checkpoint of the store behind it
    ASSERT_TRUE(store.ok()) << store.status().ToString();
  }
  // The child acknowledges chunks, objects and refs, then dies without
  // closing anything (kill -9): recovery must redo them all.
  const int kObjects = 300;
  pid_t child = ::fork();
  if (child == 0) {
    auto store = ChunkStore::Open(dir, o);
    if (!store.ok()) ::_exit(2);
    for (int i = 0; i < kObjects; ++i) {
      auto id = (*store)->Put(RandomBytes(16 << 10, 7000 + i));
      auto obj = (*store)->PutObject(RandomBytes(2000, 9000 + i));
      if (!id.ok() || !obj.ok()) ::_exit(3);
      if (!(*store)->SetRef(Ref{"test/" + std::to_string(i), ObjectKind::kManifest, *obj}).ok()) ::_exit(4);
    }
    ::_exit(0);
  }
  int wst = 0;
  ASSERT_EQ(::waitpid(child, &wst, 0), child);
  ASSERT_TRUE(WIFEXITED(wst) && WEXITSTATUS(wst) == 0) << "the child's writes failed: " << wst;
  // Another program takes all the space there is, and the reserve's too.
  std::filesystem::remove(dir + "/RESERVE");
  ASSERT_GT(FillAll(t / "fs/filler"), 0u);
  ::testing::internal::CaptureStderr();
  auto store = ChunkStore::Open(dir, o);
  std::string said = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(store.ok()) << store.status().ToString() << "\n" << said;
  for (int i = 0; i < kObjects; ++i) {
    Bytes chunk = RandomBytes(16 << 10, 7000 + i);
    auto got = (*store)->Get(ChunkId::Of(chunk));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
    EXPECT_EQ(*got, chunk);
    auto ref = (*store)->GetRef("test/" + std::to_string(i));
    ASSERT_TRUE(ref.ok()) << i << ": " << ref.status().ToString();
  }
}

}  // namespace
}  // namespace slingshot::testing
