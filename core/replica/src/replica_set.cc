#include "slingshot/replica/replica_set.h"

#include "slingshot/base/log.h"

namespace slingshot {
namespace {
double Ms(std::chrono::steady_clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
}  // namespace

struct ReplicaSet::Member {
  std::string name;
  bool is_home = false;
  ReplicaChannel* channel = nullptr;
  // Guarded by the set's mutex.
  bool attached = false, live = false, gone = false;
  uint64_t consumed = 0;
  double ewma_ms = -1;
  uint64_t pin = 0;
  bool pinned = false;
};

ReplicaSet::ReplicaSet(EventLog* log, ReplicaSetOptions options) : log_(log), options_(std::move(options)) {
  MutexLock l(&mu_);
  posted_seq_ = log_->last_seq();  // recovered records are durable (EventLog::Open)
}

Result<uint64_t> ReplicaSet::RestartLog(uint64_t seq) {
  MutexLock l(&mu_);
  for (const auto& m : members_) {
    if (m->live) return Status::InvalidArgument("the log cannot start afresh while replica " + m->name + " is live");
  }
  SLINGSHOT_ASSIGN_OR_RETURN(uint64_t dropped, log_->RestartAfter(seq));
  posted_seq_ = seq;
  sent_times_.clear();
  return dropped;
}

ReplicaSet::Handle ReplicaSet::Add(std::string name, bool is_home, ReplicaChannel* channel, bool pin) {
  auto m = std::make_shared<Member>();
  m->name = std::move(name);
  m->is_home = is_home;
  m->channel = channel;
  MutexLock l(&mu_);
  if (pin) {
    m->pin = log_->truncated_seq();
    m->pinned = true;
    pins_.insert(m->pin);
  }
  members_.push_back(m);
  return m;
}

void ReplicaSet::UnpinLocked(Member& m) {
  if (!m.pinned) return;
  pins_.erase(pins_.find(m.pin));
  m.pinned = false;
}

Status ReplicaSet::Attached(const Handle& m, const wire::Attached& a) {
  {
    MutexLock l(&mu_);
    m->attached = true;
    m->consumed = a.consumed_seq;
    m->name = a.replica;
    if (width_ == 0) {
      width_ = a.width;
      height_ = a.height;
      cv_.SignalAll();
    } else if (a.width != width_ || a.height != height_) {
      return Status::InvalidArgument("replica " + a.replica + " has a " + std::to_string(a.width) + "x" +
                                     std::to_string(a.height) + " screen; the others have " + std::to_string(width_) +
                                     "x" + std::to_string(height_));
    }
  }
  if (a.consumed_seq < log_->truncated_seq()) {
    return Status::Corruption("replica " + a.replica + " holds inputs up to " + std::to_string(a.consumed_seq) +
                              " but the log starts after " + std::to_string(log_->truncated_seq()) +
                              ": it was made from a checkpoint older than the home acknowledged");
  }
  if (a.consumed_seq > log_->last_seq()) {
    return Status::Corruption("replica " + a.replica + " has consumed input " + std::to_string(a.consumed_seq) +
                              " but this log ends at " + std::to_string(log_->last_seq()) +
                              ": the log was lost or belongs to another service");
  }
  uint64_t next = a.consumed_seq + 1, replayed = 0;
  for (;;) {
    uint64_t upto;  // inputs not yet posted are not durable yet: they come by Fanout
    {
      MutexLock l(&mu_);
      upto = posted_seq_;
    }
    Status st = log_->ReadFrom(next, [&](const LogRecord& rec) {
      if (rec.seq > upto) return false;
      m->channel->Post(wire::Input{rec.seq, rec.type, rec.payload});
      next = rec.seq + 1;
      ++replayed;
      return true;
    });
    SLINGSHOT_RETURN_IF_ERROR(st);
    MutexLock l(&mu_);
    if (posted_seq_ < next) {  // nothing new was posted meanwhile: live from here
      m->live = true;
      UnpinLocked(*m);
      ChooseLeader();
      cv_.SignalAll();
      break;
    }
  }
  LogInfo("replica " + a.replica + " attached at seq " + std::to_string(a.consumed_seq) + "; replayed " +
          std::to_string(replayed) + " inputs");
  return Status::OK();
}

void ReplicaSet::Consumed(const Handle& m, uint64_t seq) {
  MutexLock l(&mu_);
  if (seq > m->consumed) {
    m->consumed = seq;
    const auto now = options_.now();
    for (auto it = sent_times_.rbegin(); it != sent_times_.rend(); ++it) {
      if (it->first == seq) {
        double sample = Ms(now - it->second);
        m->ewma_ms = m->ewma_ms < 0 ? sample : 0.8 * m->ewma_ms + 0.2 * sample;
        break;
      }
      if (it->first < seq) break;
    }
  }
  ChooseLeader();
}

void ReplicaSet::Remove(const Handle& m) {
  MutexLock l(&mu_);
  m->gone = true;
  UnpinLocked(*m);
  members_.remove(m);
  ChooseLeader();
  cv_.SignalAll();
}

void ReplicaSet::Fanout(std::vector<wire::Input>&& inputs) {
  MutexLock l(&mu_);
  const auto now = options_.now();
  for (auto& in : inputs) {
    sent_times_.emplace_back(in.seq, now);
    for (auto& k : members_) {
      if (k->live && !k->gone) k->channel->Post(in);
    }
    posted_seq_ = in.seq;
  }
  while (sent_times_.size() > options_.max_sent_times) sent_times_.pop_front();
  ChooseLeader();
}

Result<uint64_t> ReplicaSet::Checkpointed(uint64_t seq) {
  uint64_t upto = seq;
  {
    MutexLock l(&mu_);
    if (!pins_.empty()) upto = std::min(upto, *pins_.begin());
  }
  if (upto > log_->truncated_seq()) SLINGSHOT_RETURN_IF_ERROR(log_->TruncateUpTo(upto));
  return log_->truncated_seq();
}

void ReplicaSet::ChooseLeader() {
  const uint64_t last = posted_seq_;
  const auto now = options_.now();
  auto caught_up = [&](const Handle& k) { return k->live && !k->gone && k->consumed >= last; };
  auto speed = [](const Handle& k) { return k->ewma_ms < 0 ? 1e9 : k->ewma_ms; };
  Handle best;
  for (auto& k : members_) {
    if (caught_up(k) && (!best || speed(k) < speed(best))) best = k;
  }
  Handle next = leader_;
  if (leader_ && (leader_->gone || !leader_->live)) next = nullptr;
  if (next && !caught_up(next)) {
    if (!leader_behind_) {
      leader_behind_ = true;
      leader_behind_since_ = now;
    }
    if (best && Ms(now - leader_behind_since_) > options_.lag_switch_ms) next = best;
  } else {
    leader_behind_ = false;
    if (next && best && best != next && speed(best) < speed(next) * options_.switch_ratio) next = best;
  }
  if (!next) {
    next = best;
    if (!next) {  // nobody is current: show the one furthest along
      for (auto& k : members_) {
        if (k->live && !k->gone && (!next || k->consumed > next->consumed)) next = k;
      }
    }
  }
  if (next != leader_) {
    LogInfo("leader: " + (leader_ ? leader_->name : std::string("none")) + " -> " +
            (next ? next->name : std::string("none")));
    leader_ = next;
    leader_behind_ = false;
    ++switches_;
    if (next) next->channel->Post(wire::Repaint{});
  }
}

bool ReplicaSet::IsLeader(const Handle& m) const {
  MutexLock l(&mu_);
  return leader_ == m;
}
bool ReplicaSet::IsLive(const Handle& m) const {
  MutexLock l(&mu_);
  return m->live && !m->gone;
}
bool ReplicaSet::IsGone(const Handle& m) const {
  MutexLock l(&mu_);
  return m->gone;
}

ReplicaSet::Handle ReplicaSet::Find(const std::string& name) const {
  MutexLock l(&mu_);
  for (const auto& k : members_) {
    if (k->name == name && !k->gone) return k;
  }
  return nullptr;
}

void ReplicaSet::RepaintLeader() {
  MutexLock l(&mu_);
  if (leader_) leader_->channel->Post(wire::Repaint{});
}

std::pair<uint16_t, uint16_t> ReplicaSet::screen() const {
  MutexLock l(&mu_);
  return {width_, height_};
}

bool ReplicaSet::WaitForScreen(std::chrono::milliseconds timeout) const {
  auto deadline = Clock::now() + timeout;
  MutexLock l(&mu_);
  while (width_ == 0 && Clock::now() < deadline) cv_.WaitFor(&mu_, std::chrono::milliseconds(200));
  return width_ != 0;
}

bool ReplicaSet::WaitLive(const Handle& m, std::chrono::milliseconds timeout) const {
  auto deadline = Clock::now() + timeout;
  MutexLock l(&mu_);
  while (!m->live && !m->gone && Clock::now() < deadline) cv_.WaitFor(&mu_, std::chrono::milliseconds(50));
  return m->live && !m->gone;
}

std::vector<ReplicaView> ReplicaSet::Views() const {
  MutexLock l(&mu_);
  std::vector<ReplicaView> v;
  for (const auto& k : members_) {
    v.push_back(ReplicaView{k->name, k->consumed, k->live, k == leader_, k->ewma_ms < 0 ? 0 : k->ewma_ms});
  }
  return v;
}
uint64_t ReplicaSet::switches() const {
  MutexLock l(&mu_);
  return switches_;
}
uint64_t ReplicaSet::posted_seq() const {
  MutexLock l(&mu_);
  return posted_seq_;
}

}  // namespace slingshot
