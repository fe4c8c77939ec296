// The Hypervisor seam (DESIGN.md §3): boot, checkpoint, restore, destroy and
// list replicas, learn when one dies, and reach its service port.
//
// Two backends sit behind it, chosen by OpenHypervisor():
//   - QemuHypervisor (core/vm/src/qemu.cc): one qemu-system-x86_64
//     per VM driven over QMP; KVM when a probe shows it really works, TCG
//     otherwise (with a warning).
//   - XenHypervisor (core/vm/src/xen.cc): libxl + libxenstore in a
//     Xen dom0; PVH guests with live checkpoints where Xen has HVM with
//     hardware-assisted paging, PV (pause-save-resume) otherwise; each
//     guest on a network of its own (replica_network.h).
// Nothing outside core/vm names either one.
//
// Checkpoints are streams. Checkpoint() pushes the VM's saved state (memory
// and device state) to a ByteSink piece by piece, so it can flow straight
// into a MemoryImageWriter (FastCDC + chunk store) without a temp file;
// Restore() pulls the same bytes from a StreamProducer, e.g. one that calls
// ReadMemoryImage(). The stream is a VM stream (vm_stream.h): a header with
// the backend and the machine configuration, the backend's own save stream
// in checksummed blocks, and a trailer with the length and SHA-256 of the
// whole. A restore only resumes the guest after every block and the trailer
// checked out; otherwise the half-restored VM is destroyed and the error
// says what was wrong.
//
// Thread-safety: a Hypervisor may be called from several threads; calls on
// one VM are serialized. The death callback runs on the backend's monitor
// thread and must not call back into the Hypervisor synchronously.
//
// Lifetime: destroying a Hypervisor destroys every VM it started. VM
// processes are also tied to their daemon's life (a killed daemon leaves no
// qemu behind).
#ifndef SLINGSHOT_VM_HYPERVISOR_H_
#define SLINGSHOT_VM_HYPERVISOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/endpoint.h"
#include "slingshot/base/status.h"

namespace slingshot {

// A disk the VM sees, served by an NBD server (the replica's BlockExport).
// QEMU connects to unix_socket; Xen's dom0 kernel client connects to
// host:port (the kernel's NBD client speaks TCP only).
struct NbdDisk {
  std::string unix_socket;
  std::string host;
  uint16_t port = 0;
  std::string export_name;
  bool read_only = false;
};

struct VmSpec {
  // Unique among this Hypervisor's VMs; letters, digits, '-', '_', '.';
  // at most 48 characters (it names files, QEMU ids and Xen domains).
  std::string name;
  std::string kernel;    // path on this host
  std::string initrd;    // optional
  std::string cmdline;
  uint32_t memory_mib = 256;
  uint32_t vcpus = 1;
  std::optional<NbdDisk> disk;
  // Guest TCP ports the host must reach (ServiceEndpoint()). The guest
  // network is 10.0.2.0/24 with the guest at 10.0.2.15.
  std::vector<uint16_t> service_ports;
  // A private directory for this VM's sockets and logs (created if missing;
  // console.log holds the guest's serial console).
  std::string run_dir;
};

enum class VmState { kRunning, kPaused, kDead };
const char* VmStateName(VmState s);

struct VmInfo {
  std::string name;
  VmState state = VmState::kDead;
  std::string detail;  // e.g. "pid 1234", "domid 7", or why it died
};

struct CheckpointStats {
  uint64_t stream_bytes = 0;  // the VM stream, as handed to the sink
  double pause_ms = 0;        // guest stopped (stop .. cont)
  double total_ms = 0;
  bool live = false;          // memory saved while the guest ran
  bool ram_apart = false;     // RAM went to CheckpointHooks::ram, not the stream
  double ram_copy_ms = 0;     // of the pause: copying RAM aside
};

// A guest's RAM as it was at a checkpoint's pause, held by the backend
// until the hook that receives it returns: bytes[i] is guest-physical byte
// i of main memory. Only the extents in data may hold anything but zeros
// (the rest was never written); extents are sorted, disjoint, page-aligned.
struct GuestRam {
  struct Extent {
    uint64_t offset = 0, length = 0;
  };
  ByteView bytes;
  std::vector<Extent> data;
};

// What a checkpoint's caller does at its moments; all are optional.
struct CheckpointHooks {
  // The guest stands still at the instant the checkpoint captures (the
  // start of a QEMU background snapshot, the final pause of a Xen live
  // save, the whole save otherwise). What must be captured at that same
  // instant, e.g. the disk's chunk table, is captured here, quickly: the
  // guest waits. An error abandons the checkpoint (the guest resumes if
  // keep_running) and is returned.
  std::function<Status()> at_pause;
  // With keep_running: the guest runs again, though its memory may still
  // be streaming into the sink (a live checkpoint). Whatever the guest
  // does from now on is after the checkpoint's instant, so inputs may flow
  // to it again. Called once whenever the guest runs again, a failed
  // checkpoint's included (not if it died), on the checkpointing thread,
  // after at_pause; it must not block (hand slow work to another thread).
  std::function<void()> running;
  // RAM apart: with this hook, a backend that keeps guest RAM in memory of
  // its own (QEMU) leaves main memory out of the stream, which then holds
  // device state only, and hands the RAM, copied while the guest stood
  // still, here once the guest runs again (CheckpointStats::ram_apart).
  // The caller stores it (e.g. as a chunk table) and must give it back to
  // Restore (RestoreRam). A backend that cannot (Xen) writes its whole
  // state into the stream as without the hook, and never calls it. An error
  // abandons the checkpoint and is returned.
  std::function<Status(const GuestRam&)> ram;
};

// Main memory for Restore() of a stream whose RAM was kept apart. Exactly
// one of fill and lazy_file is set.
struct RestoreRam {
  uint64_t size = 0;  // bytes; must be the VM's memory size
  // Writes the RAM: calls put with every non-zero range, any order (what
  // it never writes reads as zeros). The guest starts after fill returns.
  using Put = std::function<Status(uint64_t offset, ByteView bytes)>;
  std::function<Status(const Put& put)> fill;
  // Or a file of size bytes whose pages are read on demand as the guest
  // touches them (a FUSE file that fetches chunks): mapped privately, so
  // the guest's own writes stay in its memory and never reach the file.
  std::string lazy_file;
};

struct RestoreStats {
  uint64_t stream_bytes = 0;
  double total_ms = 0;  // from the call to a running guest
};

// The memory the host has for guests: Xen's free memory (what no domain
// holds), or, for QEMU, the kernel's MemAvailable.
struct HostMemory {
  uint64_t total_mib = 0;
  uint64_t free_mib = 0;
};

// MemTotal and MemAvailable of a /proc/meminfo file (Corruption if either
// is missing).
Result<HostMemory> ReadMemInfo(const std::string& path);

using ByteSink = std::function<Status(ByteView)>;
// Produces a whole stream by calling sink with each piece, in order; returns
// the first error (its own or the sink's).
using StreamProducer = std::function<Status(const ByteSink& sink)>;
// Called once per VM that ends without Destroy(): name and reason.
using DeathCallback = std::function<void(const std::string& name, const std::string& why)>;

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  // "qemu-kvm", "qemu-tcg" or "xen".
  virtual std::string Name() const = 0;

  // The kind of VM stream this backend writes and restores ("qemu" for
  // either accelerator, "xen"): a checkpoint restores only on a backend of
  // the same format. A manifest records it.
  virtual std::string StreamFormat() const = 0;

  // Where a disk server for a VM with this run directory must listen so
  // that the backend's NBD client reaches it: a unix socket in run_dir
  // (QEMU), or loopback TCP with port 0 for the server to pick (Xen: the
  // dom0 kernel's NBD client speaks TCP only). The server fills in the port
  // it got and passes the result as VmSpec::disk.
  virtual NbdDisk DiskAddress(const std::string& run_dir) const = 0;

  // Starts a VM. AlreadyExists if the name is taken, InvalidArgument for a
  // bad spec, IOError (with the backend's own words) if it fails to start.
  virtual Status Boot(const VmSpec& spec) = 0;

  // Saves the VM's state as a VM stream into sink. With keep_running the
  // guest resumes afterwards (pause_ms says for how long it stood still);
  // without, it stays paused. If the sink fails, the checkpoint is abandoned,
  // the guest resumes (keep_running) and the sink's error is returned.
  // With keep_running and HypervisorOptions::live_checkpoints, a backend
  // that can saves memory while the guest runs (CheckpointStats::live):
  // QEMU by a background snapshot (the state as of its start, pages
  // write-protected until saved), Xen's PVH guests by log-dirty rounds.
  virtual Result<CheckpointStats> Checkpoint(const std::string& name, const ByteSink& sink,
                                             bool keep_running, const CheckpointHooks& hooks) = 0;
  Result<CheckpointStats> Checkpoint(const std::string& name, const ByteSink& sink, bool keep_running) {
    return Checkpoint(name, sink, keep_running, CheckpointHooks{});
  }

  // Whether Restore() needs the guest's kernel and initrd (VmSpec::kernel,
  // ::initrd). QEMU does not: the kernel lives in the guest's memory by
  // then, and a restore without one gives QEMU's loader a placeholder (a guest
  // that rebooted would find no kernel, and a replica is never rebooted:
  // -no-reboot ends it). Xen's restore wants the domain's boot files.
  virtual bool RestoreNeedsBootFiles() const { return true; }

  // Starts a VM from a VM stream. The spec gives the name, run_dir, disk and
  // service ports (and the boot files if RestoreNeedsBootFiles()); its
  // memory_mib and vcpus must match the stream's (else InvalidArgument). Corruption for a damaged or truncated stream (the
  // half-built VM is destroyed first), Unsupported for another backend's
  // stream or a newer version.
  // A stream whose RAM was kept apart (CheckpointHooks::ram) needs it
  // back as ram (else InvalidArgument); a whole stream ignores ram.
  virtual Result<RestoreStats> Restore(const VmSpec& spec, const StreamProducer& stream,
                                       const RestoreRam* ram) = 0;
  Result<RestoreStats> Restore(const VmSpec& spec, const StreamProducer& stream) {
    return Restore(spec, stream, nullptr);
  }

  // Stops the VM at once and forgets it. NotFound if unknown.
  virtual Status Destroy(const std::string& name) = 0;

  virtual std::vector<VmInfo> List() = 0;
  virtual Result<VmInfo> Info(const std::string& name) = 0;

  // Where the host reaches guest_port (one of spec.service_ports).
  virtual Result<Endpoint> ServiceEndpoint(const std::string& name, uint16_t guest_port) = 0;

  virtual Result<HostMemory> Memory() = 0;

  // Replaces the death callback (see DeathCallback).
  virtual void OnDeath(DeathCallback callback) = 0;
};

struct HypervisorOptions {
  // "auto" (Xen when /proc/xen shows a running Xen, else QEMU), "qemu", "xen".
  std::string backend = "auto";
  // QEMU only: "auto" (KVM if the probe passes, else TCG), "kvm", "tcg".
  std::string accel = "auto";
  std::string qemu_binary = "qemu-system-x86_64";
  // How long the KVM probe may take before KVM is declared unusable.
  int kvm_probe_timeout_ms = 3000;
  // Xen only: "auto" (PVH when Xen offers HVM with hardware-assisted
  // paging, else PV), "pvh" or "pv". A checkpoint restores as the type it
  // was taken of.
  std::string xen_guest_type = "auto";
  // Checkpoints that keep the guest running save its memory while it runs
  // where the backend can (see Checkpoint()); false pauses the guest for
  // the whole save, as a baseline to measure against.
  bool live_checkpoints = true;
  // Xen only: names the guests' networks in dom0 (ReplicaNetworkOptions::
  // prefix). One per program that runs Xen guests in a dom0: what carries
  // it when the backend opens was left by a killed run and is removed.
  std::string network_prefix = "slrep";
};

// Picks and starts a backend; logs which one and why.
Result<std::unique_ptr<Hypervisor>> OpenHypervisor(const HypervisorOptions& options);

// The backends, for callers that must have one in particular.
Result<std::unique_ptr<Hypervisor>> OpenQemuHypervisor(const HypervisorOptions& options);
Result<std::unique_ptr<Hypervisor>> OpenXenHypervisor(const HypervisorOptions& options);

// Whether this kernel runs under Xen as dom0 (the probe's test), and why not.
bool XenIsRunning(std::string* why);

// Runs a tiny boot sector under QEMU with KVM and checks that it finishes
// within timeout_ms. Returns OK, or why KVM is not usable.
Status ProbeKvm(const std::string& qemu_binary, int timeout_ms);

}  // namespace slingshot

#endif  // SLINGSHOT_VM_HYPERVISOR_H_
