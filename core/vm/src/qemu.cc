// QemuHypervisor: one qemu-system-x86_64 per VM, driven over QMP.
//
// Guest RAM is a file QEMU maps (memory-backend-file): a memfd of ours,
// shared, handed over as QEMU's fd 3; or, for a lazy restore, the caller's
// file (a LazyImage), mapped private, with QEMU under a seccomp filter that
// fails MADV_HUGEPAGE (else the kernel reads megabytes around each fault).
//
// Checkpoint with the caller's ram hook (RAM apart, decisions/0014): the
// copy's buffer is written while the guest runs; then stop, at_pause,
// migrate with x-ignore-shared (device state only) while RAM's written
// extents are copied aside; cont once both are done; the hook gets the
// copy. Restore of such a stream: QEMU starts at once, before the stream's
// first bytes have come, while the memfd is filled (or with the lazy file
// mapped), then the device state loads with x-ignore-shared on. A restore
// may leave out the boot files: QEMU's loader then gets a placeholder
// kernel.
//
// Checkpoint without a ram hook: stop, the caller's at_pause hook, then migrate to an fd
// handed over with getfd (one end of a socketpair whose other end we read).
// Live (keep_running, HypervisorOptions::live_checkpoints, and a QEMU and
// kernel that can write-protect guest RAM with userfaultfd): the migration
// is a background snapshot, which saves the device state, write-protects
// RAM and starts the guest again, then streams RAM as it was at the stop
// (a page the guest writes is saved first); the running hook fires as soon
// as the guest runs. We stop the guest ourselves first, so that at_pause
// (the home takes the disk's table there) sees the same instant as the
// memory: QEMU's own stop comes only after it has prepared the
// write-protection (a read of every page of RAM: tens to a couple of
// hundred milliseconds for 128 MiB under TCG), and the guest might write
// its disk meanwhile. That preparation is then part of the pause.
// Otherwise the guest stays stopped for the whole save and is continued
// after it. Restore: start QEMU with
// -incoming defer -S, hand it the read end of a socketpair, migrate-incoming
// from it, write the checked payload in, and cont only once QEMU reports the
// load finished and the VM stream's trailer matched.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "child.h"
#include "qmp.h"
#include "vm_registry.h"
#include "slingshot/vm/hypervisor.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/vm/vm_stream.h"

namespace slingshot {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The last lines of a log file, for error messages.
std::string Tail(const std::string& path, size_t max_bytes = 600) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff from = size > static_cast<std::streamoff>(max_bytes) ? size - max_bytes : 0;
  in.seekg(from);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

Result<uint16_t> FreeTcpPort() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (!fd.valid() || bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return Status::FromErrno("finding a free TCP port", errno);
  }
  return ntohs(a.sin_port);
}

// A private, page-aligned mapping, unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* p, size_t n) : p_(static_cast<uint8_t*>(p)), n_(n) {}
  Mapping(Mapping&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      Reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~Mapping() { Reset(); }
  void Reset() {
    if (p_) munmap(p_, n_);
    p_ = nullptr;
    n_ = 0;
  }
  uint8_t* data() const { return p_; }
  size_t size() const { return n_; }
  bool valid() const { return p_ != nullptr; }

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

// The extents of fd (of size bytes) that hold data, by SEEK_DATA/SEEK_HOLE:
// a tmpfs file's holes are pages never written.
Result<std::vector<GuestRam::Extent>> DataExtents(int fd, uint64_t size) {
  std::vector<GuestRam::Extent> out;
  off_t pos = 0;
  while (static_cast<uint64_t>(pos) < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;
    if (data < 0) return Status::FromErrno("finding guest RAM's data (SEEK_DATA)", errno);
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return Status::FromErrno("finding guest RAM's holes (SEEK_HOLE)", errno);
    uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    if (end > static_cast<uint64_t>(data)) out.push_back({static_cast<uint64_t>(data), end - data});
    pos = hole;
  }
  return out;
}

// Maps the pages of extents in m (a view of pages that exist) ahead of a
// copy that must be quick (MADV_POPULATE_READ, Linux 5.14; without it the
// copy maps them itself).
void Populate(const Mapping& m, const std::vector<GuestRam::Extent>& extents) {
#ifdef MADV_POPULATE_READ
  for (const auto& e : extents) {
    if (madvise(m.data() + e.offset, e.length, MADV_POPULATE_READ) != 0) return;
  }
#else
  (void)m, (void)extents;
#endif
}

// A kernel image that QEMU's x86 loader takes (a boot protocol 2.15
// header, one setup sector, a few bytes of "kernel") for a restore made
// without the guest's boot files: the guest never runs it, its kernel is
// in the restored RAM; QEMU only needs one to set up the same option ROM.
Status WritePlaceholderKernel(const std::string& path) {
  Bytes k(4096, 0);
  k[0x1f1] = 1;                       // setup_sects
  k[0x1fe] = 0x55, k[0x1ff] = 0xaa;   // boot_flag
  std::memcpy(&k[0x202], "HdrS", 4);  // header magic
  k[0x206] = 0x0f, k[0x207] = 0x02;   // version 2.15
  k[0x211] = 0x01;                    // loadflags: LOADED_HIGH
  k[0x22c] = 0xff, k[0x22d] = 0xff, k[0x22e] = 0xff, k[0x22f] = 0x7f;  // initrd_addr_max
  k[0x238] = 0x00, k[0x239] = 0x08;   // cmdline_size 2048
  return WriteFileAtomic(path, k);
}

// restore: the kernel may be left out (RestoreNeedsBootFiles()).
Status ValidateSpec(const VmSpec& s, bool restore) {
  SLINGSHOT_RETURN_IF_ERROR(ValidateVmName(s.name));
  if (restore && s.kernel.empty()) {
    if (!s.initrd.empty()) return Status::InvalidArgument("VM " + s.name + ": an initrd without its kernel");
  } else if (s.kernel.empty() || access(s.kernel.c_str(), R_OK) != 0) {
    return Status::InvalidArgument("VM " + s.name + ": kernel '" + s.kernel + "' is not readable");
  }
  if (!s.initrd.empty() && access(s.initrd.c_str(), R_OK) != 0) {
    return Status::InvalidArgument("VM " + s.name + ": initrd '" + s.initrd + "' is not readable");
  }
  if (s.memory_mib < 32 || s.memory_mib > (1u << 20)) {
    return Status::InvalidArgument("VM " + s.name + ": memory_mib must be 32..1048576");
  }
  if (s.vcpus < 1 || s.vcpus > 64) return Status::InvalidArgument("VM " + s.name + ": vcpus must be 1..64");
  if (s.run_dir.empty()) return Status::InvalidArgument("VM " + s.name + ": run_dir is required");
  if (s.disk && s.disk->unix_socket.empty()) {
    return Status::InvalidArgument("VM " + s.name + ": QEMU attaches NBD disks by unix socket; "
                                   "disk.unix_socket is empty");
  }
  return Status::OK();
}

struct Vm {
  VmSpec spec;
  std::string log_path;
  Mutex op_mu;  // serializes operations on this VM
  std::unique_ptr<QmpClient> qmp GUARDED_BY(op_mu);
  std::map<uint16_t, uint16_t> ports;  // guest port -> host port; fixed after start
  // The background-snapshot capability as last set (unset: never), and
  // whether QEMU refused it (then every checkpoint pauses the guest).
  std::optional<bool> background GUARDED_BY(op_mu);
  bool background_refused GUARDED_BY(op_mu) = false;
  std::optional<bool> ignore_shared GUARDED_BY(op_mu);  // x-ignore-shared, as last set
  // Guest RAM: a memfd QEMU maps shared (ram_fd, with our read-only view
  // ram_view), or a file QEMU maps privately and reads on demand
  // (lazy_ram). shadow receives RAM's copy at a checkpoint's pause.
  UniqueFd ram_fd GUARDED_BY(op_mu);
  Mapping ram_view GUARDED_BY(op_mu);
  std::string lazy_ram GUARDED_BY(op_mu);
  Mapping shadow GUARDED_BY(op_mu);

  Mutex state_mu;  // child and state; held briefly, also by the monitor
  std::unique_ptr<Child> child GUARDED_BY(state_mu);
  VmState state GUARDED_BY(state_mu) = VmState::kRunning;
  std::string death GUARDED_BY(state_mu);
  bool destroying GUARDED_BY(state_mu) = false;

  bool Alive() {
    MutexLock l(&state_mu);
    std::string how;
    return child && !child->Poll(&how);
  }
  // Why QEMU is gone, with its last words.
  std::string Obituary() {
    std::string how;
    {
      MutexLock l(&state_mu);
      if (child) child->Poll(&how);
    }
    std::string tail = Tail(log_path);
    return "qemu " + (how.empty() ? std::string("failed") : how) +
           (tail.empty() ? "" : "; its log ends: " + tail);
  }
};

class QemuHypervisor final : public Hypervisor {
 public:
  QemuHypervisor(std::string qemu, bool kvm, bool live) : qemu_(std::move(qemu)), kvm_(kvm), live_(live) {
    wake_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    monitor_ = std::thread([this] { Monitor(); });
  }

  ~QemuHypervisor() override {
    for (auto& vm : vms_.Close()) Kill(vm.get());
    Wake();
    monitor_.join();
  }

  using Hypervisor::Checkpoint;
  using Hypervisor::Restore;
  std::string Name() const override { return kvm_ ? "qemu-kvm" : "qemu-tcg"; }
  std::string StreamFormat() const override { return "qemu"; }
  bool RestoreNeedsBootFiles() const override { return false; }
  NbdDisk DiskAddress(const std::string& run_dir) const override {
    return NbdDisk{run_dir + "/disk.sock", "", 0, "disk", false};
  }

  Status Boot(const VmSpec& spec) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<Vm> vm, Reserve(spec, /*restore=*/false));
    MutexLock op(&vm->op_mu);
    Status s = Start(vm.get(), /*incoming=*/false);
    if (!s.ok()) {
      vms_.Forget(vm);
      return s;
    }
    LogInfo("VM " + spec.name + " booted (" + Name() + ")");
    return Status::OK();
  }

  Result<CheckpointStats> Checkpoint(const std::string& name, const ByteSink& sink, bool keep_running,
                                     const CheckpointHooks& hooks) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<Vm> vm, vms_.Find(name));
    MutexLock op(&vm->op_mu);
    if (!vm->Alive()) return Status::IOError("VM " + name + " is dead: " + vm->Obituary());
    CheckpointStats stats;
    auto t0 = Clock::now();
    // RAM apart: the stream takes device state only (x-ignore-shared skips
    // the memfd), and RAM is copied aside while the guest stands still.
    const bool apart = hooks.ram && live_ && vm->ram_view.valid();
    SLINGSHOT_RETURN_IF_ERROR(PrepareRamApart(vm.get(), apart));
    VmStreamWriter writer(sink);
    SLINGSHOT_RETURN_IF_ERROR(writer.Begin(Header(vm->spec, apart)));

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return Status::FromErrno("socketpair", errno);
    }
    UniqueFd ours(sv[0]), theirs(sv[1]);
    auto pause_start = Clock::now();
    SLINGSHOT_RETURN_IF_ERROR(Qmp(vm.get(), "stop").status());
    SetState(vm.get(), VmState::kPaused);
    Status s = hooks.at_pause ? hooks.at_pause() : Status::OK();
    const bool live = s.ok() && !apart && keep_running && live_ && UseBackgroundSnapshot(vm.get(), true);
    if (s.ok() && !live && vm->background.value_or(false)) UseBackgroundSnapshot(vm.get(), false);
    if (s.ok()) s = Qmp(vm.get(), "getfd", {{"fdname", "slingshot-ckpt"}}, theirs.get()).status();
    theirs.Reset();
    if (s.ok()) s = Qmp(vm.get(), "migrate", {{"uri", "fd:slingshot-ckpt"}}).status();
    // The guest runs again: at once for a background snapshot (QEMU starts
    // it once RAM is write-protected), after the save otherwise.
    std::optional<Clock::time_point> running_at;
    auto ran = [&] {
      running_at = Clock::now();
      SetState(vm.get(), VmState::kRunning);
      if (hooks.running) hooks.running();
    };
    Status sink_status, ram_status;
    std::vector<GuestRam::Extent> extents;
    if (s.ok()) {
      // The stream is read on a thread of its own that never waits for
      // QMP: during a background snapshot QEMU's main loop may itself wait
      // for a write-protected page, which the migration thread saves only
      // as fast as we read (so a QMP call made by the reader could wait on
      // its own reading).
      std::atomic<bool> stream_done{false}, abandon{false};
      Status read_status;
      std::thread reader([&] {
        std::vector<uint8_t> buf(256 << 10);
        for (;;) {
          pollfd p{ours.get(), POLLIN, 0};
          int r = poll(&p, 1, 1000);
          if (r < 0 && errno == EINTR) continue;
          if (r == 0) {
            if (!vm->Alive()) {
              read_status = Status::IOError("VM " + name + " died during checkpoint: " + vm->Obituary());
              break;
            }
            if (abandon) {
              read_status = Status::IOError("QEMU's save stream did not end");
              break;
            }
            continue;
          }
          ssize_t n = recv(ours.get(), buf.data(), buf.size(), 0);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) {
            read_status = Status::FromErrno("reading QEMU's save stream", errno);
            break;
          }
          if (n == 0) break;
          // A failed sink abandons the checkpoint. A background snapshot is
          // still read to its end (and dropped): QEMU's own failure path
          // would leave guest pages write-protected, the guest hung on them.
          if (!sink_status.ok()) continue;
          sink_status = writer.Write(ByteView(buf.data(), static_cast<size_t>(n)));
          if (!sink_status.ok() && !live) break;
        }
        ours.Reset();  // if we stopped early, QEMU's writes now fail
        stream_done = true;
      });
      // Meanwhile: RAM's copy (apart), when the guest runs again (live),
      // and when QEMU is done.
      if (apart) ram_status = CopyRamAside(vm.get(), &extents, &stats.ram_copy_ms);
      while (live && !running_at && !stream_done) {
        auto st = Qmp(vm.get(), "query-status");
        if (!st.ok()) break;
        if (st->value("status", "") == "running") {
          ran();
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      Status m = WaitOutgoing(vm.get());
      if (!m.ok()) abandon = true;
      reader.join();
      s = read_status;
      if (s.ok() && sink_status.ok()) s = m;
    }
    if (s.ok() && sink_status.ok()) sink_status = writer.Finish();
    if (keep_running && vm->Alive() && !running_at) {
      // A save that ended (or failed) before we saw the guest run: start it
      // if it stands still.
      auto st = Qmp(vm.get(), "query-status");
      Status c = st.ok() && st->value("status", "") == "running" ? Status::OK() : Qmp(vm.get(), "cont").status();
      if (c.ok()) ran();
      if (s.ok()) s = c;
    }
    stats.pause_ms = std::chrono::duration<double, std::milli>(running_at.value_or(Clock::now()) - pause_start).count();
    if (s.ok() && sink_status.ok()) sink_status = ram_status;
    if (apart && s.ok() && sink_status.ok()) {
      sink_status = hooks.ram(GuestRam{ByteView(vm->shadow.data(), vm->shadow.size()), extents});
    }
    // The copy's memory is the host's again until the next checkpoint.
    if (vm->shadow.valid()) madvise(vm->shadow.data(), vm->shadow.size(), MADV_DONTNEED);
    stats.total_ms = MsSince(t0);
    stats.live = live || apart;
    stats.ram_apart = apart;
    stats.stream_bytes = writer.bytes_written();
    if (!sink_status.ok()) return sink_status.Annotate("checkpoint of " + name + " abandoned");
    if (!s.ok()) return s.Annotate("checkpoint of " + name);
    return stats;
  }

  Result<RestoreStats> Restore(const VmSpec& spec, const StreamProducer& stream, const RestoreRam* ram) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<Vm> vm, Reserve(spec, /*restore=*/true));
    MutexLock op(&vm->op_mu);
    auto t0 = Clock::now();
    UniqueFd ours;
    bool started = false;
    // RAM given apart (on demand, or filled while QEMU starts): QEMU starts
    // at once, while the stream's first bytes are still on their way; the
    // header must then say its RAM is apart.
    std::future<Status> filled;
    Status early;
    if (ram) {
      early = TakeRam(vm.get(), ram, &filled);
      if (early.ok()) {
        early = Start(vm.get(), /*incoming=*/true);
        started = early.ok();
      }
    }
    VmStreamReader reader(
        [&](const VmStreamHeader& h) -> Status {
          vm->op_mu.AssertHeld();  // called from stream() below, under op
          SLINGSHOT_RETURN_IF_ERROR(CheckHeader(h, spec));
          const bool apart = json::parse(h.config, nullptr, false).value("ram", "") == "apart";
          if (ram && !apart) {
            return Status::InvalidArgument("the restore was given the guest's RAM apart, but this checkpoint's "
                                           "stream holds its RAM");
          }
          if (!ram) {
            if (apart) return TakeRam(vm.get(), nullptr, &filled);  // fails, saying the RAM is missing
            Status up = Start(vm.get(), /*incoming=*/true);
            started = up.ok();
            SLINGSHOT_RETURN_IF_ERROR(up);
          }
          SLINGSHOT_RETURN_IF_ERROR(early);
          Status fill = filled.valid() ? filled.get() : Status::OK();
          SLINGSHOT_RETURN_IF_ERROR(fill.Annotate("filling the guest's RAM"));
          SLINGSHOT_RETURN_IF_ERROR(SetIgnoreShared(vm.get(), apart));
          int sv[2];
          if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            return Status::FromErrno("socketpair", errno);
          }
          ours.Reset(sv[0]);
          UniqueFd theirs(sv[1]);
          SLINGSHOT_RETURN_IF_ERROR(
              Qmp(vm.get(), "getfd", {{"fdname", "slingshot-rst"}}, theirs.get()).status());
          return Qmp(vm.get(), "migrate-incoming", {{"uri", "fd:slingshot-rst"}}).status();
        },
        [&](ByteView b) -> Status { return SendAll(vm.get(), ours.get(), b); });
    Status s = early.ok() ? stream([&](ByteView b) { return reader.Feed(b); }) : early;
    if (s.ok()) s = reader.Finish();
    // A fill still running (the stream failed before the header) is waited
    // for: it writes into the VM's RAM.
    if (filled.valid()) (void)filled.get();
    if (s.ok()) {
      shutdown(ours.get(), SHUT_WR);
      s = WaitIncoming(vm.get());
      ours.Reset();
    }
    if (s.ok()) s = Qmp(vm.get(), "cont").status();
    if (!s.ok()) {
      if (started) Kill(vm.get());
      vms_.Forget(vm);
      return s.Annotate("restore of " + spec.name);
    }
    SetState(vm.get(), VmState::kRunning);
    RestoreStats stats;
    stats.stream_bytes = reader.bytes_read();
    stats.total_ms = MsSince(t0);
    LogInfo("VM " + spec.name + " restored (" + HumanBytes(stats.stream_bytes) + ")");
    return stats;
  }

  Status Destroy(const std::string& name) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<Vm> vm, vms_.Remove(name));
    MutexLock op(&vm->op_mu);
    Kill(vm.get());
    vm->qmp.reset();
    unlink((vm->spec.run_dir + "/qmp.sock").c_str());
    Wake();
    return Status::OK();
  }

  std::vector<VmInfo> List() override {
    std::vector<VmInfo> out;
    for (auto& vm : vms_.All()) out.push_back(InfoOf(vm.get()));
    return out;
  }

  Result<VmInfo> Info(const std::string& name) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<Vm> vm, vms_.Find(name));
    return InfoOf(vm.get());
  }

  Result<Endpoint> ServiceEndpoint(const std::string& name, uint16_t guest_port) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<Vm> vm, vms_.Find(name));
    auto it = vm->ports.find(guest_port);
    if (it == vm->ports.end()) {
      return Status::NotFound("VM " + name + " exposes no guest port " +
                              std::to_string(guest_port) + " (add it to service_ports)");
    }
    return Endpoint{"127.0.0.1", it->second};
  }

  Result<HostMemory> Memory() override { return ReadMemInfo("/proc/meminfo"); }

  void OnDeath(DeathCallback callback) override { vms_.SetDeathCallback(std::move(callback)); }

 private:
  // ram_apart: the stream holds no main memory (it travels apart).
  VmStreamHeader Header(const VmSpec& spec, bool ram_apart) const {
    VmStreamHeader h;
    h.backend = "qemu";
    h.memory_mib = spec.memory_mib;
    h.vcpus = spec.vcpus;
    json config = MachineConfig(spec);
    if (ram_apart) config["ram"] = "apart";
    h.config = config.dump();
    return h;
  }

  // Before the pause of a checkpoint: the capabilities its kind needs, and
  // for RAM apart the copy's memory, faulted in with RAM's present data
  // pages so that the copy in the pause is one memcpy per extent.
  Status PrepareRamApart(Vm* vm, bool apart) REQUIRES(vm->op_mu) {
    SLINGSHOT_RETURN_IF_ERROR(SetIgnoreShared(vm, apart));
    if (!apart) return Status::OK();
    if (vm->background.value_or(false)) UseBackgroundSnapshot(vm, false);
    const size_t bytes = vm->ram_view.size();
    if (!vm->shadow.valid()) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) return Status::FromErrno("mapping room for a copy of the guest's RAM", errno);
      vm->shadow = Mapping(p, bytes);
    }
    // The copy's pages are written once here, while the guest runs: a
    // first write to a page costs its fault and zeroing (and, on a
    // machine that is itself a VM, its host's fault too: 470 ms for
    // 128 MiB on these, against 12 ms for the copy into written pages).
    // MADV_POPULATE_WRITE alone did not spare the copy that cost here.
    auto extents = DataExtents(vm->ram_fd.get(), bytes);
    if (extents.ok()) {
      for (const auto& e : *extents) std::memset(vm->shadow.data() + e.offset, 0, e.length);
      Populate(vm->ram_view, *extents);
    }
    return Status::OK();
  }

  // In the pause: RAM's data extents copied into the shadow, by up to four
  // threads (memory bandwidth is what bounds it; the guest is stopped).
  Status CopyRamAside(Vm* vm, std::vector<GuestRam::Extent>* extents, double* ms) REQUIRES(vm->op_mu) {
    auto t = Clock::now();
    SLINGSHOT_ASSIGN_OR_RETURN(*extents, DataExtents(vm->ram_fd.get(), vm->ram_view.size()));
    uint64_t total = 0;
    for (const auto& e : *extents) total += e.length;
    const unsigned n = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
    uint8_t* to = vm->shadow.data();
    const uint8_t* from = vm->ram_view.data();
    // Part i copies bytes [i * total / n, (i + 1) * total / n) of the
    // extents laid end to end.
    auto part = [&](unsigned i) {
      uint64_t begin = total * i / n, end = total * (i + 1) / n, at = 0;
      for (const auto& e : *extents) {
        const uint64_t lo = std::max(begin, at), hi = std::min(end, at + e.length);
        if (lo < hi) std::memcpy(to + e.offset + (lo - at), from + e.offset + (lo - at), hi - lo);
        at += e.length;
        if (at >= end) break;
      }
    };
    std::vector<std::thread> helpers;
    for (unsigned i = 1; i < n; ++i) helpers.emplace_back(part, i);
    part(0);
    for (auto& h : helpers) h.join();
    *ms = MsSince(t);
    return Status::OK();
  }

  // A restore's main memory, kept apart from its stream: a lazy file the
  // VM will map, or the memfd, filled by *filled (on a thread of its own).
  Status TakeRam(Vm* vm, const RestoreRam* ram, std::future<Status>* filled) REQUIRES(vm->op_mu) {
    const uint64_t bytes = uint64_t{vm->spec.memory_mib} << 20;
    if (!ram || (!ram->fill && ram->lazy_file.empty())) {
      return Status::InvalidArgument("this checkpoint keeps the guest's RAM apart from its stream, and the "
                                     "restore was given none");
    }
    if (ram->size != bytes) {
      return Status::InvalidArgument("the RAM given is " + std::to_string(ram->size) + " bytes but the VM has " +
                                     std::to_string(bytes));
    }
    if (!ram->lazy_file.empty()) {
      vm->lazy_ram = ram->lazy_file;
      return Status::OK();
    }
    SLINGSHOT_RETURN_IF_ERROR(MakeRam(vm));
    const int fd = vm->ram_fd.get();
    auto put = [fd, bytes](uint64_t offset, ByteView b) -> Status {
      if (offset > bytes || b.size() > bytes - offset) {
        return Status::Corruption("RAM piece at " + std::to_string(offset) + " (+" + std::to_string(b.size()) +
                                  ") lies beyond the guest's " + std::to_string(bytes) + " bytes");
      }
      return PwriteAll(fd, b.data(), b.size(), offset, "the guest's RAM");
    };
    *filled = std::async(std::launch::async, [ram, put] { return ram->fill(put); });
    return Status::OK();
  }

  Status SetIgnoreShared(Vm* vm, bool on) REQUIRES(vm->op_mu) {
    if (vm->ignore_shared.value_or(false) == on) return Status::OK();
    auto r = Qmp(vm, "migrate-set-capabilities",
                 {{"capabilities", json::array({{{"capability", "x-ignore-shared"}, {"state", on}}})}});
    if (!r.ok()) return r.status().Annotate("setting x-ignore-shared " + std::string(on ? "on" : "off"));
    vm->ignore_shared = on;
    return Status::OK();
  }

  // What must be equal on both sides of a restore besides memory and vcpus.
  json MachineConfig(const VmSpec& spec) const {
    return {{"machine", "pc"},
            {"cpu", "qemu64"},
            {"nic", "virtio-net-pci"},
            {"disk", spec.disk ? "virtio-blk-pci" : "none"},
            {"accel", kvm_ ? "kvm" : "tcg"}};
  }

  Status CheckHeader(const VmStreamHeader& h, const VmSpec& spec) const {
    if (h.backend != "qemu") {
      return Status::Unsupported("this checkpoint was made by the " + h.backend +
                                 " backend; the QEMU backend cannot restore it");
    }
    if (h.memory_mib != spec.memory_mib || h.vcpus != spec.vcpus) {
      return Status::InvalidArgument(
          "checkpoint is of a VM with " + std::to_string(h.memory_mib) + " MiB and " +
          std::to_string(h.vcpus) + " vCPUs, but the spec asks for " +
          std::to_string(spec.memory_mib) + " MiB and " + std::to_string(spec.vcpus));
    }
    json theirs = json::parse(h.config, nullptr, false);
    json ours = MachineConfig(spec);
    if (theirs.is_discarded()) return Status::Corruption("checkpoint machine config is not JSON");
    for (const char* key : {"machine", "cpu", "nic", "disk"}) {
      if (theirs.value(key, "") != ours.value(key, "")) {
        return Status::InvalidArgument(std::string("checkpoint's machine has ") + key + "=" +
                                       theirs.value(key, "?") + " but this VM would have " +
                                       ours.value(key, "?"));
      }
    }
    return Status::OK();
  }

  std::vector<std::string> Argv(Vm* vm, bool incoming) const REQUIRES(vm->op_mu) {
    const VmSpec& s = vm->spec;
    // Main memory is a file QEMU maps: our memfd, shared (so that a
    // checkpoint can copy it aside), or a file read on demand, private.
    std::string ram = "memory-backend-file,id=ram0,size=" + std::to_string(s.memory_mib) + "M,mem-path=";
    if (!vm->lazy_ram.empty()) {
      std::string path;
      for (char c : vm->lazy_ram) path += c == ',' ? std::string(",,") : std::string(1, c);
      ram += path + ",share=off";
    } else {
      ram += "/proc/self/fd/3,share=on";
    }
    std::vector<std::string> a = {qemu_, "-name", s.name, "-machine", "pc,memory-backend=ram0",
                                  "-object", ram,
                                  "-accel", kvm_ ? "kvm" : "tcg", "-cpu", "qemu64",
                                  "-m", std::to_string(s.memory_mib),
                                  "-smp", std::to_string(s.vcpus),
                                  "-nodefaults", "-no-user-config", "-display", "none",
                                  "-no-reboot", "-kernel", s.kernel};
    if (!s.initrd.empty()) a.insert(a.end(), {"-initrd", s.initrd});
    a.insert(a.end(), {"-append", "console=ttyS0 " + s.cmdline});
    a.insert(a.end(), {"-chardev",
                       "socket,id=qmp,path=" + s.run_dir + "/qmp.sock,server=on,wait=off",
                       "-mon", "chardev=qmp,mode=control"});
    a.insert(a.end(), {"-chardev", "file,id=con,path=" + s.run_dir + "/console.log",
                       "-serial", "chardev:con"});
    std::string net = "user,id=n0,net=10.0.2.0/24,restrict=on";
    for (auto [guest, host] : vm->ports) {
      net += ",hostfwd=tcp:127.0.0.1:" + std::to_string(host) + "-:" + std::to_string(guest);
    }
    a.insert(a.end(), {"-netdev", net, "-device", "virtio-net-pci,netdev=n0,romfile="});
    if (s.disk) {
      std::string bd = "driver=nbd,server.type=unix,server.path=" + s.disk->unix_socket +
                       ",node-name=d0,read-only=" + (s.disk->read_only ? "on" : "off");
      if (!s.disk->export_name.empty()) bd += ",export=" + s.disk->export_name;
      a.insert(a.end(), {"-blockdev", bd, "-device", "virtio-blk-pci,drive=d0"});
    }
    if (incoming) a.insert(a.end(), {"-S", "-incoming", "defer"});
    return a;
  }

  // The VM's main memory as a memfd of its size, with our read-only view
  // of it (nothing is allocated until written).
  Status MakeRam(Vm* vm) REQUIRES(vm->op_mu) {
    const uint64_t bytes = uint64_t{vm->spec.memory_mib} << 20;
    vm->ram_fd.Reset(static_cast<int>(syscall(SYS_memfd_create, ("slingshot-" + vm->spec.name).c_str(), MFD_CLOEXEC)));
    if (!vm->ram_fd.valid()) return Status::FromErrno("memfd_create for the guest's RAM", errno);
    if (ftruncate(vm->ram_fd.get(), static_cast<off_t>(bytes)) != 0) {
      return Status::FromErrno("sizing the guest's RAM", errno);
    }
    void* p = mmap(nullptr, bytes, PROT_READ, MAP_SHARED | MAP_NORESERVE, vm->ram_fd.get(), 0);
    if (p == MAP_FAILED) return Status::FromErrno("mapping the guest's RAM", errno);
    vm->ram_view = Mapping(p, bytes);
    return Status::OK();
  }

  // Spawns QEMU and connects QMP; retries with new host ports if QEMU could
  // not bind the ones picked (another process took them meanwhile).
  Status Start(Vm* vm, bool incoming) REQUIRES(vm->op_mu) {
    if (mkdir(vm->spec.run_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::FromErrno("creating run dir " + vm->spec.run_dir, errno);
    }
    if (vm->spec.kernel.empty()) {
      vm->spec.kernel = vm->spec.run_dir + "/placeholder-kernel";
      SLINGSHOT_RETURN_IF_ERROR(WritePlaceholderKernel(vm->spec.kernel));
    }
    if (vm->lazy_ram.empty() && !vm->ram_fd.valid()) SLINGSHOT_RETURN_IF_ERROR(MakeRam(vm));
    if (mkdir(vm->spec.run_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::FromErrno("creating run dir " + vm->spec.run_dir, errno);
    }
    vm->log_path = vm->spec.run_dir + "/qemu.log";
    Status last;
    for (int attempt = 0; attempt < 3; ++attempt) {
      vm->ports.clear();
      for (uint16_t p : vm->spec.service_ports) {
        SLINGSHOT_ASSIGN_OR_RETURN(uint16_t host, FreeTcpPort());
        vm->ports[p] = host;
      }
      unlink((vm->spec.run_dir + "/qmp.sock").c_str());
      SpawnOptions o;
      o.argv = Argv(vm, incoming);
      o.output_path = vm->log_path;
      o.pass_fd = vm->lazy_ram.empty() ? vm->ram_fd.get() : -1;
      o.no_huge_page_advice = !vm->lazy_ram.empty();
      SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<Child> child, Child::Spawn(o));
      {
        MutexLock l(&vm->state_mu);
        vm->child = std::move(child);
        vm->state = incoming ? VmState::kPaused : VmState::kRunning;
      }
      Wake();
      auto qmp = QmpClient::Connect(vm->spec.run_dir + "/qmp.sock", 20000,
                                    [vm] { return vm->Alive(); });
      if (qmp.ok()) {
        vm->qmp = std::move(qmp.value());
        // A stopped VM's save should go as fast as the sink takes it.
        return Qmp(vm, "migrate-set-parameters", {{"max-bandwidth", int64_t{1} << 40}}).status();
      }
      last = Status::IOError("QEMU did not start: " + vm->Obituary());
      Kill(vm);
      if (Tail(vm->log_path).find("host forwarding") == std::string::npos) break;
    }
    return last;
  }

  Result<json> Qmp(Vm* vm, const std::string& cmd, const json& args = json::object(), int fd = -1)
      REQUIRES(vm->op_mu) {
    if (!vm->qmp) return Status::IOError("VM " + vm->spec.name + " has no QMP connection");
    auto r = vm->qmp->Execute(cmd, args, fd);
    if (!r.ok() && !vm->Alive()) {
      return Status::IOError("VM " + vm->spec.name + " died: " + vm->Obituary());
    }
    return r;
  }

  // Sets the background-snapshot migration capability on or off; true if
  // it now is as asked. QEMU refuses it where the kernel cannot
  // write-protect guest RAM (userfaultfd): that is said once per VM, and
  // its checkpoints then pause the guest for the whole save.
  bool UseBackgroundSnapshot(Vm* vm, bool on) REQUIRES(vm->op_mu) {
    if (on && vm->background_refused) return false;
    if (vm->background == on) return true;
    auto r = Qmp(vm, "migrate-set-capabilities",
                 {{"capabilities", json::array({{{"capability", "background-snapshot"}, {"state", on}}})}});
    if (!r.ok()) {
      if (on) {
        vm->background_refused = true;
        LogWarning("VM " + vm->spec.name + ": QEMU cannot take background snapshots here (" + r.status().message() +
                   "); its checkpoints pause it for the whole save. Userfaultfd write-protection needs Linux "
                   "5.7 or later and, for a user other than root, vm.unprivileged_userfaultfd=1");
      }
      return false;
    }
    vm->background = on;
    return true;
  }

  Status WaitOutgoing(Vm* vm) REQUIRES(vm->op_mu) {
    auto deadline = Clock::now() + std::chrono::seconds(60);
    for (;;) {
      SLINGSHOT_ASSIGN_OR_RETURN(json m, Qmp(vm, "query-migrate"));
      std::string st = m.value("status", "");
      if (st == "completed") return Status::OK();
      if (st == "failed" || st == "cancelled") {
        return Status::IOError("QEMU's save failed: " + m.value("error-desc", st));
      }
      if (Clock::now() > deadline) return Status::IOError("QEMU's save did not finish in 60 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  Status WaitIncoming(Vm* vm) REQUIRES(vm->op_mu) {
    auto deadline = Clock::now() + std::chrono::seconds(120);
    for (;;) {
      SLINGSHOT_ASSIGN_OR_RETURN(json st, Qmp(vm, "query-status"));
      std::string status = st.value("status", "");
      if (status == "paused" || status == "prelaunch" || status == "postmigrate") {
        SLINGSHOT_ASSIGN_OR_RETURN(json m, Qmp(vm, "query-migrate"));
        std::string ms = m.value("status", "");
        if (ms == "failed") return Status::IOError("QEMU could not load the checkpoint: " + m.value("error-desc", ms));
        if (ms == "completed" || ms.empty()) return Status::OK();
      } else if (status != "inmigrate") {
        return Status::IOError("unexpected VM status after restore: " + status);
      }
      if (Clock::now() > deadline) return Status::IOError("QEMU's load did not finish in 120 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  Status SendAll(Vm* vm, int fd, ByteView b) {
    while (!b.empty()) {
      ssize_t n = send(fd, b.data(), b.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        if (!vm->Alive()) return Status::IOError("QEMU died while loading: " + vm->Obituary());
        return Status::FromErrno("writing the checkpoint to QEMU", err);
      }
      b = b.subspan(static_cast<size_t>(n));
    }
    return Status::OK();
  }

  Result<std::shared_ptr<Vm>> Reserve(const VmSpec& spec, bool restore) {
    SLINGSHOT_RETURN_IF_ERROR(ValidateSpec(spec, restore));
    return vms_.Reserve(spec);
  }

  static void Kill(Vm* vm) {
    MutexLock l(&vm->state_mu);
    vm->destroying = true;
    if (vm->child) vm->child->Kill();
    vm->state = VmState::kDead;
  }

  static void SetState(Vm* vm, VmState s) {
    MutexLock l(&vm->state_mu);
    if (vm->state != VmState::kDead) vm->state = s;
  }

  static VmInfo InfoOf(Vm* vm) {
    MutexLock l(&vm->state_mu);
    VmInfo i;
    i.name = vm->spec.name;
    i.state = vm->state;
    if (vm->state == VmState::kDead) {
      i.detail = vm->death.empty() ? "stopped" : vm->death;
    } else if (vm->child) {
      i.detail = "pid " + std::to_string(vm->child->pid());
    }
    return i;
  }

  void Wake() {
    uint64_t one = 1;
    ssize_t ignored = write(wake_.get(), &one, sizeof one);
    (void)ignored;
  }

  // Watches every QEMU's pidfd; marks VMs whose QEMU exited on its own as
  // dead and tells the death callback.
  void Monitor() {
    for (;;) {
      if (vms_.closed()) return;
      std::vector<std::shared_ptr<Vm>> vms;
      std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
      for (auto& vm : vms_.All()) {
        MutexLock st(&vm->state_mu);
        if (vm->child && vm->state != VmState::kDead) {
          vms.push_back(vm);
          fds.push_back({vm->child->pidfd(), POLLIN, 0});
        }
      }
      if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return;
      if (fds[0].revents) {
        uint64_t v;
        ssize_t ignored = read(wake_.get(), &v, sizeof v);
        (void)ignored;
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        Vm* vm = vms[i - 1].get();
        std::string why;
        {
          MutexLock s(&vm->state_mu);
          std::string how;
          if (vm->destroying || !vm->child || !vm->child->Poll(&how)) continue;
          vm->state = VmState::kDead;
          std::string tail = Tail(vm->log_path, 300);
          vm->death = "qemu " + how + (tail.empty() ? "" : ": " + tail);
          why = vm->death;
        }
        LogWarning("VM " + vm->spec.name + " died: " + why);
        vms_.ReportDeath(vm->spec.name, why);
      }
    }
  }

  const std::string qemu_;
  const bool kvm_;
  const bool live_;  // HypervisorOptions::live_checkpoints
  UniqueFd wake_;
  VmRegistry<Vm> vms_;
  std::thread monitor_;
};

}  // namespace

Result<std::unique_ptr<Hypervisor>> OpenQemuHypervisor(const HypervisorOptions& options) {
  SLINGSHOT_ASSIGN_OR_RETURN(std::string qemu,
                             FindExecutable(options.qemu_binary, "qemu-system-x86"));
  bool kvm = false;
  if (options.accel == "kvm") {
    SLINGSHOT_RETURN_IF_ERROR(ProbeKvm(qemu, options.kvm_probe_timeout_ms)
                                  .Annotate("accel=kvm was asked for, but KVM does not work"));
    kvm = true;
  } else if (options.accel == "auto") {
    Status probe = ProbeKvm(qemu, options.kvm_probe_timeout_ms);
    kvm = probe.ok();
    if (!kvm) {
      LogWarning("KVM is not usable (" + probe.message() +
                 "); running guests under TCG, which is ~10x slower");
    }
  } else if (options.accel != "tcg") {
    return Status::InvalidArgument("accel must be auto, kvm or tcg, not '" + options.accel + "'");
  }
  return std::unique_ptr<Hypervisor>(new QemuHypervisor(qemu, kvm, options.live_checkpoints));
}

}  // namespace slingshot
