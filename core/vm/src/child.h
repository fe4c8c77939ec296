// Child processes for hypervisor backends (qemu, the KVM probe).
//
// - The child gets SIGKILL when this process dies (PR_SET_PDEATHSIG). The
//   kernel ties that signal to the *thread* that forked, so every spawn runs
//   on one long-lived spawner thread: children never die because a caller's
//   thread ended.
// - Reaping is selective: waitid on the child's own pidfd, never wait(-1) or
//   a SIGCHLD handler, so other children of the process are left alone.
// - The destructor kills and reaps the child if it still runs.
#ifndef SLINGSHOT_HYPERVISOR_CHILD_H_
#define SLINGSHOT_HYPERVISOR_CHILD_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "slingshot/base/file_util.h"
#include "slingshot/base/status.h"

namespace slingshot {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH
  std::string output_path;        // stdout+stderr appended here ("" = /dev/null)
  // Handed to the child as its fd 3 (-1: none); every other fd but 0-2 is
  // closed in the child.
  int pass_fd = -1;
  // The child's madvise(MADV_HUGEPAGE) fails (EINVAL, by a seccomp filter
  // set before exec): a RAM file it maps then faults in page by page
  // rather than 2-4 MiB at a time (the kernel's read-around for huge-page
  // mappings), which matters when each page is fetched on demand.
  bool no_huge_page_advice = false;
};

class Child {
 public:
  static Result<std::unique_ptr<Child>> Spawn(const SpawnOptions& options);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }  // readable once it has exited

  // Reaps the child if it has exited; true then, with a description
  // ("exited with status 1", "killed by signal 9").
  bool Poll(std::string* how);
  // Waits up to timeout_ms for exit; true if it exited (and was reaped).
  bool Wait(int timeout_ms, std::string* how);
  // SIGKILL and reap. Safe to call more than once.
  void Kill();
  bool exited() const { return exited_; }
  int exit_code() const { return exit_code_; }  // -signal when killed

 private:
  Child(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid_;
  UniqueFd pidfd_;
  bool exited_ = false;
  int exit_code_ = 0;
  std::string how_;
};

// Finds an executable in PATH (or checks a path with a '/'); NotFound says
// which package to install when hint is given.
Result<std::string> FindExecutable(const std::string& name, const std::string& hint);

}  // namespace slingshot

#endif  // SLINGSHOT_HYPERVISOR_CHILD_H_
