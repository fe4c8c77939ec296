// WorkerPool: a fixed set of threads for data-parallel loops.
// Thread-safe: ParallelFor may be called from one thread at a time per pool.
#ifndef SLINGSHOT_BASE_WORKER_POOL_H_
#define SLINGSHOT_BASE_WORKER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "slingshot/base/mutex.h"

namespace slingshot {

class WorkerPool {
 public:
  // threads: total parallelism including the calling thread (>= 1);
  // 0 means std::thread::hardware_concurrency().
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs fn(i) for every i in [0, n) across the pool and the calling thread;
  // returns when all calls have returned. fn must not throw.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn) EXCLUDES(mu_);
  int parallelism() const { return static_cast<int>(threads_.size()) + 1; }

 private:
  void WorkerLoop() EXCLUDES(mu_);
  void RunShare() REQUIRES(mu_);
  Mutex mu_;
  CondVar work_cv_, done_cv_;
  std::vector<std::thread> threads_;
  const std::function<void(size_t)>* fn_ GUARDED_BY(mu_) = nullptr;
  size_t n_ GUARDED_BY(mu_) = 0;
  size_t next_ GUARDED_BY(mu_) = 0;
  size_t done_ GUARDED_BY(mu_) = 0;
  uint64_t generation_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
};

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_WORKER_POOL_H_
