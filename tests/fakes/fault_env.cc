#include "fault_env.h"

#include <unistd.h>

#include <filesystem>

namespace slingshot::fake {
namespace {

std::string DirOf(const std::string& path) { return std::filesystem::path(path).parent_path().string(); }

class FaultFile final : public WritableFile {
 public:
  FaultFile(FaultInjectionEnv* env, std::unique_ptr<WritableFile> base) : env_(env), base_(std::move(base)) {}
  Status WriteAt(uint64_t offset, std::span<const ByteView> pieces) override {
    SLINGSHOT_RETURN_IF_ERROR(env_->Step("write " + path()));
    uint64_t n = 0;
    for (const auto& p : pieces) n += p.size();
    if (!env_->TakeSpace(n)) return Status::IOError("write " + path() + ": No space left on device (injected)");
    SLINGSHOT_RETURN_IF_ERROR(base_->WriteAt(offset, pieces));
    env_->Written(path(), offset + n);
    return Status::OK();
  }
  Status Sync() override {
    SLINGSHOT_RETURN_IF_ERROR(env_->Step("sync " + path()));
    SLINGSHOT_RETURN_IF_ERROR(base_->Sync());
    env_->Synced(path());
    return Status::OK();
  }
  Status Truncate(uint64_t size) override {
    SLINGSHOT_RETURN_IF_ERROR(env_->Step("truncate " + path()));
    SLINGSHOT_RETURN_IF_ERROR(base_->Truncate(size));
    env_->Truncated(path(), size);
    return Status::OK();
  }
  const std::string& path() const override { return base_->path(); }

 private:
  FaultInjectionEnv* env_;
  std::unique_ptr<WritableFile> base_;
};

}  // namespace

void FaultInjectionEnv::CrashAfter(int64_t ops) {
  MutexLock l(&mu_);
  crash_after_ = ops < 0 ? -1 : ops_ + ops;
}
int64_t FaultInjectionEnv::ops() const {
  MutexLock l(&mu_);
  return ops_;
}
void FaultInjectionEnv::SetFreeSpace(int64_t bytes) {
  MutexLock l(&mu_);
  free_ = bytes;
}
bool FaultInjectionEnv::TakeSpace(uint64_t n) {
  MutexLock l(&mu_);
  if (free_ < 0) return true;
  if (n > static_cast<uint64_t>(free_)) return false;
  free_ -= static_cast<int64_t>(n);
  return true;
}
bool FaultInjectionEnv::crashed() const {
  MutexLock l(&mu_);
  return crashed_;
}

Status FaultInjectionEnv::Step(const std::string& what) {
  MutexLock l(&mu_);
  if (crashed_ || (crash_after_ >= 0 && ops_ >= crash_after_)) {
    crashed_ = true;
    return Status::IOError("injected crash before: " + what);
  }
  ++ops_;
  return Status::OK();
}

void FaultInjectionEnv::Written(const std::string& path, uint64_t end) {
  MutexLock l(&mu_);
  auto& f = files_[path];
  f.size = std::max(f.size, end);
}
void FaultInjectionEnv::Synced(const std::string& path) {
  MutexLock l(&mu_);
  auto& f = files_[path];
  f.durable = f.size;
}
void FaultInjectionEnv::Truncated(const std::string& path, uint64_t size) {
  MutexLock l(&mu_);
  auto& f = files_[path];
  f.size = size;
  f.durable = std::min(f.durable, size);
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewFile(const std::string& path, int mode) {
  SLINGSHOT_RETURN_IF_ERROR(Step("create " + path));
  SLINGSHOT_ASSIGN_OR_RETURN(auto f, base_->NewFile(path, mode));
  {
    MutexLock l(&mu_);
    files_[path] = FileState{0, 0, true};
  }
  return std::unique_ptr<WritableFile>(new FaultFile(this, std::move(f)));
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::OpenFile(const std::string& path) {
  SLINGSHOT_RETURN_IF_ERROR(Step("open " + path));
  SLINGSHOT_ASSIGN_OR_RETURN(auto f, base_->OpenFile(path));
  {
    MutexLock l(&mu_);
    if (!files_.count(path)) {  // what was there before is durable
      std::error_code ec;
      uint64_t size = std::filesystem::file_size(path, ec);
      files_[path] = FileState{ec ? 0 : size, ec ? 0 : size, false};
    }
  }
  return std::unique_ptr<WritableFile>(new FaultFile(this, std::move(f)));
}

Status FaultInjectionEnv::WriteFileAtomic(const std::string& path, ByteView data, int mode) {
  if (!TakeSpace(data.size())) return Status::IOError("write " + path + ": No space left on device (injected)");
  SLINGSHOT_RETURN_IF_ERROR(Step("replace " + path));
  return base_->WriteFileAtomic(path, data, mode);
}

Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  SLINGSHOT_RETURN_IF_ERROR(Step("remove " + path));
  SLINGSHOT_RETURN_IF_ERROR(base_->RemoveFile(path));
  MutexLock l(&mu_);
  files_.erase(path);
  return Status::OK();
}

Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  SLINGSHOT_RETURN_IF_ERROR(Step("sync directory " + dir));
  SLINGSHOT_RETURN_IF_ERROR(base_->SyncDir(dir));
  MutexLock l(&mu_);
  for (auto& [path, f] : files_) {
    if (DirOf(path) == dir) f.new_name = false;
  }
  return Status::OK();
}

Status FaultInjectionEnv::PowerCut() {
  MutexLock l(&mu_);
  for (const auto& [path, f] : files_) {
    if (f.new_name) {
      ::unlink(path.c_str());
    } else if (::truncate(path.c_str(), static_cast<off_t>(f.durable)) != 0 && errno != ENOENT) {
      return Status::FromErrno("power cut: truncate " + path, errno);
    }
  }
  files_.clear();
  crashed_ = false;
  crash_after_ = -1;
  ops_ = 0;
  return Status::OK();
}

}  // namespace slingshot::fake
