#include "slingshot/replica/input_sequencer.h"

#include "slingshot/base/log.h"

namespace slingshot {

InputSequencer::InputSequencer(EventLog* log, InputSequencerOptions options, Sink sink)
    : log_(log), options_(options), sink_(std::move(sink)) {}

Status InputSequencer::Input(uint16_t type, Bytes payload, bool another_waiting) {
  MutexLock l(&mu_);
  const bool hold = options_.sync_every_input && another_waiting && held_.size() + 1 < options_.max_held;
  auto seq = log_->Append(type, payload, options_.sync_every_input && !hold);
  if (!seq.ok()) {
    Status dropped = seq.status().Annotate("input dropped: the event log refused it");
    LogError(dropped.message());
    (void)SendHeldLocked(/*sync=*/true);
    return dropped;
  }
  held_.push_back(wire::Input{*seq, type, std::move(payload)});
  if (hold) return Status::OK();
  return SendHeldLocked(/*sync=*/false);
}

Status InputSequencer::Flush() {
  MutexLock l(&mu_);
  return SendHeldLocked(/*sync=*/true);
}

size_t InputSequencer::held() const {
  MutexLock l(&mu_);
  return held_.size();
}

Status InputSequencer::SendHeldLocked(bool sync) {
  if (held_.empty()) return Status::OK();
  if (sync && options_.sync_every_input) {
    Status st = log_->Sync();
    if (!st.ok()) {
      Status lost = st.Annotate("inputs " + std::to_string(held_.front().seq) + ".." +
                                std::to_string(held_.back().seq) +
                                " not sent: the event log could not make them durable. Restart the proxy: the log "
                                "recovers them and they are replayed");
      LogError(lost.message());
      held_.clear();
      return lost;
    }
  }
  std::vector<wire::Input> out;
  out.swap(held_);
  sink_(std::move(out));
  return Status::OK();
}

}  // namespace slingshot
