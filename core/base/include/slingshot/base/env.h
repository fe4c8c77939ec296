// Env: the file-system seam under the durable formats (the event log and
// the chunk store's packs), after LevelDB's include/leveldb/env.h. Every
// write, sync, truncation, creation and removal those formats make goes
// through it; reads go straight to the files (mmap or pread), which always
// hold what was written.
//
// Env::Default() is the real one (POSIX). Tests wrap it to fail at a chosen
// step or to drop every write not yet made durable, as a power cut would
// (tests/fakes/fault_env.h).
//
// Durability contract, as POSIX gives it: WritableFile::Sync makes the
// file's data durable; a new file's name is durable only once its
// directory is synced (SyncDir); WriteFileAtomic replaces a whole file and
// is durable when it returns.
//
// Thread-safety: an Env may be used from any thread; one WritableFile from
// one thread at a time.
#ifndef SLINGSHOT_BASE_ENV_H_
#define SLINGSHOT_BASE_ENV_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes the pieces back to back at offset; the file grows as needed.
  // IOError (ENOSPC: "No space left on device") if not all was written.
  virtual Status WriteAt(uint64_t offset, std::span<const ByteView> pieces) = 0;
  Status WriteAt(uint64_t offset, ByteView data) { return WriteAt(offset, std::span<const ByteView>(&data, 1)); }
  // Makes every write so far durable (fdatasync).
  virtual Status Sync() = 0;
  virtual Status Truncate(uint64_t size) = 0;
  virtual const std::string& path() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  // The POSIX Env; never destroyed.
  static Env* Default();

  // Creates path, which must not exist (AlreadyExists otherwise), mode as
  // given.
  virtual Result<std::unique_ptr<WritableFile>> NewFile(const std::string& path, int mode) = 0;
  // Opens an existing file for writing (NotFound if it is missing).
  virtual Result<std::unique_ptr<WritableFile>> OpenFile(const std::string& path) = 0;
  // Replaces path with data: a temporary file, synced, renamed, the
  // directory synced.
  virtual Status WriteFileAtomic(const std::string& path, ByteView data, int mode) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  // Makes the directory's entries (creations, renames, removals) durable.
  virtual Status SyncDir(const std::string& dir) = 0;
};

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_ENV_H_
