// File helpers with explicit durability (STYLE.md: flush, fsync, rename).
#ifndef SLINGSHOT_BASE_FILE_UTIL_H_
#define SLINGSHOT_BASE_FILE_UTIL_H_

#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

// Writes data to path durably: a temp file beside it, write, fsync, rename
// over path, fsync the directory. Readers see the old or the new file, never
// a mix. mode applies to the new file (e.g. 0600 for secrets).
Status WriteFileAtomic(const std::string& path, ByteView data, int mode = 0644);

// Reads a whole file (or its first read_limit bytes), refusing (Corruption)
// to read more than max_size. NotFound if it does not exist.
Result<Bytes> ReadFileBounded(const std::string& path, size_t max_size, uint64_t read_limit = UINT64_MAX);

// Reads a secret (a private key): NotFound if absent, InvalidArgument (saying
// how to fix it) if group or others may read it, else as ReadFileBounded.
Result<Bytes> ReadPrivateFile(const std::string& path, size_t max_size);

// A read-only memory mapping of a file's first bytes. Movable; unmaps on
// destruction. The file must not shrink below the mapped length while the
// mapping lives (reads past the end of a file raise SIGBUS).
class MappedFile {
 public:
  // Maps min(file size, limit) bytes; Corruption if that exceeds max_size.
  // NotFound if the file does not exist.
  static Result<MappedFile> Open(const std::string& path, uint64_t max_size, uint64_t limit = UINT64_MAX);
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr; o.size_ = 0; }
  MappedFile& operator=(MappedFile&& o) noexcept;
  ~MappedFile();
  ByteView view() const { return {data_, size_}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// fsync a directory (after create/rename/unlink inside it).
Status SyncDir(const std::string& dir);

// Writes all of data to fd, retrying on EINTR and short writes.
Status WriteAll(int fd, const void* data, size_t n, const std::string& what);
// Writes all of data at offset, retrying on EINTR and short writes.
// ResourceExhausted when the file system is full, IOError otherwise.
Status PwriteAll(int fd, const void* data, size_t n, uint64_t offset, const std::string& what);
// Reads exactly n bytes at offset; Corruption if the file is shorter.
Status PreadExact(int fd, void* data, size_t n, uint64_t offset, const std::string& what);

// Closes an fd on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept { Reset(o.Release()); return *this; }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { int f = fd_; fd_ = -1; return f; }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Takes an exclusive advisory lock (flock) on dir/LOCK for as long as the
// returned fd stays open. `what` names the directory's owner in the error
// ("chunk store", "event log"): IOError saying another process holds it.
Result<UniqueFd> LockDirectory(const std::string& dir, const std::string& what);

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_FILE_UTIL_H_
