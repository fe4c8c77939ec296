// InputSequencer: the client side of every input (DESIGN.md §5 "Run").
// Each input gets the next seq and is appended to the durable event log
// before anything sees it; then it is handed, in seq order, to the sink
// (ReplicaSet::Fanout sends it to every live replica).
//
// Group commit: an input the caller knows is followed by another one
// already waiting (a key's press and release, keys typed as a burst) is
// appended without a sync and held; the next input's fdatasync covers
// both, and both go out together. At most max_held inputs share one sync.
// Flush() sends what is held (the viewer went away mid-message). Without
// a sync per input (sync_every_input false) nothing is ever held.
//
// An input the log refuses (disk full) is dropped with an error in the log
// and the inputs before it are sent; an input whose sync fails is not sent
// (the proxy's restart recovers it from the log and replays it).
//
// Thread-safe; inputs are sequenced in the order Input() is called.
#ifndef SLINGSHOT_REPLICA_INPUT_SEQUENCER_H_
#define SLINGSHOT_REPLICA_INPUT_SEQUENCER_H_

#include <functional>
#include <vector>

#include "slingshot/base/mutex.h"
#include "slingshot/net/wire.h"
#include "slingshot/store/event_log.h"

namespace slingshot {

struct InputSequencerOptions {
  bool sync_every_input = true;
  size_t max_held = 64;
};

class InputSequencer {
 public:
  using Sink = std::function<void(std::vector<wire::Input>&& inputs)>;
  // log must outlive the sequencer. sink is called with input_mu held, so
  // calls are in seq order; it must not call back into the sequencer.
  InputSequencer(EventLog* log, InputSequencerOptions options, Sink sink);

  // Sequences one input. another_waiting: the caller has seen the first
  // byte of another input already (it will come).
  Status Input(uint16_t type, Bytes payload, bool another_waiting);
  // Makes the held inputs durable and sends them.
  Status Flush();
  // How many inputs are held now (for tests and status).
  size_t held() const;

 private:
  Status SendHeldLocked(bool sync) REQUIRES(mu_);

  EventLog* const log_;
  const InputSequencerOptions options_;
  const Sink sink_;
  mutable Mutex mu_;
  std::vector<wire::Input> held_ GUARDED_BY(mu_);
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_INPUT_SEQUENCER_H_
