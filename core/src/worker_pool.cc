#include "slingshot/worker_pool.h"

namespace slingshot {

WorkerPool::WorkerPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

// Claims indexes one at a time until none remain (items are coarse: chunks).
void WorkerPool::RunShare() {
  std::unique_lock<std::mutex> l(mu_);
  while (fn_ != nullptr && next_ < n_) {
    size_t i = next_++;
    const auto* fn = fn_;
    l.unlock();
    (*fn)(i);
    l.lock();
    if (++done_ == n_) done_cv_.notify_all();
  }
}

void WorkerPool::WorkerLoop() {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    work_cv_.wait(l, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    l.unlock();
    RunShare();
    l.lock();
  }
}

void WorkerPool::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (threads_.empty() || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    fn_ = &fn;
    n_ = n;
    next_ = 0;
    done_ = 0;
    ++generation_;
  }
  work_cv_.notify_all();
  RunShare();
  std::unique_lock<std::mutex> l(mu_);
  done_cv_.wait(l, [&] { return done_ == n_; });
  fn_ = nullptr;
}

}  // namespace slingshot
