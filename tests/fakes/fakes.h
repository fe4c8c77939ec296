// Fakes of the engine's seams, for unit tests that need neither root nor
// QEMU (docs/testing.md): a Hypervisor whose VMs live in memory, and a
// ServiceAdapter (service type "fake") that talks to the guest inside one.
//
// A FakeGuest is the inside of a fake VM: the inputs its service has
// applied, in order, and a block of pseudo-random "memory". A checkpoint
// streams both (a sealed frame, then the memory in pieces), so a restore
// elsewhere has exactly the state the original had; tests compare
// FakeGuest::Digest() across replicas. Scripted faults: a death
// (FakeHypervisor::Kill), a failed boot, restore or checkpoint, a service
// that answers nothing (FakeGuest::Refuse) or that holds its consumption
// back (FakeGuest::Hold).
//
// Thread-safe. The fakes find each other through a process-wide directory
// of guests keyed by service endpoint.
#ifndef SLINGSHOT_TESTS_FAKES_FAKES_H_
#define SLINGSHOT_TESTS_FAKES_FAKES_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "slingshot/base/mutex.h"
#include "slingshot/service/service_adapter.h"
#include "slingshot/vm/hypervisor.h"

namespace slingshot::fake {

// The type name manifests use for the fake service.
inline constexpr const char kServiceType[] = "fake";
// Registers the fake service type (once; later calls do nothing).
void RegisterFakeService();

class FakeGuest {
 public:
  explicit FakeGuest(size_t memory_bytes, uint64_t seed);

  // The service's state: every input applied, and the memory.
  std::vector<std::pair<uint64_t, Bytes>> inputs() const;
  uint64_t last_seq() const;
  ChunkId Digest() const;  // over inputs and memory

  // The service refuses connections (a guest still booting, or broken).
  void Refuse(bool refuse);
  bool refusing() const;
  bool restored() const;  // made by Restore, not Boot
  // Inputs are applied but not reported consumed until Hold(false).
  void Hold(bool hold);
  // Every open adapter to this guest loses its connection (on_lost).
  void DropConnections(const Status& why);

  // For the adapter.
  Status Apply(uint64_t seq, ByteView payload);
  bool held() const;
  using LossFn = std::function<void(const Status&)>;
  void Watch(std::weak_ptr<LossFn> on_lost);
  // For the hypervisor. Without with_memory, the memory is left out of the
  // saved state (it travels apart: Memory(), SetMemory()).
  Bytes Save(bool with_memory = true) const;
  static Result<std::shared_ptr<FakeGuest>> Load(ByteView saved);
  Bytes Memory() const;
  void SetMemory(Bytes memory);
  void SetInputs(std::vector<std::pair<uint64_t, Bytes>> inputs);

 private:
  mutable Mutex mu_;
  std::vector<std::pair<uint64_t, Bytes>> inputs_ GUARDED_BY(mu_);
  Bytes memory_ GUARDED_BY(mu_);
  bool refuse_ GUARDED_BY(mu_) = false;
  bool hold_ GUARDED_BY(mu_) = false;
  bool restored_ GUARDED_BY(mu_) = false;
  std::vector<std::weak_ptr<LossFn>> watchers_ GUARDED_BY(mu_);
};

// The guest behind a service endpoint, if a fake VM serves it.
std::shared_ptr<FakeGuest> GuestAt(const Endpoint& ep);

struct FakeHypervisorOptions {
  std::string stream_format = "fake";
  bool disks_over_tcp = false;  // DiskAddress as Xen's (TCP) rather than QEMU's (unix)
  size_t guest_memory_bytes = 256 << 10;
  size_t stream_piece = 16 << 10;  // bytes per sink call
  uint64_t memory_mib = 4096;      // the host's: Memory() is this less what running VMs hold
  // Checkpoints as QEMU's background snapshot: the state is taken at the
  // pause and the guest runs again before the stream is written.
  bool live_checkpoints = false;
  // Called before each piece of a checkpoint's stream goes to the sink
  // (0, 1, ...): a test acts while memory streams. An error abandons it.
  std::function<Status(size_t piece)> on_piece = nullptr;
  // Checkpoints given a CheckpointHooks::ram keep the guest's memory apart
  // (as QEMU does): its RAM is the memory, guest_memory_bytes long.
  bool ram_apart = false;
};

class FakeHypervisor final : public Hypervisor {
 public:
  explicit FakeHypervisor(FakeHypervisorOptions options = {});
  ~FakeHypervisor() override;

  std::string Name() const override { return "fake-" + options_.stream_format; }
  std::string StreamFormat() const override { return options_.stream_format; }
  NbdDisk DiskAddress(const std::string& run_dir) const override;
  Status Boot(const VmSpec& spec) override;
  using Hypervisor::Checkpoint;
  using Hypervisor::Restore;
  Result<CheckpointStats> Checkpoint(const std::string& name, const ByteSink& sink, bool keep_running,
                                     const CheckpointHooks& hooks) override;
  Result<RestoreStats> Restore(const VmSpec& spec, const StreamProducer& stream, const RestoreRam* ram) override;
  Status Destroy(const std::string& name) override;
  std::vector<VmInfo> List() override;
  Result<VmInfo> Info(const std::string& name) override;
  Result<Endpoint> ServiceEndpoint(const std::string& name, uint16_t guest_port) override;
  Result<HostMemory> Memory() override;
  void OnDeath(DeathCallback callback) override;

  // --- test controls ---
  // The VM dies: it is forgotten and the death callback runs (on this thread).
  void Kill(const std::string& name, const std::string& why);
  // The next call of that kind fails with st (then they work again).
  void FailNextBoot(Status st);
  void FailNextRestore(Status st);
  void FailNextCheckpoint(Status st);
  // The next VM started refuses its service connections.
  void RefuseNextService();
  std::shared_ptr<FakeGuest> Guest(const std::string& name);
  std::optional<VmSpec> SpecOf(const std::string& name);
  int boots() const;
  int restores() const;
  // Bytes of stream the last Restore read before it started the guest.
  uint64_t last_restore_bytes() const;

 private:
  struct Vm {
    VmSpec spec;
    std::shared_ptr<FakeGuest> guest;
    std::map<uint16_t, Endpoint> ports;
  };
  Status Start(const VmSpec& spec, std::shared_ptr<FakeGuest> guest) REQUIRES(mu_);

  const FakeHypervisorOptions options_;
  mutable Mutex mu_;
  std::map<std::string, Vm> vms_ GUARDED_BY(mu_);
  DeathCallback on_death_ GUARDED_BY(mu_);
  std::optional<Status> fail_boot_ GUARDED_BY(mu_), fail_restore_ GUARDED_BY(mu_), fail_checkpoint_ GUARDED_BY(mu_);
  bool refuse_next_ GUARDED_BY(mu_) = false;
  int boots_ GUARDED_BY(mu_) = 0;
  int restores_ GUARDED_BY(mu_) = 0;
  uint64_t last_restore_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t seed_ GUARDED_BY(mu_) = 1;
};

}  // namespace slingshot::fake

#endif  // SLINGSHOT_TESTS_FAKES_FAKES_H_
