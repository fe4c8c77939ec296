// FaultInjectionEnv: an Env (base/env.h) over the real one that can die at
// a chosen step and then lose, as a power cut would, everything that was
// not made durable (after LevelDB's db/fault_injection_test.cc).
//
// - CrashAfter(n): the next n operations work; every one after fails with
//   IOError "injected crash" (the process died there).
// - PowerCut(): every file written through the env is cut back to what its
//   last Sync covered, and every file created since its directory was last
//   synced is removed. Then the env works again, its count from zero.
// - SetFreeSpace(n): the disk has n bytes left; a write of more than what
//   is left fails with IOError "No space left on device" (everything else
//   works). -1: unlimited (the default).
// Removals and WriteFileAtomic (which syncs the file and its directory
// before it returns) are durable at once.
//
// Thread-safe.
#ifndef SLINGSHOT_TESTS_FAKES_FAULT_ENV_H_
#define SLINGSHOT_TESTS_FAKES_FAULT_ENV_H_

#include <map>
#include <string>

#include "slingshot/base/env.h"
#include "slingshot/base/mutex.h"

namespace slingshot::fake {

class FaultInjectionEnv final : public Env {
 public:
  explicit FaultInjectionEnv(Env* base = Env::Default()) : base_(base) {}

  void CrashAfter(int64_t ops);  // -1: never
  void SetFreeSpace(int64_t bytes);
  // Takes n bytes of the free space; false if there are not that many.
  bool TakeSpace(uint64_t n);
  int64_t ops() const;           // operations since the last PowerCut (or start)
  bool crashed() const;
  Status PowerCut();

  Result<std::unique_ptr<WritableFile>> NewFile(const std::string& path, int mode) override;
  Result<std::unique_ptr<WritableFile>> OpenFile(const std::string& path) override;
  Status WriteFileAtomic(const std::string& path, ByteView data, int mode) override;
  Status RemoveFile(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;

  // For the files (fault_env.cc).
  Status Step(const std::string& what);
  void Written(const std::string& path, uint64_t end);
  void Synced(const std::string& path);
  void Truncated(const std::string& path, uint64_t size);

 private:
  struct FileState {
    uint64_t size = 0;     // as written
    uint64_t durable = 0;  // what the last Sync covered
    bool new_name = false;  // created, its directory not synced since
  };
  Env* const base_;
  mutable Mutex mu_;
  int64_t crash_after_ GUARDED_BY(mu_) = -1;
  int64_t ops_ GUARDED_BY(mu_) = 0;
  bool crashed_ GUARDED_BY(mu_) = false;
  int64_t free_ GUARDED_BY(mu_) = -1;
  std::map<std::string, FileState> files_ GUARDED_BY(mu_);
};

}  // namespace slingshot::fake

#endif  // SLINGSHOT_TESTS_FAKES_FAULT_ENV_H_
