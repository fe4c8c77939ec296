#include "child.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "slingshot/base/mutex.h"

namespace slingshot {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Runs jobs on one thread that lives as long as the process (never joined,
// deliberately leaked so no destructor races exit).
class Spawner {
 public:
  static Spawner& Get() {
    static std::once_flag registered;
    std::call_once(registered, [] {
      // A forked child has no spawner thread (and the old spawner's mutex
      // may be held by a thread that does not exist there): it makes its
      // own on first use.
      pthread_atfork(nullptr, nullptr, [] { instance_.store(nullptr); });
    });
    Spawner* s = instance_.load();
    if (s == nullptr) {
      auto* fresh = new Spawner;
      // Two first callers race: the loser's spawner stays idle forever.
      s = instance_.compare_exchange_strong(s, fresh) ? fresh : s;
    }
    return *s;
  }
  void Run(const std::function<void()>& job) {
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool done = false;
    {
      MutexLock l(&mu_);
      jobs_.push_back([&] {
        job();
        std::lock_guard<std::mutex> g(done_mu);
        done = true;
        done_cv.notify_one();
      });
      cv_.Signal();
    }
    std::unique_lock<std::mutex> g(done_mu);
    done_cv.wait(g, [&] { return done; });
  }

 private:
  Spawner() { std::thread([this] { Loop(); }).detach(); }
  void Loop() {
    for (;;) {
      std::function<void()> job;
      {
        MutexLock l(&mu_);
        while (jobs_.empty()) cv_.Wait(&mu_);
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  static inline std::atomic<Spawner*> instance_{nullptr};
  Mutex mu_;
  CondVar cv_;
  std::deque<std::function<void()>> jobs_ GUARDED_BY(mu_);
};

std::string Describe(const siginfo_t& si) {
  if (si.si_code == CLD_EXITED) return "exited with status " + std::to_string(si.si_status);
  return std::string("killed by signal ") + std::to_string(si.si_status) + " (" +
         strsignal(si.si_status) + ")";
}

}  // namespace

Result<std::string> FindExecutable(const std::string& name, const std::string& hint) {
  auto runnable = [](const std::string& p) { return access(p.c_str(), X_OK) == 0; };
  if (name.find('/') != std::string::npos) {
    if (runnable(name)) return name;
  } else if (const char* path = getenv("PATH")) {
    std::string_view rest(path);
    while (true) {
      size_t colon = rest.find(':');
      std::string dir(rest.substr(0, colon));
      std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
      if (runnable(candidate)) return candidate;
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  return Status::NotFound(name + " is not installed or not executable" +
                          (hint.empty() ? "" : " (install " + hint + ")"));
}

namespace {
// madvise(_, _, MADV_HUGEPAGE) -> EINVAL; everything else allowed. On
// another architecture than x86-64 the filter allows everything.
sock_filter kNoHugePageAdviceCode[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 5),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[2])),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MADV_HUGEPAGE, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};
const sock_fprog kNoHugePageAdvice = {sizeof kNoHugePageAdviceCode / sizeof kNoHugePageAdviceCode[0],
                                      kNoHugePageAdviceCode};
}  // namespace

Result<std::unique_ptr<Child>> Child::Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return Status::InvalidArgument("Spawn: empty argv");
  SLINGSHOT_ASSIGN_OR_RETURN(std::string exe, FindExecutable(options.argv[0], ""));
  // Everything the child needs is prepared before fork: after it, the child
  // may only make async-signal-safe calls.
  std::vector<char*> argv;
  for (const std::string& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string out = options.output_path.empty() ? "/dev/null" : options.output_path;
  const int pass_fd = options.pass_fd;
  const bool no_huge_page_advice = options.no_huge_page_advice;

  pid_t pid = -1;
  int err = 0;
  UniqueFd pidfd;
  Spawner::Get().Run([&] {
    pid_t parent = getpid();
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (no_huge_page_advice) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &kNoHugePageAdvice) != 0) {
          _exit(125);
        }
      }
      if (getppid() != parent) _exit(127);  // parent already gone
      int in = open("/dev/null", O_RDONLY);
      int o = open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (in < 0 || o < 0) _exit(126);
      dup2(in, 0);
      dup2(o, 1);
      dup2(o, 2);
      int first_closed = 3;
      if (pass_fd >= 0) {
        if (pass_fd == 3 ? fcntl(3, F_SETFD, 0) != 0 : dup2(pass_fd, 3) != 3) _exit(126);
        first_closed = 4;
      }
      // Leave nothing else open in the child (sockets, locks, stores).
      syscall(SYS_close_range, first_closed, ~0U, 0);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execv(exe.c_str(), argv.data());
      _exit(127);
    }
    if (pid < 0) {
      err = errno;
      return;
    }
    pidfd.Reset(PidfdOpen(pid));
    if (!pidfd.valid()) err = errno;
  });
  if (pid < 0) return Status::FromErrno("fork for " + exe, err);
  if (!pidfd.valid()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return Status::FromErrno("pidfd_open", err);
  }
  return std::unique_ptr<Child>(new Child(pid, std::move(pidfd)));
}

Child::~Child() { Kill(); }

bool Child::Poll(std::string* how) {
  if (exited_) {
    if (how) *how = how_;
    return true;
  }
  siginfo_t si{};
  if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &si,
             WEXITED | WNOHANG) != 0 ||
      si.si_pid == 0) {
    return false;
  }
  exited_ = true;
  exit_code_ = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
  how_ = Describe(si);
  if (how) *how = how_;
  return true;
}

bool Child::Wait(int timeout_ms, std::string* how) {
  if (Poll(how)) return true;
  pollfd p{pidfd_.get(), POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  return Poll(how);
}

void Child::Kill() {
  if (exited_ || !pidfd_.valid()) return;
  syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  siginfo_t si{};
  if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &si, WEXITED) == 0) {
    exited_ = true;
    exit_code_ = -SIGKILL;
    how_ = Describe(si);
  }
}

}  // namespace slingshot
