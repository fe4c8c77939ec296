// XenHypervisor: PVH or PV domains through libxl, death through xenstore.
//
// - The guest type: PVH when Xen offers HVM with hardware-assisted paging
//   (physinfo cap_hvm and cap_hap), since only then has it log-dirty
//   tracking and checkpoints can be live; PV otherwise. Chosen at Open and
//   logged; HypervisorOptions::xen_guest_type forces one.
// - Boot builds a libxl_domain_config from the spec: the type, kernel/ramdisk/
//   cmdline, memory, vcpus, a phy: disk on /dev/nbdN (attached with the dom0
//   kernel's NBD client from the replica's NBD export), a vif on the VM's
//   own bridge (ReplicaNetwork: a bridge, a namespace holding the gateway
//   10.0.2.2, and loopback forwarders to the guest's service ports), so
//   every guest keeps 10.0.2.15 and none reaches another, dom0 or the LAN.
// - Checkpoint: libxl_domain_suspend writes libxl's stream into one end of a
//   socketpair while a thread reads the other end into the VM stream; with
//   keep_running, libxl_domain_resume(suspend_cancel) lets the guest go on.
//   A PVH guest is saved live (LIBXL_SUSPEND_LIVE: memory copied in
//   log-dirty rounds while it runs, then a short final pause); a PV one is
//   paused for the whole save (PV has no log-dirty here), as `xl save -c`.
//   The caller's at_pause hook runs while the domain stands suspended after
//   the save (the instant the stream ends with), before the resume.
//   The pause is measured, not assumed: a watcher on a libxl context of its
//   own polls the domain's state and times from its first suspended or
//   paused sight to the resume.
//   libxl's stream does not carry the domain config, so its JSON goes into
//   the VM stream's header, as xl does in its save files.
// - Restore: the header's config (renamed, new UUID, this replica's disk)
//   goes to libxl_domain_create_restore, which reads the verified payload
//   from a socketpair fed by a thread; the domain is unpaused only after the
//   VM stream's trailer matched.
// - Death: a thread watches @releaseDomain and checks our domains.
// - Children: libxl reaps only its own (selective reap), so other children
//   of the process (our Child objects) are left to us.
// Xen's headers have no extern "C" guards of their own.
extern "C" {
#include <libxl.h>
#include <libxl_utils.h>
#include <xenstore.h>
}
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <thread>

#include "child.h"
#include "vm_registry.h"
#include "slingshot/base/coding.h"
#include "slingshot/vm/hypervisor.h"
#include "slingshot/vm/replica_network.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/vm/vm_stream.h"

namespace slingshot {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kGuestAddress = "10.0.2.15";
constexpr uint32_t kNoDomain = static_cast<uint32_t>(INVALID_DOMID);

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

Status XlError(const std::string& what, int rc) {
  return Status::IOError("libxl " + what + " failed (error " + std::to_string(rc) +
                         "); see /var/log/xen/ and the slingshot log for libxl's own words");
}

char* Dup(const std::string& s) { return strdup(s.c_str()); }

// Times a domain's standstill during a save: polls its state every
// millisecond on a libxl context of its own and keeps the first moment it
// was seen suspended or paused.
class PauseWatch {
 public:
  PauseWatch(libxl_ctx* ctx, uint32_t domid) : thread_([this, ctx, domid] { Run(ctx, domid); }) {}
  ~PauseWatch() { Stop(); }
  // Ends the watch; when the domain was first seen stopped, if it was.
  std::optional<Clock::time_point> Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return first_;
  }

 private:
  void Run(libxl_ctx* ctx, uint32_t domid) {
    while (!stop_ && !first_) {
      libxl_dominfo info;
      libxl_dominfo_init(&info);
      if (libxl_domain_info(ctx, &info, domid) == 0 &&
          (info.paused || (info.shutdown && info.shutdown_reason == LIBXL_SHUTDOWN_REASON_SUSPEND))) {
        first_ = Clock::now();
      }
      libxl_dominfo_dispose(&info);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  std::atomic<bool> stop_{false};
  std::optional<Clock::time_point> first_;  // written by the thread, read after join
  std::thread thread_;
};

struct XenVm {
  VmSpec spec;
  std::atomic<uint32_t> domid{kNoDomain};  // read by the monitor thread
  std::string nbd_device;  // /dev/nbdN we attached, or empty
  // Its own network, when it has service ports; set and dropped under
  // op_mu, read under state_mu (ServiceEndpoint must not wait for a
  // checkpoint).
  std::shared_ptr<ReplicaNetwork> net GUARDED_BY(state_mu);
  Mutex op_mu;
  Mutex state_mu;
  VmState state GUARDED_BY(state_mu) = VmState::kRunning;
  std::string death GUARDED_BY(state_mu);
  bool destroying GUARDED_BY(state_mu) = false;
};

class XenHypervisor final : public Hypervisor {
 public:
  static Result<std::unique_ptr<Hypervisor>> Open(const HypervisorOptions& options) {
    std::unique_ptr<XenHypervisor> h(new XenHypervisor);
    h->network_prefix_ = options.network_prefix;
    h->live_ = options.live_checkpoints;
    h->logger_ = xtl_createlogger_stdiostream(stderr, XTL_ERROR, 0);
    libxl_ctx* ctx = nullptr;
    libxl_ctx* watch_ctx = nullptr;
    auto* logger = reinterpret_cast<xentoollog_logger*>(h->logger_);
    if (libxl_ctx_alloc(&ctx, LIBXL_VERSION, 0, logger) == 0) h->ctx_ = ctx;
    if (h->ctx_ && libxl_ctx_alloc(&watch_ctx, LIBXL_VERSION, 0, logger) == 0) h->watch_ctx_ = watch_ctx;
    if (!h->ctx_ || !h->watch_ctx_) {
      return Status::Unsupported(
          "cannot open libxl (libxl_ctx_alloc failed: no Xen hypervisor or no privileged "
          "access). The Xen backend runs only in a Xen dom0 as root; elsewhere use the QEMU backend (hypervisor = qemu)");
    }
    static const libxl_childproc_hooks hooks = {
        libxl_sigchld_owner_libxl_always_selective_reap, nullptr, nullptr};
    libxl_childproc_setmode(h->ctx_, &hooks, nullptr);
    libxl_childproc_setmode(h->watch_ctx_, &hooks, nullptr);
    SLINGSHOT_RETURN_IF_ERROR(h->ChooseGuestType(options.xen_guest_type));
    h->xs_ = xs_open(0);
    if (!h->xs_ || !xs_watch(h->xs_, "@releaseDomain", "slingshot")) {
      return Status::IOError("cannot watch xenstore @releaseDomain (is xenstored running?)");
    }
    if (int n = ReplicaNetwork::RemoveStale(h->network_prefix_, ""); n > 0) {
      LogInfo("removed " + std::to_string(n) + " replica network objects a previous run left in dom0");
    }
    h->monitor_ = std::thread([p = h.get()] { p->Monitor(); });
    return std::unique_ptr<Hypervisor>(std::move(h));
  }

  ~XenHypervisor() override {
    for (auto& vm : vms_.Close()) {
      MutexLock op(&vm->op_mu);
      Kill(vm.get());
    }
    // The monitor sees the registry closed within one poll interval.
    if (monitor_.joinable()) monitor_.join();
    if (xs_) xs_unwatch(xs_, "@releaseDomain", "slingshot");
    if (xs_) xs_close(xs_);
    if (ctx_) libxl_ctx_free(ctx_);
    if (watch_ctx_) libxl_ctx_free(watch_ctx_);
    if (logger_) xtl_logger_destroy(reinterpret_cast<xentoollog_logger*>(logger_));
  }

  using Hypervisor::Checkpoint;
  using Hypervisor::Restore;
  std::string Name() const override { return "xen"; }
  std::string StreamFormat() const override { return "xen"; }
  NbdDisk DiskAddress(const std::string&) const override { return NbdDisk{"", "127.0.0.1", 0, "disk", false}; }

  Status Boot(const VmSpec& spec) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<XenVm> vm, Reserve(spec));
    MutexLock op(&vm->op_mu);
    libxl_domain_config cfg;
    libxl_domain_config_init(&cfg);
    Status s = BuildConfig(vm.get(), &cfg);
    uint32_t domid = kNoDomain;
    if (s.ok()) {
      int rc = libxl_domain_create_new(ctx_, &cfg, &domid, nullptr, nullptr);
      if (rc) s = XlError("domain_create_new for " + spec.name, rc);
    }
    if (s.ok()) {
      vm->domid = domid;
      SealVifs(vm.get());
      int rc = libxl_domain_unpause(ctx_, domid, nullptr);
      if (rc) s = XlError("domain_unpause", rc);
    }
    libxl_domain_config_dispose(&cfg);
    if (!s.ok()) {
      Kill(vm.get());
      vms_.Forget(vm);
      return s;
    }
    LogInfo("VM " + spec.name + " booted as Xen domain " + std::to_string(domid));
    return Status::OK();
  }

  Result<CheckpointStats> Checkpoint(const std::string& name, const ByteSink& sink, bool keep_running,
                                     const CheckpointHooks& hooks) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<XenVm> vm, vms_.Find(name));
    MutexLock op(&vm->op_mu);
    if (StateOf(vm.get()) == VmState::kDead) return Status::IOError("VM " + name + " is dead");
    auto t0 = Clock::now();
    libxl_domain_config cfg;
    libxl_domain_config_init(&cfg);
    int rc = libxl_retrieve_domain_configuration(ctx_, vm->domid, &cfg, nullptr);
    if (rc) {
      libxl_domain_config_dispose(&cfg);
      return XlError("retrieve_domain_configuration", rc);
    }
    const bool live = live_ && cfg.c_info.type == LIBXL_DOMAIN_TYPE_PVH;
    char* json = libxl_domain_config_to_json(ctx_, &cfg);
    libxl_domain_config_dispose(&cfg);
    if (!json) return Status::IOError("libxl could not describe the domain config as JSON");
    VmStreamHeader h{"xen", vm->spec.memory_mib, vm->spec.vcpus, json};
    free(json);
    VmStreamWriter writer(sink);
    SLINGSHOT_RETURN_IF_ERROR(writer.Begin(h));

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return Status::FromErrno("socketpair", errno);
    }
    UniqueFd ours(sv[0]), theirs(sv[1]);
    // The reader drains the stream while libxl writes it.
    std::promise<Status> read_done;
    std::thread reader([&] {
      std::vector<uint8_t> buf(256 << 10);
      Status st;
      for (;;) {
        ssize_t n = recv(ours.get(), buf.data(), buf.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { st = Status::FromErrno("reading libxl's save stream", errno); break; }
        if (n == 0) break;
        st = writer.Write(ByteView(buf.data(), static_cast<size_t>(n)));
        if (!st.ok()) break;
      }
      // Stop libxl's writes if we gave up early.
      shutdown(ours.get(), SHUT_RDWR);
      read_done.set_value(st);
    });
    PauseWatch watch(watch_ctx_, vm->domid);
    const auto call_start = Clock::now();
    if (!live) SetState(vm.get(), VmState::kPaused);
    rc = libxl_domain_suspend(ctx_, vm->domid, theirs.get(), live ? LIBXL_SUSPEND_LIVE : 0, nullptr);
    SetState(vm.get(), VmState::kPaused);
    shutdown(theirs.get(), SHUT_WR);  // EOF for the reader
    Status read_status = read_done.get_future().get();
    reader.join();
    Status s = rc ? XlError("domain_suspend", rc) : Status::OK();
    // The domain is suspended at the instant the stream ends with.
    if (s.ok() && read_status.ok() && hooks.at_pause) s = hooks.at_pause();
    if (s.ok() && read_status.ok()) read_status = writer.Finish();
    if (keep_running) {
      int r2 = libxl_domain_resume(ctx_, vm->domid, /*suspend_cancel=*/1, nullptr);
      if (r2 == 0) {
        SetState(vm.get(), VmState::kRunning);
        if (hooks.running) hooks.running();
      }
      if (s.ok() && r2) s = XlError("domain_resume", r2);
    }
    CheckpointStats stats;
    // From the first moment the guest was seen stopped (or, if the watcher
    // never saw it, from the call) to its resume.
    stats.pause_ms = MsSince(watch.Stop().value_or(call_start));
    stats.total_ms = MsSince(t0);
    stats.live = live;
    stats.stream_bytes = writer.bytes_written();
    if (!read_status.ok()) return read_status.Annotate("checkpoint of " + name + " abandoned");
    if (!s.ok()) return s.Annotate("checkpoint of " + name);
    return stats;
  }

  Result<RestoreStats> Restore(const VmSpec& spec, const StreamProducer& stream, const RestoreRam* ram) override {
    (void)ram;  // Xen streams hold their memory whole
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<XenVm> vm, Reserve(spec));
    MutexLock op(&vm->op_mu);
    auto t0 = Clock::now();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      vms_.Forget(vm);
      return Status::FromErrno("socketpair", errno);
    }
    UniqueFd ours(sv[0]), theirs(sv[1]);
    std::promise<Result<VmStreamHeader>> header_p;
    auto header_f = header_p.get_future();
    bool header_sent = false;
    VmStreamReader reader(
        [&](const VmStreamHeader& h) -> Status {
          Status ok = h.backend == "xen"
                          ? Status::OK()
                          : Status::Unsupported("this checkpoint was made by the " + h.backend +
                                                " backend; the Xen backend cannot restore it");
          if (ok.ok() && (h.memory_mib != spec.memory_mib || h.vcpus != spec.vcpus)) {
            ok = Status::InvalidArgument("checkpoint is of a VM with " +
                                         std::to_string(h.memory_mib) + " MiB and " +
                                         std::to_string(h.vcpus) + " vCPUs; the spec differs");
          }
          header_sent = true;
          if (!ok.ok()) {
            header_p.set_value(ok);
            return ok;
          }
          header_p.set_value(h);
          return Status::OK();
        },
        [&](ByteView b) -> Status {
          while (!b.empty()) {
            ssize_t n = send(ours.get(), b.data(), b.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return Status::FromErrno("writing the checkpoint to libxl", errno);
            b = b.subspan(static_cast<size_t>(n));
          }
          return Status::OK();
        });
    // The producer runs on its own thread: libxl's restore call blocks this
    // one while it reads.
    Status produce_status;
    std::thread producer([&] {
      produce_status = stream([&](ByteView b) { return reader.Feed(b); });
      if (produce_status.ok()) produce_status = reader.Finish();
      if (!header_sent) header_p.set_value(produce_status.ok()
                                               ? Status::Corruption("VM stream has no header")
                                               : produce_status);
      shutdown(ours.get(), produce_status.ok() ? SHUT_WR : SHUT_RDWR);
    });
    Result<VmStreamHeader> header = header_f.get();
    Status s = header.status();
    libxl_domain_config cfg;
    libxl_domain_config_init(&cfg);
    uint32_t domid = kNoDomain;
    if (s.ok()) {
      if (libxl_domain_config_from_json(ctx_, &cfg, header->config.c_str()) != 0) {
        s = Status::Corruption("the checkpoint's Xen domain config is not valid libxl JSON");
      }
    }
    if (s.ok() && cfg.c_info.type == LIBXL_DOMAIN_TYPE_PVH && !pvh_capable_) {
      s = Status::Unsupported("this checkpoint is of a PVH domain, and this host's Xen cannot run PVH "
                              "guests (it offers no HVM with hardware-assisted paging)");
    }
    if (s.ok()) s = Retarget(vm.get(), &cfg);
    if (s.ok()) {
      libxl_domain_restore_params params;
      libxl_domain_restore_params_init(&params);
      params.checkpointed_stream = LIBXL_CHECKPOINTED_STREAM_NONE;
      params.stream_version = 2;
      int rc = libxl_domain_create_restore(ctx_, &cfg, &domid, theirs.get(), -1, &params,
                                           nullptr, nullptr);
      libxl_domain_restore_params_dispose(&params);
      if (domid != kNoDomain) vm->domid = domid;
      if (rc) s = XlError("domain_create_restore", rc);
      if (rc == 0) SealVifs(vm.get());
    }
    theirs.Reset();  // unblocks a producer still writing
    producer.join();
    libxl_domain_config_dispose(&cfg);
    if (!produce_status.ok()) s = produce_status;  // the stream's error says more
    if (s.ok()) {
      int rc = libxl_domain_unpause(ctx_, vm->domid, nullptr);
      if (rc) s = XlError("domain_unpause", rc);
    }
    if (!s.ok()) {
      Kill(vm.get());
      vms_.Forget(vm);
      return s.Annotate("restore of " + spec.name);
    }
    SetState(vm.get(), VmState::kRunning);
    RestoreStats stats;
    stats.stream_bytes = reader.bytes_read();
    stats.total_ms = MsSince(t0);
    LogInfo("VM " + spec.name + " restored as Xen domain " + std::to_string(vm->domid));
    return stats;
  }

  Status Destroy(const std::string& name) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<XenVm> vm, vms_.Remove(name));
    MutexLock op(&vm->op_mu);
    Kill(vm.get());
    return Status::OK();
  }

  std::vector<VmInfo> List() override {
    std::vector<VmInfo> out;
    for (auto& vm : vms_.All()) out.push_back(InfoOf(vm.get()));
    return out;
  }

  Result<VmInfo> Info(const std::string& name) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<XenVm> vm, vms_.Find(name));
    return InfoOf(vm.get());
  }

  Result<Endpoint> ServiceEndpoint(const std::string& name, uint16_t guest_port) override {
    SLINGSHOT_ASSIGN_OR_RETURN(std::shared_ptr<XenVm> vm, vms_.Find(name));
    for (uint16_t p : vm->spec.service_ports) {
      if (p != guest_port) continue;
      std::shared_ptr<ReplicaNetwork> net = NetOf(vm.get());
      if (!net) return Status::Unavailable("VM " + name + " has no network (it is stopped)");
      return net->Forward(kGuestAddress, guest_port);
    }
    return Status::NotFound("VM " + name + " exposes no guest port " + std::to_string(guest_port));
  }

  Result<HostMemory> Memory() override {
    libxl_physinfo info;
    libxl_physinfo_init(&info);
    int rc = libxl_get_physinfo(ctx_, &info);
    HostMemory m;
    if (rc == 0) {
      const uint64_t page_kib = 4;  // Xen's pages on x86
      m.total_mib = info.total_pages * page_kib / 1024;
      m.free_mib = info.free_pages * page_kib / 1024;
    }
    libxl_physinfo_dispose(&info);
    if (rc != 0) return Status::IOError("libxl_get_physinfo failed (" + std::to_string(rc) + ")");
    return m;
  }

  void OnDeath(DeathCallback callback) override { vms_.SetDeathCallback(std::move(callback)); }

 private:
  XenHypervisor() = default;

  Status ChooseGuestType(const std::string& wanted) {
    libxl_physinfo info;
    libxl_physinfo_init(&info);
    int rc = libxl_get_physinfo(ctx_, &info);
    pvh_capable_ = rc == 0 && info.cap_hvm && info.cap_hap;
    libxl_physinfo_dispose(&info);
    if (rc) return XlError("get_physinfo", rc);
    if (wanted == "pv") {
      guest_type_ = LIBXL_DOMAIN_TYPE_PV;
      LogInfo("Xen guests: PV (as configured); checkpoints pause a guest for the whole save");
    } else if (wanted == "pvh" || wanted == "auto") {
      if (!pvh_capable_) {
        if (wanted == "pvh") {
          return Status::Unsupported("xen guest type pvh asked for, but this Xen offers no HVM with "
                                     "hardware-assisted paging (xl info: virt_caps); use pv");
        }
        guest_type_ = LIBXL_DOMAIN_TYPE_PV;
        LogInfo("Xen guests: PV, since this Xen offers no HVM with hardware-assisted paging; "
                "checkpoints pause a guest for the whole save");
      } else {
        guest_type_ = LIBXL_DOMAIN_TYPE_PVH;
        LogInfo("Xen guests: PVH (hardware-assisted paging); checkpoints are live");
      }
    } else {
      return Status::InvalidArgument("xen guest type '" + wanted + "': use auto, pvh or pv");
    }
    return Status::OK();
  }

  Status ValidateSpec(const VmSpec& s) {
    SLINGSHOT_RETURN_IF_ERROR(ValidateVmName(s.name));
    if (access(s.kernel.c_str(), R_OK) != 0) return Status::InvalidArgument("kernel '" + s.kernel + "' is not readable");
    if (!s.initrd.empty() && access(s.initrd.c_str(), R_OK) != 0) {
      return Status::InvalidArgument("initrd '" + s.initrd + "' is not readable");
    }
    if (s.disk && (s.disk->host.empty() || s.disk->port == 0)) {
      return Status::InvalidArgument("the Xen backend attaches disks with the dom0 kernel's NBD "
                                     "client, which needs the export over TCP (disk.host, disk.port)");
    }
    if (!s.service_ports.empty()) {
      SLINGSHOT_RETURN_IF_ERROR(FindExecutable("ip", "iproute2").status());
    }
    return Status::OK();
  }

  // Connects /dev/nbdN to the spec's export; returns the device.
  Result<std::string> AttachNbd(const NbdDisk& d) {
    SLINGSHOT_ASSIGN_OR_RETURN(std::string client, FindExecutable("nbd-client", "nbd-client"));
    for (int i = 0; i < 64; ++i) {
      std::string dev = "/dev/nbd" + std::to_string(i);
      if (access(dev.c_str(), F_OK) != 0) break;
      if (access(("/sys/block/nbd" + std::to_string(i) + "/pid").c_str(), F_OK) == 0) continue;
      SpawnOptions o;
      o.argv = {client, d.host, std::to_string(d.port), dev};
      if (!d.export_name.empty()) o.argv.insert(o.argv.begin() + 1, {"-N", d.export_name});
      SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<Child> c, Child::Spawn(o));
      std::string how;
      if (c->Wait(30000, &how) && c->exit_code() == 0) return dev;
      return Status::IOError("nbd-client could not attach " + d.host + ":" +
                             std::to_string(d.port) + " to " + dev + " (" + how + ")");
    }
    return Status::ResourceExhausted("no free /dev/nbdN (load the nbd module: modprobe nbd)");
  }

  void DetachNbd(const std::string& dev) {
    if (dev.empty()) return;
    auto client = FindExecutable("nbd-client", "");
    if (!client.ok()) return;
    SpawnOptions o;
    o.argv = {*client, "-d", dev};
    auto c = Child::Spawn(o);
    if (c.ok()) (*c)->Wait(10000, nullptr);
  }

  Status AddDevices(XenVm* vm, libxl_domain_config* cfg) {
    const VmSpec& s = vm->spec;
    if (s.disk) {
      SLINGSHOT_ASSIGN_OR_RETURN(vm->nbd_device, AttachNbd(*s.disk));
      cfg->num_disks = 1;
      cfg->disks = static_cast<libxl_device_disk*>(calloc(1, sizeof(libxl_device_disk)));
      libxl_device_disk_init(&cfg->disks[0]);
      cfg->disks[0].pdev_path = Dup(vm->nbd_device);
      cfg->disks[0].vdev = Dup("xvda");
      cfg->disks[0].backend = LIBXL_DISK_BACKEND_PHY;
      cfg->disks[0].format = LIBXL_DISK_FORMAT_RAW;
      cfg->disks[0].readwrite = s.disk->read_only ? 0 : 1;
    }
    if (!s.service_ports.empty()) {
      SLINGSHOT_RETURN_IF_ERROR(EnsureNetwork(vm));
      cfg->num_nics = 1;
      cfg->nics = static_cast<libxl_device_nic*>(calloc(1, sizeof(libxl_device_nic)));
      libxl_device_nic_init(&cfg->nics[0]);
      cfg->nics[0].bridge = Dup(NetOf(vm)->bridge());
      cfg->nics[0].devid = 0;
    }
    return Status::OK();
  }

  static std::shared_ptr<ReplicaNetwork> NetOf(XenVm* vm) {
    MutexLock l(&vm->state_mu);
    return vm->net;
  }

  Status EnsureNetwork(XenVm* vm) {
    if (NetOf(vm)) return Status::OK();
    ReplicaNetworkOptions o;
    o.prefix = network_prefix_;
    o.id = next_network_id_++;
    if (!vm->spec.run_dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(vm->spec.run_dir, ec);
      if (ec) return Status::IOError("cannot make " + vm->spec.run_dir + ": " + ec.message());
      o.log_path = vm->spec.run_dir + "/network.log";
    }
    SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<ReplicaNetwork> net, ReplicaNetwork::Create(o));
    LogInfo("VM " + vm->spec.name + ": its own network on bridge " + net->bridge() +
            " (namespace " + net->netns() + ")");
    MutexLock l(&vm->state_mu);
    vm->net = std::move(net);
    return Status::OK();
  }

  // The domain's vifs (vifDOMID.N in dom0) get no IPv6 link-local address:
  // the bridge passes frames between them and the veth, and dom0 keeps no
  // address of its own on the guest's link. Best effort; a kernel without
  // IPv6 has nothing to seal.
  void SealVifs(XenVm* vm) {
    if (!NetOf(vm)) return;
    const std::string dev = "vif" + std::to_string(vm->domid.load()) + ".0";
    int fd = ::open(("/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)!::write(fd, "1", 1);
    ::close(fd);
  }

  Status BuildConfig(XenVm* vm, libxl_domain_config* cfg) {
    const VmSpec& s = vm->spec;
    cfg->c_info.type = guest_type_;
    cfg->c_info.name = Dup(s.name);
    libxl_uuid_generate(&cfg->c_info.uuid);
    libxl_domain_build_info_init_type(&cfg->b_info, guest_type_);
    cfg->b_info.max_vcpus = static_cast<int>(s.vcpus);
    libxl_bitmap_alloc(ctx_, &cfg->b_info.avail_vcpus, static_cast<int>(s.vcpus));
    libxl_bitmap_set_none(&cfg->b_info.avail_vcpus);
    for (uint32_t i = 0; i < s.vcpus; ++i) libxl_bitmap_set(&cfg->b_info.avail_vcpus, static_cast<int>(i));
    cfg->b_info.max_memkb = uint64_t(s.memory_mib) * 1024;
    cfg->b_info.target_memkb = cfg->b_info.max_memkb;
    cfg->b_info.kernel = Dup(s.kernel);
    if (!s.initrd.empty()) cfg->b_info.ramdisk = Dup(s.initrd);
    cfg->b_info.cmdline = Dup("console=hvc0 " + s.cmdline);
    cfg->on_poweroff = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
    cfg->on_reboot = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
    cfg->on_crash = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
    return AddDevices(vm, cfg);
  }

  // Points a checkpoint's config at this replica: its name, a new UUID, its
  // own disk and network, and this host's copies of the boot files (the
  // config names the paths on the host that took the checkpoint). The NIC
  // keeps its MAC, which the guest's memory remembers.
  Status Retarget(XenVm* vm, libxl_domain_config* cfg) {
    free(cfg->c_info.name);
    cfg->c_info.name = Dup(vm->spec.name);
    libxl_uuid_generate(&cfg->c_info.uuid);
    if (!vm->spec.kernel.empty()) {
      free(cfg->b_info.kernel);
      cfg->b_info.kernel = Dup(vm->spec.kernel);
    }
    if (!vm->spec.initrd.empty()) {
      free(cfg->b_info.ramdisk);
      cfg->b_info.ramdisk = Dup(vm->spec.initrd);
    }
    for (int i = 0; i < cfg->num_disks; ++i) libxl_device_disk_dispose(&cfg->disks[i]);
    free(cfg->disks);
    cfg->disks = nullptr;
    cfg->num_disks = 0;
    bool had_nic = cfg->num_nics > 0;
    if (had_nic) {
      SLINGSHOT_RETURN_IF_ERROR(EnsureNetwork(vm));
      for (int i = 0; i < cfg->num_nics; ++i) {
        free(cfg->nics[i].bridge);
        cfg->nics[i].bridge = Dup(NetOf(vm)->bridge());
      }
    }
    VmSpec devices = vm->spec;
    if (had_nic) devices.service_ports.clear();  // AddDevices would add a second NIC
    std::swap(vm->spec, devices);
    Status s = AddDevices(vm, cfg);
    std::swap(vm->spec, devices);
    return s;
  }

  Result<std::shared_ptr<XenVm>> Reserve(const VmSpec& spec) {
    SLINGSHOT_RETURN_IF_ERROR(ValidateSpec(spec));
    uint32_t existing;
    if (libxl_name_to_domid(ctx_, spec.name.c_str(), &existing) == 0) {
      return Status::AlreadyExists("a Xen domain named " + spec.name + " already runs (domid " +
                                   std::to_string(existing) + ")");
    }
    return vms_.Reserve(spec);
  }

  void Kill(XenVm* vm) {
    {
      MutexLock l(&vm->state_mu);
      vm->destroying = true;
      vm->state = VmState::kDead;
    }
    if (vm->domid != kNoDomain) libxl_domain_destroy(ctx_, vm->domid, nullptr);
    vm->domid = kNoDomain;
    DetachNbd(vm->nbd_device);
    vm->nbd_device.clear();
    std::shared_ptr<ReplicaNetwork> net;
    {
      MutexLock l(&vm->state_mu);
      net.swap(vm->net);
    }
    net.reset();  // removes the bridge and namespace (unless a caller still forwards)
  }

  static VmState StateOf(XenVm* vm) {
    MutexLock l(&vm->state_mu);
    return vm->state;
  }
  static void SetState(XenVm* vm, VmState s) {
    MutexLock l(&vm->state_mu);
    if (vm->state != VmState::kDead) vm->state = s;
  }
  static VmInfo InfoOf(XenVm* vm) {
    MutexLock l(&vm->state_mu);
    VmInfo i{vm->spec.name, vm->state, ""};
    i.detail = vm->state == VmState::kDead ? (vm->death.empty() ? "stopped" : vm->death)
                                           : "domid " + std::to_string(vm->domid);
    return i;
  }

  void Monitor() {
    for (;;) {
      if (vms_.closed()) return;
      pollfd p{xs_fileno(xs_), POLLIN, 0};
      int pr = poll(&p, 1, 500);
      if (pr < 0 && errno != EINTR) return;
      if (pr <= 0) continue;  // xs_read_watch would block: only read when readable
      unsigned int n = 0;
      char** ev = xs_read_watch(xs_, &n);
      if (!ev) return;  // closed: shutting down
      free(ev);
      for (auto& vm : vms_.All()) {
        uint32_t domid;
        {
          MutexLock s(&vm->state_mu);
          if (vm->destroying || vm->state == VmState::kDead) continue;
          domid = vm->domid;
        }
        if (domid == kNoDomain) continue;
        libxl_dominfo info;
        libxl_dominfo_init(&info);
        int rc = libxl_domain_info(ctx_, &info, domid);
        // A suspended domain (a checkpoint in progress, or one kept paused
        // after it) is shut down with reason "suspend" but not dead.
        bool gone = rc == ERROR_DOMAIN_NOTFOUND ||
                    (rc == 0 && (info.dying || (info.shutdown && info.shutdown_reason !=
                                                                   LIBXL_SHUTDOWN_REASON_SUSPEND)));
        std::string why = "domain " + std::to_string(domid);
        if (rc == ERROR_DOMAIN_NOTFOUND) {
          why += " is gone";
        } else if (info.dying) {
          why += " was destroyed";
        } else {
          const char* reason = libxl_shutdown_reason_to_string(info.shutdown_reason);
          why += std::string(" shut down (") + (reason ? reason : "unknown reason") + ")";
        }
        libxl_dominfo_dispose(&info);
        if (!gone) continue;
        {
          MutexLock s(&vm->state_mu);
          if (vm->destroying) continue;
          vm->state = VmState::kDead;
          vm->death = why;
        }
        LogWarning("VM " + vm->spec.name + " died: " + why);
        vms_.ReportDeath(vm->spec.name, why);
      }
    }
  }

  libxl_ctx* ctx_ = nullptr;
  libxl_ctx* watch_ctx_ = nullptr;  // the pause watcher's own
  libxl_domain_type guest_type_ = LIBXL_DOMAIN_TYPE_PV;
  bool pvh_capable_ = false;
  std::string network_prefix_;
  bool live_ = true;  // HypervisorOptions::live_checkpoints
  xentoollog_logger_stdiostream* logger_ = nullptr;
  struct xs_handle* xs_ = nullptr;
  VmRegistry<XenVm> vms_;
  std::thread monitor_;
  std::atomic<uint32_t> next_network_id_{1};
};

}  // namespace

Result<std::unique_ptr<Hypervisor>> OpenXenHypervisor(const HypervisorOptions& options) {
  return XenHypervisor::Open(options);
}

}  // namespace slingshot
