// WorkerPool: a fixed set of threads for data-parallel loops.
// Thread-safe: ParallelFor may be called from one thread at a time per pool.
#ifndef SLINGSHOT_WORKER_POOL_H_
#define SLINGSHOT_WORKER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

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
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);
  int parallelism() const { return static_cast<int>(threads_.size()) + 1; }

 private:
  void WorkerLoop();
  void RunShare();
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::vector<std::thread> threads_;
  const std::function<void(size_t)>* fn_ = nullptr;  // guarded by mu_
  size_t n_ = 0, next_ = 0, done_ = 0;               // guarded by mu_
  uint64_t generation_ = 0;                          // guarded by mu_
  bool stop_ = false;                                // guarded by mu_
};

}  // namespace slingshot

#endif  // SLINGSHOT_WORKER_POOL_H_
