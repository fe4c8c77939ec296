#include "slingshot/base/worker_pool.h"

namespace slingshot {

WorkerPool::WorkerPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

WorkerPool::~WorkerPool() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  work_cv_.SignalAll();
  for (auto& t : threads_) t.join();
}

// Claims indexes one at a time until none remain (items are coarse: chunks).
// Drops the lock around each call.
void WorkerPool::RunShare() {
  while (fn_ != nullptr && next_ < n_) {
    size_t i = next_++;
    const auto* fn = fn_;
    mu_.Unlock();
    (*fn)(i);
    mu_.Lock();
    if (++done_ == n_) done_cv_.SignalAll();
  }
}

void WorkerPool::WorkerLoop() {
  uint64_t seen = 0;
  MutexLock l(&mu_);
  for (;;) {
    while (!stop_ && generation_ == seen) work_cv_.Wait(&mu_);
    if (stop_) return;
    seen = generation_;
    RunShare();
  }
}

void WorkerPool::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (threads_.empty() || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  MutexLock l(&mu_);
  fn_ = &fn;
  n_ = n;
  next_ = 0;
  done_ = 0;
  ++generation_;
  work_cv_.SignalAll();
  RunShare();
  while (done_ != n_) done_cv_.Wait(&mu_);
  fn_ = nullptr;
}

}  // namespace slingshot
