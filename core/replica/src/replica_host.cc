#include "slingshot/replica/replica_host.h"

#include <chrono>

#include "slingshot/base/log.h"

namespace slingshot {
namespace {
using Clock = std::chrono::steady_clock;
constexpr size_t kMaxHeld = 1u << 20;  // inputs held across one checkpoint
constexpr int kHeartbeatMs = 500;
// A session is ended if the client says nothing for this long (it sends
// inputs and nothing else; a user may sit idle for a long time).
constexpr int kSessionIdleMs = 24 * 3600 * 1000;
}  // namespace

ReplicaHost::ReplicaHost(std::string service, std::string service_type, std::string replica)
    : service_(std::move(service)), type_(std::move(service_type)), replica_(std::move(replica)) {
  heartbeat_ = std::thread([this] { Heartbeat(); });
}

ReplicaHost::~ReplicaHost() { Shutdown(); }

ServiceCallbacks ReplicaHost::Callbacks() {
  ServiceCallbacks cb;
  cb.on_screen = [this](wire::Screen&& s) {
    MutexLock l(&mu_);
    if (session_ && !quiesced_) session_->Post(std::move(s));
  };
  cb.on_consumed = [this](uint64_t seq) {
    MutexLock l(&mu_);
    if (session_) session_->Post(wire::Consumed{seq});
  };
  cb.on_lost = [this](const Status& why) {
    std::function<void(const Status&)> f;
    {
      MutexLock l(&mu_);
      if (quiesced_ || stopping_) return;
      f = on_lost_;
      if (session_) session_->Close();
    }
    if (f) f(why);
  };
  return cb;
}

Status ReplicaHost::Connect(const Endpoint& ep, uint64_t consumed_seq, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  Status last;
  for (;;) {
    auto a = ServiceAdapter::Open(type_, ep, consumed_seq, Callbacks(), 5000);
    if (a.ok()) {
      MutexLock l(&mu_);
      adapter_ = std::move(*a);
      width_ = adapter_->width();
      height_ = adapter_->height();
      base_seq_ = consumed_seq;
      quiesced_ = false;
      return Status::OK();
    }
    last = a.status();
    if (last.code() != Status::Code::kUnavailable || Clock::now() >= deadline) break;
    // A restored guest answers within moments (each poll it waits is
    // time to ready); a booting one takes its start-up.
    const bool early = Clock::now() < deadline - std::chrono::milliseconds(timeout_ms) + std::chrono::seconds(3);
    std::this_thread::sleep_for(std::chrono::milliseconds(early ? 20 : 200));
  }
  return last.Annotate("service " + service_ + " did not come up within " + std::to_string(timeout_ms) + " ms");
}

Status ReplicaHost::Apply(wire::Input in) {
  SLINGSHOT_RETURN_IF_ERROR(ServiceAdapter::CheckInput(type_, in.type, in.payload));
  MutexLock a(&apply_mu_);
  ServiceAdapter* adapter = nullptr;
  {
    MutexLock l(&mu_);
    if (quiesced_ || !adapter_) {
      if (held_.size() >= kMaxHeld) {
        return Status::ResourceExhausted("replica " + replica_ + " of " + service_ + " is holding " +
                                         std::to_string(held_.size()) + " inputs for a checkpoint");
      }
      held_.push_back(std::move(in));
      return Status::OK();
    }
    adapter = adapter_.get();  // replaced only under apply_mu_, which we hold
  }
  return adapter->Apply(in);
}

Status ReplicaHost::Serve(Connection& c) {
  uint64_t id;
  {
    MutexLock l(&mu_);
    if (stopping_) return Status::Unavailable("replica " + replica_ + " is shutting down");
    if (session_) {
      LogInfo("replica " + replica_ + " of " + service_ + ": " + c.peer().Describe() + " replaces " +
              session_->peer().Describe());
      Status why = Status::AlreadyExists("another session of " + c.peer().Describe() + " attached to " + service_ +
                                         " on replica " + replica_ + " and replaced this one");
      session_->Post(wire::Error{why.code(), why.message()});
      session_->Close();
    }
    session_ = &c;
    id = ++session_id_;
    uint64_t consumed = adapter_ ? adapter_->consumed() : base_seq_;
    c.Post(wire::Attached{service_, replica_, width_, height_, consumed});
    if (adapter_) c.Post(adapter_->FullScreen());
  }
  bool left = false;
  std::function<Status(Frame&&)> on_frame = [&](Frame&& f) -> Status {
    if (auto* in = std::get_if<wire::Input>(&f.message)) {
      Status s = Apply(std::move(*in));
      if (!s.ok()) c.Post(wire::Error{s.code(), s.message()});
      return s;
    }
    if (std::holds_alternative<wire::Repaint>(f.message)) {
      MutexLock l(&mu_);
      if (adapter_) c.Post(adapter_->FullScreen());
      return Status::OK();
    }
    if (std::holds_alternative<wire::Leave>(f.message)) {
      left = true;
      return Status::Unavailable(c.peer().Describe() + " left");  // ends Duplex
    }
    Status bad = Status::InvalidArgument(std::string("a replica session does not take ") +
                                         wire::MessageTypeName(wire::TypeOf(f.message)));
    c.Post(wire::Error{bad.code(), bad.message()});
    return bad;
  };
  Status end = c.Duplex(on_frame, kSessionIdleMs);
  MutexLock l(&mu_);
  if (session_id_ == id) session_ = nullptr;
  cv_.SignalAll();
  return left ? Status::OK() : end;
}

Result<uint64_t> ReplicaHost::Quiesce(int timeout_ms) {
  MutexLock a(&apply_mu_);
  ServiceAdapter* adapter;
  {
    MutexLock l(&mu_);
    if (!adapter_) return Status::Unavailable("service " + service_ + " is not connected");
    adapter = adapter_.get();
  }
  SLINGSHOT_RETURN_IF_ERROR(adapter->Barrier(timeout_ms));
  std::unique_ptr<ServiceAdapter> closing;
  uint64_t seq;
  {
    MutexLock l(&mu_);
    quiesced_ = true;
    closing = std::move(adapter_);
    base_seq_ = closing->consumed();
    seq = base_seq_;
  }
  // Outside mu_: the adapter's threads may be waiting for it in a callback.
  closing->Close();
  return seq;
}

Status ReplicaHost::Resume(const Endpoint& ep, int timeout_ms) {
  uint64_t base;
  {
    MutexLock l(&mu_);
    base = base_seq_;
  }
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  Result<std::unique_ptr<ServiceAdapter>> a = Status::Unavailable("not tried");
  for (;;) {
    a = ServiceAdapter::Open(type_, ep, base, Callbacks(), 5000);
    if (a.ok() || a.status().code() != Status::Code::kUnavailable || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  SLINGSHOT_RETURN_IF_ERROR(a.status());
  MutexLock lock(&apply_mu_);
  std::vector<wire::Input> held;
  ServiceAdapter* adapter;
  {
    MutexLock l(&mu_);
    adapter_ = std::move(*a);
    adapter = adapter_.get();
    quiesced_ = false;
    held.swap(held_);
    if (session_) session_->Post(adapter_->FullScreen());
  }
  for (auto& in : held) SLINGSHOT_RETURN_IF_ERROR(adapter->Apply(in));
  return Status::OK();
}

bool ReplicaHost::HandOver(const std::string& device, int timeout_ms) {
  MutexLock l(&mu_);
  if (!session_) return true;
  const uint64_t id = session_id_;
  session_->Post(wire::HandOver{device});
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (session_ && session_id_ == id && Clock::now() < deadline) cv_.WaitFor(&mu_, std::chrono::milliseconds(50));
  if (!session_ || session_id_ != id) return true;
  LogWarning("replica " + replica_ + " of " + service_ + ": " + session_->peer().Describe() +
             " did not leave within " + std::to_string(timeout_ms) + " ms of the hand-over; closing its session");
  session_->Close();
  return false;
}

void ReplicaHost::Broadcast(const wire::Message& m) {
  MutexLock l(&mu_);
  if (session_) session_->Post(m);
}

void ReplicaHost::OnLost(std::function<void(const Status&)> f) {
  MutexLock l(&mu_);
  on_lost_ = std::move(f);
}

uint64_t ReplicaHost::consumed() const {
  MutexLock l(&mu_);
  return adapter_ ? adapter_->consumed() : base_seq_;
}

uint64_t ReplicaHost::applied() const {
  MutexLock l(&mu_);
  if (!held_.empty()) return held_.back().seq;
  return adapter_ ? adapter_->applied() : base_seq_;
}

bool ReplicaHost::stopped() const {
  MutexLock l(&mu_);
  return stopping_;
}

bool ReplicaHost::attached() const {
  MutexLock l(&mu_);
  return session_ != nullptr;
}

std::string ReplicaHost::client() const {
  MutexLock l(&mu_);
  return session_ ? session_->peer().common_name : "";
}

void ReplicaHost::Heartbeat() {
  for (;;) {
    MutexLock l(&mu_);
    if (stopping_) return;
    cv_.WaitFor(&mu_, std::chrono::milliseconds(kHeartbeatMs));
    if (stopping_) return;
    if (session_) session_->Post(wire::Consumed{adapter_ ? adapter_->consumed() : base_seq_});
  }
}

void ReplicaHost::Shutdown() {
  std::unique_ptr<ServiceAdapter> closing;
  {
    MutexLock l(&mu_);
    if (stopping_ && !heartbeat_.joinable()) return;
    stopping_ = true;
    if (session_) session_->Close();
    closing = std::move(adapter_);
    cv_.SignalAll();
  }
  if (closing) closing->Close();
  if (heartbeat_.joinable()) heartbeat_.join();
}

}  // namespace slingshot
