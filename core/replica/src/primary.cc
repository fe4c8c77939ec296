#include "slingshot/replica/primary.h"

#include "slingshot/base/coding.h"
#include "slingshot/base/log.h"

namespace slingshot {
namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

Primary::Primary(Hypervisor& hv, PrimaryOptions options)
    : hv_(hv), options_(std::move(options)), schedule_(options_.checkpoint_inputs, options_.checkpoint_interval) {}

Primary::~Primary() { TearDown(); }

bool Primary::up() const {
  MutexLock l(&mu_);
  return live_ != nullptr && !dead_;
}

std::shared_ptr<ReplicaHost> Primary::host() const {
  MutexLock l(&mu_);
  return host_;
}

uint64_t Primary::epoch() const {
  MutexLock l(&mu_);
  return epoch_;
}

Status Primary::BringUp() {
  MutexLock l(&mu_);
  return BringUpLocked();
}

Status Primary::BringUpLocked() {
  if (live_ && !dead_) return Status::OK();
  if (live_) {
    LogWarning("service " + name() + ": its VM or service was lost; restoring it from the last checkpoint");
    TearDownLocked();
  }
  dead_ = false;
  Status st = StartLocked();
  if (!st.ok()) TearDownLocked();
  return st;
}

Status Primary::StartLocked() {
  auto ref = options_.store->GetRef("manifest/" + name());
  if (!ref.ok() && !ref.status().IsNotFound()) return ref.status();
  Primary* self = this;
  auto on_lost = [self](const Status& why) {
    LogWarning("service " + self->name() + ": its service connection was lost (" + why.message() + ")");
    self->MarkDead();
  };
  if (ref.ok()) {
    StoreCheckpointSource source(options_.store);
    InstantiateOptions o;
    o.service = name();
    o.manifest_key = options_.key->public_key();
    o.vm_name = name();
    o.dir = options_.run_dir;
    o.label = "home";
    o.extra_ports = options_.extra_ports;
    o.restore_connect_ms = options_.restore_connect_ms;
    o.boot_connect_ms = options_.boot_timeout_ms;
    o.on_lost = on_lost;
    SLINGSHOT_ASSIGN_OR_RETURN(live_, Instantiate(hv_, source, o));
    const Manifest& m = live_->manifest();
    epoch_ = m.epoch;
    LogInfo("service " + name() + ": " + (live_->booted() ? "booted" : "restored") + " from checkpoint epoch " +
            std::to_string(m.epoch) + " (seq " + std::to_string(m.last_seq) + ") in " +
            std::to_string(static_cast<int>(live_->restore_ms())) + " ms");
  } else {
    if (!options_.first_disk) return Status::InvalidArgument("service " + name() + " has no checkpoint and no disk");
    ReplicaPlan plan;
    plan.spec.name = name();
    plan.spec.kernel = options_.kernel;
    plan.spec.initrd = options_.initrd;
    plan.spec.cmdline = options_.base.vm.kernel_cmdline;
    plan.spec.memory_mib = options_.base.vm.memory_mib;
    plan.spec.vcpus = options_.base.vm.vcpus;
    plan.spec.run_dir = options_.run_dir + "/vm";
    plan.manifest = options_.base;
    plan.manifest.epoch = 0;
    plan.manifest.last_seq = 0;
    plan.label = "home";
    SLINGSHOT_ASSIGN_OR_RETURN(plan.table, options_.first_disk());
    plan.chunks = options_.store;
    plan.disk.dir = options_.run_dir + "/disk";
    plan.disk.description = name();
    plan.extra_ports = options_.extra_ports;
    plan.connect_timeout_ms = options_.boot_timeout_ms;
    plan.on_lost = on_lost;
    SLINGSHOT_ASSIGN_OR_RETURN(live_, StartReplica(hv_, std::move(plan)));
    epoch_ = 0;
  }
  host_ = live_->host();
  schedule_ = CheckpointSchedule(options_.checkpoint_inputs, options_.checkpoint_interval);
  schedule_.Taken(live_->manifest().last_seq, Clock::now());
  if (options_.on_up) options_.on_up(*live_);
  if (epoch_ == 0) {
    LogInfo("service " + name() + ": booted; taking its first checkpoint");
    SLINGSHOT_RETURN_IF_ERROR(CheckpointLocked().status());
  }
  return Status::OK();
}

Result<CheckpointResult> Primary::CheckpointNow() {
  MutexLock l(&mu_);
  if (!live_ || dead_) return Status::Unavailable("service " + name() + " is not running");
  return CheckpointLocked();
}

Result<CheckpointResult> Primary::CheckpointLocked() {
  CheckpointOptions o;
  o.store = options_.store;
  o.key = options_.key;
  o.base = options_.base;
  o.base.epoch = epoch_;
  auto r = TakeCheckpoint(hv_, *live_, o);
  if (!r.ok()) {
    schedule_.Failed(Clock::now());  // not again at once (CheckpointSchedule)
    return r.status().Annotate("service " + name() + ": checkpoint failed (" +
                               std::to_string(schedule_.failures()) +
                               " in a row; the last published one stays, and the next try waits)");
  }
  epoch_ = r->manifest.epoch;
  schedule_.Taken(r->manifest.last_seq, Clock::now());
  LogInfo("service " + name() + ": checkpoint epoch " + std::to_string(r->manifest.epoch) + " covers seq " +
          std::to_string(r->manifest.last_seq) + " (" + HumanBytes(r->manifest.memory_size) + " memory" + (r->live ? " saved live" : "") + ", guest paused " +
          std::to_string(static_cast<int>(r->pause_ms)) + " ms, " + std::to_string(static_cast<int>(r->total_ms)) +
          " ms in all)");
  if (options_.on_checkpoint) options_.on_checkpoint(*r);
  return r;
}

Status Primary::Step(std::chrono::steady_clock::time_point now) {
  MutexLock l(&mu_);
  if (!live_ || dead_) return BringUpLocked();
  if (schedule_.Due(host_->applied(), now)) return CheckpointLocked().status();
  return Status::OK();
}

void Primary::TearDown() {
  MutexLock l(&mu_);
  TearDownLocked();
}

void Primary::TearDownLocked() {
  if (live_) live_->Destroy();
  else (void)hv_.Destroy(name());  // a VM a failed bring-up may have left
  live_.reset();
  host_.reset();
}

}  // namespace slingshot
