#include "slingshot/base/env.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <vector>

#include "slingshot/base/file_util.h"

namespace slingshot {
namespace {

class PosixFile final : public WritableFile {
 public:
  PosixFile(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  Status WriteAt(uint64_t offset, std::span<const ByteView> pieces) override {
    std::vector<iovec> iov;
    iov.reserve(pieces.size());
    for (const auto& p : pieces) {
      if (!p.empty()) iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
    }
    size_t first = 0;
    uint64_t at = offset;
    while (first < iov.size()) {
      int n = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
      ssize_t w = ::pwritev(fd_.get(), iov.data() + first, n, static_cast<off_t>(at));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return Status::FromErrno("write " + path_, w < 0 ? errno : ENOSPC);
      at += static_cast<uint64_t>(w);
      // Advance past what was written (a short write can end mid-piece).
      size_t left = static_cast<size_t>(w);
      while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (left > 0) {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    return Status::OK();
  }
  Status Sync() override {
    if (::fdatasync(fd_.get()) != 0) return Status::FromErrno("fsync " + path_, errno);
    return Status::OK();
  }
  Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) return Status::FromErrno("truncate " + path_, errno);
    return Status::OK();
  }
  const std::string& path() const override { return path_; }

 private:
  UniqueFd fd_;
  std::string path_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<WritableFile>> NewFile(const std::string& path, int mode) override {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (!fd.valid()) return Status::FromErrno("create " + path, errno);
    return std::unique_ptr<WritableFile>(new PosixFile(std::move(fd), path));
  }
  Result<std::unique_ptr<WritableFile>> OpenFile(const std::string& path) override {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return Status::FromErrno("open " + path, errno);
    return std::unique_ptr<WritableFile>(new PosixFile(std::move(fd), path));
  }
  Status WriteFileAtomic(const std::string& path, ByteView data, int mode) override {
    return slingshot::WriteFileAtomic(path, data, mode);
  }
  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::FromErrno("remove " + path, errno);
    return Status::OK();
  }
  Status SyncDir(const std::string& dir) override { return slingshot::SyncDir(dir); }
};

}  // namespace

Env* Env::Default() {
  static Env* env = new PosixEnv;
  return env;
}

}  // namespace slingshot
