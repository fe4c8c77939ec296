#include "slingshot/base/file_util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <filesystem>

namespace slingshot {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<UniqueFd> LockDirectory(const std::string& dir, const std::string& what) {
  std::string path = dir + "/LOCK";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("open " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Status::IOError(what + " " + dir + " is in use by another process; stop it, or run this command through it");
    }
    return Status::FromErrno("lock " + path, errno);
  }
  return fd;
}

Status WriteAll(int fd, const void* data, size_t n, const std::string& what) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write " + what, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::OK();
}

Status PwriteAll(int fd, const void* data, size_t n, uint64_t offset, const std::string& what) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC || errno == EDQUOT) {
        return Status::ResourceExhausted("write " + what + ": the file system is full; free space there and retry");
      }
      return Status::FromErrno("write " + what, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return Status::OK();
}

Status PreadExact(int fd, void* data, size_t n, uint64_t offset, const std::string& what) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read " + what, errno);
    }
    if (r == 0) return Status::Corruption(what + ": file ends early (truncated)");
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::OK();
}

namespace {
// Opens path for reading and sizes what will be read: min(file size, limit),
// refused (Corruption) above max_size.
struct BoundedFile {
  UniqueFd fd;
  uint64_t size = 0;
};
Result<BoundedFile> OpenBounded(const std::string& path, uint64_t max_size, uint64_t limit) {
  BoundedFile f;
  f.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.fd.valid()) {
    int e = errno;
    if (e == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::FromErrno("open " + path, e);
  }
  struct stat sb;
  if (::fstat(f.fd.get(), &sb) != 0) return Status::FromErrno("stat " + path, errno);
  f.size = std::min<uint64_t>(static_cast<uint64_t>(sb.st_size), limit);
  if (f.size > max_size) {
    return Status::Corruption(path + ": " + std::to_string(f.size) + " bytes exceeds the limit of " +
                              std::to_string(max_size));
  }
  return f;
}
}  // namespace

Result<MappedFile> MappedFile::Open(const std::string& path, uint64_t max_size, uint64_t limit) {
  SLINGSHOT_ASSIGN_OR_RETURN(BoundedFile f, OpenBounded(path, max_size, limit));
  const uint64_t size = f.size;
  UniqueFd& fd = f.fd;
  MappedFile m;
  if (size == 0) return m;
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return Status::FromErrno("map " + path, errno);
  ::madvise(p, size, MADV_SEQUENTIAL);
  m.data_ = static_cast<const uint8_t*>(p);
  m.size_ = static_cast<size_t>(size);
  return m;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("open directory " + dir, errno);
  if (::fsync(fd.get()) != 0) return Status::FromErrno("fsync directory " + dir, errno);
  return Status::OK();
}

Status WriteFileAtomic(const std::string& path, ByteView data, int mode) {
  std::filesystem::path p(path);
  std::string dir = p.parent_path().string();
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd.valid()) return Status::FromErrno("create " + tmp, errno);
  Status st = WriteAll(fd.get(), data.data(), data.size(), tmp);
  if (st.ok() && ::fsync(fd.get()) != 0) st = Status::FromErrno("fsync " + tmp, errno);
  fd.Reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Status::FromErrno("rename to " + path, errno);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return SyncDir(dir);
}

Result<Bytes> ReadFileBounded(const std::string& path, size_t max_size, uint64_t read_limit) {
  SLINGSHOT_ASSIGN_OR_RETURN(BoundedFile f, OpenBounded(path, max_size, read_limit));
  Bytes out(static_cast<size_t>(f.size));
  SLINGSHOT_RETURN_IF_ERROR(PreadExact(f.fd.get(), out.data(), out.size(), 0, path));
  return out;
}

Result<Bytes> ReadPrivateFile(const std::string& path, size_t max_size) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such key file");
    return Status::FromErrno("stat " + path, errno);
  }
  if (sb.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%03o", static_cast<unsigned>(sb.st_mode & 0777));
    return Status::InvalidArgument(path + ": private key is readable by others (mode " + mode +
                                   "); run chmod 600 " + path);
  }
  return ReadFileBounded(path, max_size);
}

}  // namespace slingshot
