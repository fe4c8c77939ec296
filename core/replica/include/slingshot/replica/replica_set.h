// ReplicaSet: the client's replicas of one service (DESIGN.md §5 "Run").
//
// - A replica is added when its session starts. Until it joins, a pin keeps
//   the log from being truncated past what it will need.
// - When it attaches (Attached{consumed_seq}) the log is replayed to it from
//   consumed_seq + 1; once it has been sent every input it is live and
//   receives each new input (Fanout) with the others.
// - The leader, whose screen the user sees, is the live replica that has
//   consumed every input and consumes inputs fastest (a moving average of
//   input-to-consumed time). A rival must be faster by switch_ratio to take
//   over; a leader behind for lag_switch_ms loses the lead to one that is
//   current; if none is current the one furthest along leads. A new leader
//   is sent Repaint (a full screen).
// - When the home reports a checkpoint, the log is truncated up to its seq,
//   never past a pin.
//
// Thread-safe. Attached() blocks while it replays (reads the log); the other
// calls are short. Channels are called with the set's mutex held and must
// not call back into the set.
#ifndef SLINGSHOT_REPLICA_REPLICA_SET_H_
#define SLINGSHOT_REPLICA_REPLICA_SET_H_

#include <chrono>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "slingshot/base/mutex.h"
#include "slingshot/net/wire.h"
#include "slingshot/store/event_log.h"

namespace slingshot {

// Where the set sends one replica its inputs and repaint requests.
class ReplicaChannel {
 public:
  virtual ~ReplicaChannel() = default;
  virtual void Post(wire::Message m) = 0;
};

struct ReplicaSetOptions {
  using Clock = std::chrono::steady_clock;
  double switch_ratio = 0.8;  // a rival must take this fraction of the leader's time
  int lag_switch_ms = 300;
  size_t max_sent_times = 8192;  // inputs remembered for latency samples
  std::function<Clock::time_point()> now = [] { return Clock::now(); };
};

struct ReplicaView {
  std::string name;
  uint64_t consumed = 0;
  bool live = false;  // replay done
  bool leader = false;
  double latency_ms = 0;  // moving average, input sent -> consumed
};

class ReplicaSet {
 public:
  using Clock = ReplicaSetOptions::Clock;
  struct Member;
  using Handle = std::shared_ptr<Member>;

  // log must outlive the set.
  explicit ReplicaSet(EventLog* log, ReplicaSetOptions options = {});

  // A replica whose session starts. With pin, the log keeps every input
  // after the current truncation point until it joins or is removed.
  // channel must outlive its membership.
  Handle Add(std::string name, bool is_home, ReplicaChannel* channel, bool pin);
  // It attached with this state. Corruption if its seq is before the log's
  // start or after its end; InvalidArgument if its screen size differs
  // from the others'. Replays, then makes it live.
  Status Attached(const Handle& m, const wire::Attached& a);
  // It has consumed every input <= seq.
  void Consumed(const Handle& m, uint64_t seq);
  // Its session ended.
  void Remove(const Handle& m);

  // Sends new inputs (in seq order) to every live replica.
  void Fanout(std::vector<wire::Input>&& inputs);
  // The home's checkpoint covers seq: the log is truncated up to seq or the
  // lowest pin. Returns the seq truncated up to (unchanged if nothing was).
  Result<uint64_t> Checkpointed(uint64_t seq);

  // The device takes the service over from the home's state at seq: the
  // log starts afresh after seq (EventLog::RestartAfter). Only before any
  // replica is live. Returns how many records above seq were dropped.
  Result<uint64_t> RestartLog(uint64_t seq);

  bool IsLeader(const Handle& m) const;
  bool IsLive(const Handle& m) const;
  bool IsGone(const Handle& m) const;
  // The live member called name (not home), or null.
  Handle Find(const std::string& name) const;
  // Asks the leader for a full screen (a viewer just connected).
  void RepaintLeader();
  // The screen size: the first attached replica's; 0x0 until then.
  std::pair<uint16_t, uint16_t> screen() const;
  // Waits up to timeout for a replica to attach; false if none did.
  bool WaitForScreen(std::chrono::milliseconds timeout) const;
  // Waits until m is live or gone, or timeout; true if live.
  bool WaitLive(const Handle& m, std::chrono::milliseconds timeout) const;

  std::vector<ReplicaView> Views() const;
  uint64_t switches() const;
  uint64_t posted_seq() const;

 private:
  void ChooseLeader() REQUIRES(mu_);
  void UnpinLocked(Member& m) REQUIRES(mu_);

  EventLog* const log_;
  const ReplicaSetOptions options_;
  mutable Mutex mu_;
  mutable CondVar cv_;
  std::list<Handle> members_ GUARDED_BY(mu_);
  Handle leader_ GUARDED_BY(mu_);
  bool leader_behind_ GUARDED_BY(mu_) = false;
  Clock::time_point leader_behind_since_ GUARDED_BY(mu_);
  uint64_t switches_ GUARDED_BY(mu_) = 0;
  std::deque<std::pair<uint64_t, Clock::time_point>> sent_times_ GUARDED_BY(mu_);
  uint64_t posted_seq_ GUARDED_BY(mu_) = 0;  // every input <= this went to the live replicas
  std::multiset<uint64_t> pins_ GUARDED_BY(mu_);
  uint16_t width_ GUARDED_BY(mu_) = 0, height_ GUARDED_BY(mu_) = 0;
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_REPLICA_SET_H_
