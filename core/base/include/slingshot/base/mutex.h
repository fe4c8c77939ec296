// Mutex, MutexLock and CondVar with clang thread-safety annotations, so that
// `-Wthread-safety` checks every GUARDED_BY member and REQUIRES method
// (`make analyze`). std::mutex itself carries no annotations in libstdc++.
// With other compilers the annotations compile to nothing.
#ifndef SLINGSHOT_BASE_MUTEX_H_
#define SLINGSHOT_BASE_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define SLINGSHOT_TSA(x) __attribute__((x))
#else
#define SLINGSHOT_TSA(x)
#endif

#define CAPABILITY(x) SLINGSHOT_TSA(capability(x))
#define SCOPED_CAPABILITY SLINGSHOT_TSA(scoped_lockable)
#define GUARDED_BY(x) SLINGSHOT_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) SLINGSHOT_TSA(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) SLINGSHOT_TSA(acquired_before(__VA_ARGS__))
#define REQUIRES(...) SLINGSHOT_TSA(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) SLINGSHOT_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) SLINGSHOT_TSA(release_capability(__VA_ARGS__))
#define EXCLUDES(...) SLINGSHOT_TSA(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) SLINGSHOT_TSA(assert_capability(x))
#define NO_THREAD_SAFETY_ANALYSIS SLINGSHOT_TSA(no_thread_safety_analysis)

namespace slingshot {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  void AssertHeld() ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable. Wait(mu) releases mu while it waits and holds it
// again when it returns; every waiter must use the same mutex. Use it in a
// loop that re-checks the condition.
class CondVar {
 public:
  void Wait(Mutex* mu) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // As Wait, for at most timeout; false if it timed out.
  template <class Rep, class Period>
  bool WaitFor(Mutex* mu, std::chrono::duration<Rep, Period> timeout) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    bool woke = cv_.wait_for(lock, timeout) == std::cv_status::no_timeout;
    lock.release();
    return woke;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_MUTEX_H_
