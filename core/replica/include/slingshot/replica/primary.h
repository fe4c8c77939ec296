// Primary: one service's primary replica at home (DESIGN.md §5), kept up
// and checkpointed.
//
// BringUp() restores the VM from the service's last checkpoint (ref
// manifest/NAME in the store, through Instantiate), or, when there is none,
// boots it on its first disk (StartReplica) and publishes the first
// checkpoint at seq 0. Step() checkpoints when the schedule says so
// (TakeCheckpoint). When the VM dies (MarkDead, from the hypervisor's death
// callback) or its service connection is lost, the next Step() tears it
// down and brings it up again from the last checkpoint; the client's log
// brings it current.
//
// Thread-safety: all methods may be called from any thread; BringUp, Step
// and TearDown are serialized (a checkpoint holds the lock for its length,
// so host() waits for it).
#ifndef SLINGSHOT_REPLICA_PRIMARY_H_
#define SLINGSHOT_REPLICA_PRIMARY_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "slingshot/base/keys.h"
#include "slingshot/base/mutex.h"
#include "slingshot/replica/checkpoint.h"
#include "slingshot/replica/instantiate.h"

namespace slingshot {

struct PrimaryOptions {
  // The manifest fields that come from the service's definition: id, type,
  // guest port, VM configuration, state_on_disk, and the boot files (ids and
  // sizes, already in the store). Epoch and seq are the primary's own.
  Manifest base;
  std::string kernel, initrd;  // paths of the boot files for a first boot
  std::string run_dir;         // private: the VM, its disk, restored boot files
  std::vector<uint16_t> extra_ports;
  // The disk for the first boot (called only when there is no checkpoint).
  std::function<Result<DiskTable>()> first_disk;
  ChunkStore* store = nullptr;  // transactional
  const SigningKey* key = nullptr;
  uint64_t checkpoint_inputs = 500;
  std::chrono::seconds checkpoint_interval{60};
  int boot_timeout_ms = 180000;
  int restore_connect_ms = 60000;
  // After each bring-up (the VM runs and its service answers), and after
  // each published checkpoint.
  std::function<void(const LiveReplica&)> on_up;
  std::function<void(const CheckpointResult&)> on_checkpoint;
};

class Primary {
 public:
  Primary(Hypervisor& hv, PrimaryOptions options);
  ~Primary();  // TearDown()s

  // Brings the primary up if it is not (see above). OK if it runs.
  Status BringUp();
  // Brings it back if it died; checkpoints if one is due at now. Returns the
  // first error (the caller retries with a backoff).
  Status Step(std::chrono::steady_clock::time_point now);
  // Checkpoints now (if it runs).
  Result<CheckpointResult> CheckpointNow();
  // The VM died: the next Step() restores it.
  void MarkDead() { dead_ = true; }
  bool up() const;
  // The session host of the running incarnation (null while down).
  std::shared_ptr<ReplicaHost> host() const;
  // The epoch of the last published checkpoint (0: none yet).
  uint64_t epoch() const;
  // Destroys the VM and its disk (the state is in the last checkpoint).
  void TearDown();

  const std::string& name() const { return options_.base.service_id; }

 private:
  Status BringUpLocked() REQUIRES(mu_);
  Status StartLocked() REQUIRES(mu_);  // BringUpLocked without the clean-up on failure
  Result<CheckpointResult> CheckpointLocked() REQUIRES(mu_);
  void TearDownLocked() REQUIRES(mu_);

  Hypervisor& hv_;
  const PrimaryOptions options_;
  std::atomic<bool> dead_{false};
  mutable Mutex mu_;
  std::unique_ptr<LiveReplica> live_ GUARDED_BY(mu_);
  std::shared_ptr<ReplicaHost> host_ GUARDED_BY(mu_);
  uint64_t epoch_ GUARDED_BY(mu_) = 0;
  CheckpointSchedule schedule_ GUARDED_BY(mu_);
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_PRIMARY_H_
