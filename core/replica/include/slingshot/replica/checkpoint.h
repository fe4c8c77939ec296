// Checkpoint: the home's checkpoint of its primary (DESIGN.md §5
// "Checkpoint"), and when one is due.
//
//   barrier (ReplicaHost::Quiesce: every input sent has been consumed, the
//   service connections closed cleanly) -> the guest stands still and the
//   disk's chunk table is taken (ChunkTableExport::BeginFreeze) -> the
//   VM's save streams into the chunker (no temp file) -> resume (inputs
//   flow again) as soon as the guest runs: at once for a live checkpoint,
//   whose memory streams on as it was at the pause, else after the save;
//   where the backend keeps RAM apart (QEMU), the stream is device state
//   and RAM, copied aside in the pause, is stored after it as a table of
//   64 KiB chunks by offset (the manifest's ram_table) ->
//   the disk's new chunks stored (FinishFreeze) -> the memory list, table
//   and working set stored -> the manifest signed and published as ref
//   manifest/SERVICE -> Checkpointed{epoch, seq} to the attached client,
//   whose proxy truncates its log up to seq.
// A checkpoint that fails leaves the last published one as it was.
#ifndef SLINGSHOT_REPLICA_CHECKPOINT_H_
#define SLINGSHOT_REPLICA_CHECKPOINT_H_

#include <chrono>
#include <cstdint>

#include "slingshot/base/keys.h"
#include "slingshot/replica/instantiate.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/store/chunk_writer.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/manifest.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot {

struct CheckpointResult {
  Manifest manifest;  // as published
  ChunkId manifest_id;
  double pause_ms = 0;  // the guest stood still
  double ram_copy_ms = 0;  // of the pause: RAM copied aside
  double total_ms = 0;
  bool live = false;    // its memory was saved while the guest ran
  bool ram_apart = false;  // RAM stored as the manifest's ram_table
  IngestStats ram;      // the RAM table's chunks (if ram_apart)
};

struct CheckpointOptions {
  ChunkStore* store = nullptr;  // transactional: the home's
  const SigningKey* key = nullptr;
  // What does not change between checkpoints: the service id, type, port,
  // VM configuration (backend excepted), boot files and state_on_disk. The
  // new manifest takes its epoch + 1.
  Manifest base;
  int quiesce_ms = 30000;
  int resume_ms = 30000;
  int64_t now_ns = 0;  // the manifest's creation time; 0: the clock
};

// Checkpoints replica and publishes the manifest.
Result<CheckpointResult> TakeCheckpoint(Hypervisor& hv, LiveReplica& replica, const CheckpointOptions& options);

// Stores RAM a backend kept apart (CheckpointHooks::ram) as a table of
// kRamChunkSize chunks by offset (larger for a guest over 4 GiB, so that
// the table stays one object); chunks outside the extents ever written
// are zero without a look. The table itself is not stored.
Result<DiskImport> ImportGuestRam(const GuestRam& ram, ChunkStore* store);

// When a checkpoint is due: every `inputs` inputs, or `seconds` after the
// last one if any input came since.
class CheckpointSchedule {
 public:
  using Clock = std::chrono::steady_clock;
  // A checkpoint that failed is not tried again for 5 s, then 10, 20, ...
  // up to this long: a full disk is not answered with a retry storm (each
  // try pauses the guest and streams its memory).
  static constexpr std::chrono::seconds kMaxBackoff{300};

  CheckpointSchedule(uint64_t inputs, std::chrono::seconds seconds) : inputs_(inputs), seconds_(seconds) {}
  // A checkpoint covering seq was taken at now.
  void Taken(uint64_t covered, Clock::time_point now) {
    covered_ = covered;
    at_ = now;
    failures_ = 0;
  }
  // A checkpoint failed at now: the next waits out the backoff, then goes
  // by the usual rule.
  void Failed(Clock::time_point now) {
    ++failures_;
    auto wait = std::chrono::seconds(5) * (1u << std::min<uint32_t>(failures_ - 1, 6));
    retry_at_ = now + std::min<std::chrono::seconds>(wait, kMaxBackoff);
  }
  bool Due(uint64_t applied, Clock::time_point now) const {
    if (applied <= covered_) return false;
    if (failures_ > 0 && now < retry_at_) return false;
    return applied >= covered_ + inputs_ || now - at_ >= seconds_;
  }
  uint64_t covered() const { return covered_; }
  uint32_t failures() const { return failures_; }

 private:
  uint64_t inputs_;
  std::chrono::seconds seconds_;
  uint64_t covered_ = 0;
  Clock::time_point at_ = Clock::now();
  uint32_t failures_ = 0;
  Clock::time_point retry_at_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_REPLICA_CHECKPOINT_H_
