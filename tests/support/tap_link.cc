#include "tap_link.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <random>
#include <vector>

#include "slingshot/base/mutex.h"

namespace slingshot::testing {
namespace {

using Clock = std::chrono::steady_clock;

// How long before a frame is due the carrier stops sleeping and spins: a
// timed sleep wakes 50 to 300 microseconds late on these VMs (more after a
// long sleep), which would stretch a 1 ms round trip past 5%. The margin
// follows the lateness seen: twice its moving average, within these bounds.
constexpr auto kMinSpin = std::chrono::microseconds(30);
constexpr auto kMaxSpin = std::chrono::microseconds(1000);
// A frame is delivered once it is due within this much.
constexpr auto kEarly = std::chrono::microseconds(5);
constexpr size_t kMaxFrame = 65536;

Result<int> OpenTap(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return Status::InvalidArgument("tap name '" + name + "' must have 1 to " + std::to_string(IFNAMSIZ - 1) +
                                   " characters");
  }
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Status::FromErrno("open /dev/net/tun (needs root)", errno);
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno("create tap " + name + " (does an interface of that name exist?)", e);
  }
  return fd;
}

// How late a thread blocked in ppoll() on an idle descriptor wakes after a
// write to it: the median of a few tries, each after an idle millisecond.
// A frame that reaches an idle link waits that long before it is stamped,
// so the link takes it off the delay it adds (calibration, as in any delay
// emulator: what matters is the delay seen end to end).
Clock::duration MeasureWakeLatency() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Clock::duration::zero();
  std::vector<Clock::duration> late;
  for (int i = 0; i < 15; ++i) {
    Clock::time_point written;
    std::thread writer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      written = Clock::now();
      (void)!::write(p[1], "x", 1);
    });
    pollfd fd{p[0], POLLIN, 0};
    ::ppoll(&fd, 1, nullptr, nullptr);
    auto woke = Clock::now();
    char c;
    (void)!::read(p[0], &c, 1);
    writer.join();
    late.push_back(woke - written);
  }
  ::close(p[0]);
  ::close(p[1]);
  std::sort(late.begin(), late.end());
  return std::min<Clock::duration>(late[late.size() / 2], std::chrono::microseconds(200));
}

double ParseNumber(const std::string& s, bool* ok) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  *ok = !s.empty() && end == s.c_str() + s.size();
  return v;
}

}  // namespace

Result<LinkDirection> ParseLinkDirection(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t colon = text.find(':', start);
    parts.push_back(text.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  bool ok_rate = false, ok_rtt = false, ok_loss = true;
  LinkDirection d;
  if (parts.size() == 2 || parts.size() == 3) {
    d.rate_bits_per_s = ParseNumber(parts[0], &ok_rate) * 1e6;
    d.delay_ms = ParseNumber(parts[1], &ok_rtt) / 2;
    if (parts.size() == 3) d.loss = ParseNumber(parts[2], &ok_loss);
  }
  if (!ok_rate || !ok_rtt || !ok_loss || d.rate_bits_per_s <= 0 || d.delay_ms < 0 || d.loss < 0 || d.loss >= 1) {
    return Status::InvalidArgument("link '" + text +
                                   "': expected RATE_MBIT:RTT_MS[:LOSS] with a rate above 0, an RTT of 0 or more "
                                   "and a loss from 0 to below 1, e.g. 2:60 or 11:2:0.01");
  }
  return d;
}

struct TapLink::Pipe {
  LinkDirection d;
  int from = -1;
  int to = -1;
  std::mt19937_64 rng;
  mutable Mutex mu;
  LinkCounters counters GUARDED_BY(mu);
};

Result<std::unique_ptr<TapLink>> TapLink::Create(const std::string& name_a, const std::string& name_b,
                                                 LinkDirection a_to_b, LinkDirection b_to_a, uint64_t seed) {
  std::unique_ptr<TapLink> l(new TapLink());
  SLINGSHOT_ASSIGN_OR_RETURN(l->fd_a_, OpenTap(name_a));
  SLINGSHOT_ASSIGN_OR_RETURN(l->fd_b_, OpenTap(name_b));
  if (::pipe2(l->wake_, O_CLOEXEC | O_NONBLOCK) != 0) return Status::FromErrno("pipe", errno);
  l->wake_latency_ = MeasureWakeLatency();
  for (LinkDirection* d : {&a_to_b, &b_to_a}) {
    if (d->queue_bytes == 0) d->queue_bytes = std::max<size_t>(64 << 10, size_t(d->rate_bits_per_s * 0.1 / 8));
  }
  l->ab_ = std::make_unique<Pipe>();
  l->ab_->d = a_to_b;
  l->ab_->from = l->fd_a_;
  l->ab_->to = l->fd_b_;
  l->ab_->rng.seed(seed);
  l->ba_ = std::make_unique<Pipe>();
  l->ba_->d = b_to_a;
  l->ba_->from = l->fd_b_;
  l->ba_->to = l->fd_a_;
  l->ba_->rng.seed(seed ^ 0x9e3779b97f4a7c15ull);
  TapLink* raw = l.get();
  l->ab_thread_ = std::thread([raw] { raw->Run(raw->ab_.get()); });
  l->ba_thread_ = std::thread([raw] { raw->Run(raw->ba_.get()); });
  return l;
}

TapLink::~TapLink() {
  Stop();
  for (int fd : {fd_a_, fd_b_, wake_[0], wake_[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

void TapLink::Stop() {
  if (stop_.exchange(true)) return;
  if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);
  if (ab_thread_.joinable()) ab_thread_.join();
  if (ba_thread_.joinable()) ba_thread_.join();
}

LinkCounters TapLink::a_to_b() const {
  MutexLock lock(&ab_->mu);
  return ab_->counters;
}

LinkCounters TapLink::b_to_a() const {
  MutexLock lock(&ba_->mu);
  return ba_->counters;
}

// One direction, on its own thread: take frames as they arrive, stamp each
// with its delivery time, and deliver each when it is due.
void TapLink::Run(Pipe* p) {
  ::prctl(PR_SET_TIMERSLACK, 1UL);  // wake when asked, not 50 us later
  struct Frame {
    std::vector<uint8_t> bytes;
    Clock::time_point due;
  };
  std::deque<Frame> queue;
  Clock::time_point departure = Clock::now();
  const auto delay = std::max<Clock::duration>(
      Clock::duration::zero(),
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(p->d.delay_ms)) -
          wake_latency_);
  std::bernoulli_distribution lose(p->d.loss);
  std::vector<uint8_t> buf(kMaxFrame);
  Clock::duration late = std::chrono::microseconds(50);  // moving average of a timed wake's lateness
  auto margin = [&] { return std::clamp<Clock::duration>(2 * late, kMinSpin, kMaxSpin); };
  while (!stop_) {
    auto now = Clock::now();
    while (!queue.empty() && queue.front().due <= now + kEarly) {
      const Frame& f = queue.front();
      bool sent = ::write(p->to, f.bytes.data(), f.bytes.size()) == ssize_t(f.bytes.size());
      {
        MutexLock lock(&p->mu);
        if (sent) {
          p->counters.frames++;
          p->counters.bytes += f.bytes.size();
        }
      }
      queue.pop_front();
    }
    timespec ts{};
    timespec* timeout = nullptr;
    Clock::time_point wake{};
    if (!queue.empty()) {
      auto wait = queue.front().due - now - margin();
      if (wait < Clock::duration::zero()) wait = Clock::duration::zero();
      wake = now + wait;
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
      ts.tv_sec = ns / 1000000000;
      ts.tv_nsec = ns % 1000000000;
      timeout = &ts;
    }
    pollfd fds[2] = {{p->from, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int ready = ::ppoll(fds, 2, timeout, nullptr);
    if (ready < 0 && errno != EINTR) break;
    if (stop_) break;
    if (ready == 0 && timeout != nullptr && timeout->tv_sec + timeout->tv_nsec > 0) {
      late += (Clock::now() - wake - late) / 8;
    }
    for (;;) {
      ssize_t n = ::read(p->from, buf.data(), buf.size());
      if (n <= 0) break;  // EAGAIN: all taken; EIO: the tap is down
      auto arrival = Clock::now();
      if (p->d.loss > 0 && lose(p->rng)) {
        MutexLock lock(&p->mu);
        p->counters.lost++;
        continue;
      }
      // The router's queue holds what waits to be serialized; frames on
      // the wire (propagating) no longer take room in it.
      double backlog = departure > arrival ? std::chrono::duration<double>(departure - arrival).count() *
                                                 p->d.rate_bits_per_s / 8
                                           : 0;
      if (backlog + double(n) > double(p->d.queue_bytes)) {
        MutexLock lock(&p->mu);
        p->counters.queue_drops++;
        continue;
      }
      auto serialize = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(double(n) * 8 / p->d.rate_bits_per_s));
      departure = std::max(departure, arrival) + serialize;
      queue.push_back(Frame{std::vector<uint8_t>(buf.begin(), buf.begin() + n), departure + delay});
    }
    // The next frame is due within the spin margin: wait for it awake.
    if (!queue.empty() && queue.front().due - Clock::now() <= margin()) {
      auto due = queue.front().due;
      while (Clock::now() + kEarly < due && !stop_) __builtin_ia32_pause();
    }
  }
}

}  // namespace slingshot::testing
