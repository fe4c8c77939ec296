#include "home_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/net/transport.h"
#include "slingshot/replica/checkpoint.h"
#include "slingshot/replica/checkpoint_scope.h"
#include "slingshot/replica/instantiate.h"
#include "slingshot/replica/primary.h"
#include "slingshot/replica/ram_rehearsal.h"
#include "slingshot/replica/retention.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"

namespace slingshot {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxConf = 64 << 10;

Result<uint64_t> ParseU64(const std::string& key, const std::string& v) {
  uint64_t x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || p != v.data() + v.size()) {
    return Status::InvalidArgument(key + " = \"" + v + "\" is not a number");
  }
  return x;
}

std::string ReadText(const std::string& path) {
  auto b = ReadFileBounded(path, kMaxConf);
  return b.ok() ? std::string(b->begin(), b->end()) : "";
}

}  // namespace

std::string ServiceDef::Encode() const {
  std::string s = "# written by slingshot-home service create\n";
  s += "name=" + name + "\nowner=" + owner + "\ntype=" + type + "\ncmdline=" + cmdline + "\n";
  s += "memory_mib=" + std::to_string(memory_mib) + "\nvcpus=" + std::to_string(vcpus) + "\n";
  s += "disk_image=" + disk_image + "\ndisk_size_mb=" + std::to_string(disk_size_mb) + "\n";
  s += "service_port=" + std::to_string(service_port) + "\n";
  for (uint16_t p : extra_ports) s += "extra_port=" + std::to_string(p) + "\n";
  if (state_on_disk) s += "state_on_disk=1\n";
  return s;
}

Result<ServiceDef> ServiceDef::Decode(const std::string& text) {
  ServiceDef d;
  d.name.clear();
  std::stringstream ss(text);
  std::string line;
  int n = 0;
  while (std::getline(ss, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) {
      return Status::Corruption("service.conf line " + std::to_string(n) + " has no '=': " + line);
    }
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "name") d.name = v;
    else if (k == "owner") d.owner = v;
    else if (k == "type") d.type = v;
    else if (k == "cmdline") d.cmdline = v;
    else if (k == "disk_image") d.disk_image = v;
    else if (k == "state_on_disk") {
      if (v != "0" && v != "1") return Status::Corruption("service.conf line " + std::to_string(n) + ": state_on_disk must be 0 or 1");
      d.state_on_disk = v == "1";
    }
    else if (k == "memory_mib" || k == "vcpus" || k == "disk_size_mb" || k == "service_port" || k == "extra_port") {
      SLINGSHOT_ASSIGN_OR_RETURN(uint64_t x, ParseU64(k, v));
      if (k == "memory_mib") d.memory_mib = static_cast<uint32_t>(x);
      else if (k == "vcpus") d.vcpus = static_cast<uint32_t>(x);
      else if (k == "disk_size_mb") d.disk_size_mb = x;
      else if (x == 0 || x > 65535) return Status::InvalidArgument(k + " " + v + " is not a TCP port");
      else if (k == "service_port") d.service_port = static_cast<uint16_t>(x);
      else d.extra_ports.push_back(static_cast<uint16_t>(x));
    } else {
      return Status::Corruption("service.conf line " + std::to_string(n) + ": unknown key \"" + k + "\"");
    }
  }
  SLINGSHOT_RETURN_IF_ERROR(CheckServiceName(d.name));
  return d;
}

Status CheckServiceName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 48 && name[0] != '.';
  for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  if (!ok) return Status::InvalidArgument("service name \"" + name + "\" must be 1 to 48 of A-Z a-z 0-9 . _ -");
  return Status::OK();
}

Status CreateService(const std::string& services_dir, const ServiceDef& def, const std::string& kernel,
                     const std::string& initrd) {
  SLINGSHOT_RETURN_IF_ERROR(CheckServiceName(def.name));
  SLINGSHOT_RETURN_IF_ERROR(UserScope(def.owner).status());
  if (!IsServiceType(def.type)) return Status::InvalidArgument("service type \"" + def.type + "\" is unknown (rfb)");
  if (!def.disk_image.empty() && !fs::is_regular_file(def.disk_image)) {
    return Status::InvalidArgument("disk image " + def.disk_image + " is not a file");
  }
  const std::string dir = services_dir + "/" + def.name;
  std::error_code ec;
  fs::create_directories(services_dir, ec);
  if (fs::exists(dir + "/service.conf")) {
    return Status::AlreadyExists("service " + def.name + " already exists in " + services_dir);
  }
  const std::string tmp = services_dir + "/." + def.name + ".new";
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return Status::IOError("create " + tmp + ": " + ec.message());
  fs::copy_file(kernel, tmp + "/kernel", ec);
  if (ec) return Status::InvalidArgument("cannot copy kernel " + kernel + ": " + ec.message());
  if (!initrd.empty()) {
    fs::copy_file(initrd, tmp + "/initrd", ec);
    if (ec) return Status::InvalidArgument("cannot copy initrd " + initrd + ": " + ec.message());
  }
  ServiceDef d = def;
  if (!d.disk_image.empty()) d.disk_image = fs::absolute(d.disk_image).string();
  SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/service.conf", AsBytes(d.Encode())));
  // The folder appears whole or not at all: the daemon never sees half a service.
  fs::rename(tmp, dir, ec);
  if (ec) return Status::IOError("rename " + tmp + " to " + dir + ": " + ec.message());
  return Status::OK();
}

// One service folder and its primary (core/replica/primary.h).
struct Service {
  ServiceDef def;
  std::string dir;
  std::thread runner;
  std::unique_ptr<Primary> primary;  // set before runner starts
  // The device (client certificate CN) whose proxy holds the service: the
  // one whose log the primary's inputs come from. Kept in DIR/holder.
  Mutex hold_mu;
  std::string holder GUARDED_BY(hold_mu);
  // Its RAM working set is still to be recorded (ram_rehearsal.h); off for
  // good once it cannot be here.
  std::atomic<bool> rehearse{false};
  bool rehearsal_unsupported = false;  // the runner's
};

// How long a holder has to send what it logged and leave when another
// device takes its service over.
constexpr int kHandOverMs = 10000;

struct HomeServer::Impl final : public RequestHandler {
  ChunkStore* store = nullptr;
  SigningKey key;
  CertificateAuthority ca;
  TlsCredentials creds;
  HomeOptions options;
  std::unique_ptr<Hypervisor> hv;
  std::unique_ptr<Server> server;
  std::unique_ptr<ChunkService> chunks;
  std::unique_ptr<CheckpointScope> scope;
  std::thread manager;

  Mutex mu;
  CondVar cv;
  bool stopping GUARDED_BY(mu) = false;
  // Publishing (checkpoints, boot-file refs) holds it shared; garbage
  // collection exclusive (gc.h: no ref may be set while it runs).
  std::shared_mutex publish_mu;
  std::atomic<uint64_t> checkpoints_since_gc{0};
  Clock::time_point last_gc = Clock::now();
  std::map<std::string, std::shared_ptr<Service>> services GUARDED_BY(mu);

  Impl(SigningKey k, CertificateAuthority c) : key(std::move(k)), ca(std::move(c)) {}

  bool Stopping() {
    MutexLock l(&mu);
    return stopping;
  }
  // Sleeps up to ms; false once stopping.
  bool Nap(int ms) {
    MutexLock l(&mu);
    if (!stopping) cv.WaitFor(&mu, std::chrono::milliseconds(ms));
    return !stopping;
  }

  std::shared_ptr<Service> Find(const std::string& name) {
    MutexLock l(&mu);
    auto it = services.find(name);
    return it == services.end() ? nullptr : it->second;
  }

  // --- the chunk store side of a service ---

  Result<ChunkId> RefOrStore(const std::string& ref, ObjectKind kind, const std::function<Result<ChunkId>()>& make) {
    auto r = store->GetRef(ref);
    if (r.ok()) return r->object;
    if (!r.status().IsNotFound()) return r.status();
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkId id, make());
    SLINGSHOT_RETURN_IF_ERROR(store->SetRef(Ref{ref, kind, id}));
    return id;
  }

  // The boot files go into the store (once) and into every manifest.
  Status ImportBoot(const Service& svc, Manifest* m) {
    SLINGSHOT_ASSIGN_OR_RETURN(m->kernel, RefOrStore("boot/" + svc.def.name + "/kernel", ObjectKind::kChunkList,
                                                     [&] { return StoreFile(svc.dir + "/kernel", store); }));
    m->kernel_size = fs::file_size(svc.dir + "/kernel");
    if (fs::exists(svc.dir + "/initrd")) {
      SLINGSHOT_ASSIGN_OR_RETURN(m->initrd, RefOrStore("boot/" + svc.def.name + "/initrd", ObjectKind::kChunkList,
                                                       [&] { return StoreFile(svc.dir + "/initrd", store); }));
      m->initrd_size = fs::file_size(svc.dir + "/initrd");
    }
    return Status::OK();
  }

  // The disk of a service's first boot: its image (or a blank one) imported.
  Result<DiskTable> ImportServiceDisk(const Service& svc) {
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkId id, RefOrStore("disk/" + svc.def.name, ObjectKind::kDiskTable, [&]() -> Result<ChunkId> {
      std::string image = svc.def.disk_image;
      std::string blank = svc.dir + "/blank.img";
      if (image.empty()) {
        UniqueFd fd(::open(blank.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(svc.def.disk_size_mb << 20)) != 0) {
          return Status::FromErrno("create " + blank, errno);
        }
        image = blank;
      }
      SLINGSHOT_ASSIGN_OR_RETURN(DiskImport imp, ImportDisk(image, store));
      std::error_code ec;
      fs::remove(blank, ec);
      LogInfo("service " + svc.def.name + ": imported its disk " + image + " (" + HumanBytes(imp.stats.logical_bytes) + ")");
      return store->PutObject(imp.table.Encode());
    }));
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, store->GetObject(id));
    return DiskTable::Decode(b);
  }

  // Where this host reaches each of the service's guest ports, for operators.
  void PublishEndpoints(const Service& svc) {
    std::string text;
    std::vector<uint16_t> ports{svc.def.service_port};
    ports.insert(ports.end(), svc.def.extra_ports.begin(), svc.def.extra_ports.end());
    for (uint16_t port : ports) {
      auto ep = hv->ServiceEndpoint(svc.def.name, port);
      if (ep.ok()) text += std::to_string(port) + " " + ep->ToString() + "\n";
    }
    Status st = WriteFileAtomic(svc.dir + "/endpoints", AsBytes(text));
    if (!st.ok()) LogWarning("service " + svc.def.name + ": " + st.message());
  }

  Result<std::unique_ptr<Primary>> MakePrimary(const std::shared_ptr<Service>& svc) {
    PrimaryOptions o;
    Manifest& m = o.base;
    m.service_id = svc->def.name;
    m.service_type = svc->def.type;
    m.service_port = svc->def.service_port;
    m.vm = VmConfig{svc->def.memory_mib, svc->def.vcpus, svc->def.cmdline, hv->StreamFormat(), ""};
    m.state_on_disk = svc->def.state_on_disk;
    SLINGSHOT_RETURN_IF_ERROR(ImportBoot(*svc, &m));
    o.kernel = svc->dir + "/kernel";
    if (fs::exists(svc->dir + "/initrd")) o.initrd = svc->dir + "/initrd";
    o.run_dir = svc->dir + "/run";
    o.extra_ports = svc->def.extra_ports;
    Service* raw = svc.get();
    o.first_disk = [this, raw] { return ImportServiceDisk(*raw); };
    o.store = store;
    o.key = &key;
    o.checkpoint_inputs = options.checkpoint_inputs;
    o.checkpoint_interval = std::chrono::seconds(options.checkpoint_seconds);
    o.boot_timeout_ms = options.boot_timeout_ms;
    o.on_up = [this, raw](const LiveReplica&) { PublishEndpoints(*raw); };
    o.on_checkpoint = [this, raw](const CheckpointResult& r) {
      Status rec = RecordCheckpoint(store, raw->def.name, r.manifest.epoch, r.manifest_id);
      if (!rec.ok()) LogWarning("service " + raw->def.name + ": " + rec.message());
      ++checkpoints_since_gc;
      if (options.record_ram_working_set && r.ram_apart) raw->rehearse = true;
      Status st = WriteFileAtomic(raw->dir + "/status", AsBytes("epoch " + std::to_string(r.manifest.epoch) + " seq " +
                                                                std::to_string(r.manifest.last_seq) + "\n"));
      if (!st.ok()) LogWarning("service " + raw->def.name + ": " + st.message());
    };
    return std::make_unique<Primary>(*hv, std::move(o));
  }

  // Keeps one service's primary up and checkpointed until the home stops.
  void Run(std::shared_ptr<Service> svc) {
    int backoff_ms = 1000;
    while (!Stopping()) {
      Status s;
      {
        std::shared_lock publishing(publish_mu);
        s = svc->primary->Step(Clock::now());
      }
      if (!s.ok()) {
        LogError("service " + svc->def.name + ": " + s.message() + "; trying again in " +
                 std::to_string(backoff_ms / 1000) + " s");
        if (!Nap(backoff_ms)) break;
        backoff_ms = std::min(backoff_ms * 2, 60000);
        continue;
      }
      backoff_ms = 1000;
      if (svc->rehearse.exchange(false) && !svc->rehearsal_unsupported) Rehearse(*svc);
      if (!Nap(200)) break;
    }
    svc->primary->TearDown();
  }

  // Records the RAM working set of svc's published checkpoint, if it has
  // none (ram_rehearsal.h). The primary runs on meanwhile; only its next
  // checkpoint waits.
  void Rehearse(Service& svc) {
    std::shared_lock publishing(publish_mu);  // GC must not take the checkpoint away meanwhile
    if (!RamWorkingSetMissing(store, svc.def.name)) return;
    RamRehearsalOptions o;
    o.service = svc.def.name;
    o.manifest_key = key.public_key();
    o.dir = svc.dir + "/rehearsal";
    o.connect_ms = options.boot_timeout_ms;
    const auto start = Clock::now();
    auto n = RecordRamWorkingSet(*hv, store, o);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    if (n.ok()) {
      if (*n) {
        LogInfo("service " + svc.def.name + ": recorded the order a restored guest reads its RAM in (" +
                std::to_string(*n) + " chunks, " + std::to_string(ms) + " ms), for its first replica to prefetch");
      }
    } else if (n.status().code() == Status::Code::kUnsupported) {
      svc.rehearsal_unsupported = true;
      LogWarning("service " + svc.def.name + ": " + n.status().message() +
                 "; its first replica prefetches its RAM by offset");
    } else {
      LogWarning("service " + svc.def.name + ": recording its RAM working set failed: " + n.status().ToString());
    }
  }

  void Manage() {
    do {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(options.services_dir, ec)) {
        std::string name = e.path().filename().string();
        if (name.empty() || name[0] == '.' || !fs::exists(e.path() / "service.conf")) continue;
        {
          MutexLock l(&mu);
          if (services.count(name) || stopping) continue;
        }
        auto def = ServiceDef::Decode(ReadText((e.path() / "service.conf").string()));
        if (!def.ok()) {
          LogError("service folder " + e.path().string() + ": " + def.status().message());
          continue;
        }
        auto svc = std::make_shared<Service>();
        svc->def = *def;
        svc->dir = e.path().string();
        if (svc->def.owner.empty()) {
          LogError("service " + name + " has no owner, so no client may use it: add a line owner=USER to " +
                   svc->dir + "/service.conf (USER: the user its devices were paired as)");
        }
        {
          std::string h = ReadText(svc->dir + "/holder");
          while (!h.empty() && (h.back() == '\n' || h.back() == ' ')) h.pop_back();
          MutexLock hl(&svc->hold_mu);
          svc->holder = h;
        }
        Result<std::unique_ptr<Primary>> primary = Status::Unavailable("not made");
        {
          std::shared_lock publishing(publish_mu);  // it stores the boot files
          primary = MakePrimary(svc);
        }
        if (!primary.ok()) {
          LogError("service " + name + ": " + primary.status().message());
          continue;
        }
        svc->primary = std::move(*primary);
        MutexLock l(&mu);
        services[name] = svc;
        svc->runner = std::thread([this, svc] { Run(svc); });
      }
      MaybeCollectGarbage();
    } while (Nap(1000));
  }

  // Retention and garbage collection (retention.h), between checkpoints:
  // when checkpoints were published since the last run, at most every
  // gc_seconds.
  void MaybeCollectGarbage() {
    if (checkpoints_since_gc == 0 || Clock::now() - last_gc < std::chrono::seconds(options.gc_seconds)) return;
    std::unique_lock exclusive(publish_mu);
    checkpoints_since_gc = 0;
    last_gc = Clock::now();
    auto r = ApplyRetention(store, RetentionPolicy{options.keep_checkpoints}, scope->LiveManifests(std::time(nullptr)));
    if (!r.ok()) {
      LogError("garbage collection failed, nothing was swept: " + r.status().message() +
               "; run `slingshot-home store verify` with the daemon stopped");
      return;
    }
    LogInfo("store gc: kept " + std::to_string(r->kept_checkpoints) + " checkpoints, dropped " +
            std::to_string(r->dropped_checkpoints) + "; swept " + std::to_string(r->gc.swept_chunks) + " chunks and " +
            std::to_string(r->gc.swept_objects) + " objects; store " + HumanBytes(r->stored_bytes_before) + " -> " +
            HumanBytes(r->stored_bytes_after) + " in " + std::to_string(static_cast<int>(r->ms)) + " ms");
    exclusive.unlock();
    PublishUsage();
  }

  // Writes services/S/usage (what `service list` shows): the store's bytes
  // per service. Reads what the refs reach, so it runs where a checkpoint may
  // publish but nothing is swept.
  void PublishUsage() {
    std::shared_lock publishing(publish_mu);
    auto usage = MeasureUsage(store);
    if (!usage.ok()) {
      LogWarning("store usage per service: " + usage.status().message());
      return;
    }
    std::map<std::string, std::shared_ptr<Service>> now;
    {
      MutexLock l(&mu);
      now = services;
    }
    for (const auto& u : *usage) {
      auto it = now.find(u.service);
      if (it == now.end()) continue;
      Status st = WriteFileAtomic(it->second->dir + "/usage", AsBytes(DescribeUsage(u) + "\n"));
      if (!st.ok()) LogWarning("service " + u.service + ": " + st.message());
    }
  }

  // --- the TLS server ---

  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override {
    const PeerInfo& peer = c.peer();
    if (peer.role == Role::kClient) return HandleClient(c, request, std::move(m));
    if (peer.role == Role::kSurrogate) return HandleSurrogate(c, request, std::move(m));
    return Status::PermissionDenied(peer.Describe() + " has role \"" + RoleName(peer.role) +
                                    "\"; this home serves paired clients and surrogates with a capability");
  }

  // OK if the client's user owns svc.
  static Status CheckOwner(const PeerInfo& peer, const Service& svc) {
    if (svc.def.owner.empty()) {
      return Status::PermissionDenied("service " + svc.def.name + " has no owner at this home, so no client may use "
                                      "it: the home's operator must add owner=USER to its service.conf");
    }
    if (peer.user.empty()) {
      return Status::PermissionDenied(peer.Describe() + " has a certificate that names no user: pair it again");
    }
    if (peer.user != svc.def.owner) {
      return Status::PermissionDenied("service " + svc.def.name + " belongs to another user than " + peer.Describe() +
                                      " (user " + peer.user + ")");
    }
    return Status::OK();
  }

  // Makes c's device the holder of svc (see Service::holder). Another
  // device's hold is refused unless take_over; then the holder is handed
  // over (it sends what it logged and leaves), the home checkpoints, and c
  // starts from that checkpoint.
  Status TakeHold(Connection& c, Service& svc, bool take_over) {
    const std::string device = c.peer().common_name;
    std::string holder;
    {
      MutexLock l(&svc.hold_mu);
      holder = svc.holder;
    }
    if (holder == device) return Status::OK();
    if (!holder.empty() && !take_over) {
      return Status::AlreadyExists("service " + svc.def.name + " is held by device \"" + holder +
                                   "\": run `slingshot-client proxy " + svc.def.name +
                                   " --take-over` on this device to take it over (" + holder +
                                   "'s proxy then sends what it has and stops)");
    }
    if (!holder.empty()) {
      std::shared_ptr<ReplicaHost> host = svc.primary->host();
      LogInfo("service " + svc.def.name + ": device " + device + " takes it over from " + holder);
      if (host && !host->HandOver(device, kHandOverMs)) {
        LogWarning("service " + svc.def.name + ": " + holder +
                   " did not finish its hand-over; inputs it logged and had not sent are not applied here");
      }
      Result<CheckpointResult> r = Status::Unavailable("not taken");
      {
        std::shared_lock publishing(publish_mu);
        r = svc.primary->CheckpointNow();
      }
      SLINGSHOT_ASSIGN_OR_RETURN(CheckpointResult ck, std::move(r));
      LogInfo("service " + svc.def.name + ": the hand-over checkpoint covers seq " + std::to_string(ck.manifest.last_seq));
    }
    SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(svc.dir + "/holder", AsBytes(device + "\n")));
    MutexLock l(&svc.hold_mu);
    svc.holder = device;
    return Status::OK();
  }

  // A paired client reads (stick sync) only what refs of its own services
  // reach, and refs that belong to no service (the operator's, e.g. store
  // import-disk): a ref names its service by its second part ("disk/S",
  // "manifest/S", "boot/S/kernel"). A working set's ref is readable once its
  // table is in the client's scope. Grants are keyed by the certificate.
  static Capability ClientScope(const PeerInfo& peer) {
    return Capability{"(" + peer.user + "'s services)", peer.common_name, peer.not_after, "client:" + peer.fingerprint};
  }
  Status MayReadRef(const PeerInfo& peer, const std::string& name, int64_t now) {
    constexpr std::string_view kWorkingSet = "working-set/";
    if (name.rfind(kWorkingSet, 0) == 0) {
      auto table = ChunkId::FromHex(name.substr(kWorkingSet.size()));
      if (!table.ok()) return Status::NotFound("no ref named '" + name + "'");
      return scope->Check(ClientScope(peer), {*table}, now);
    }
    size_t a = name.find('/');
    if (a == std::string::npos) return Status::OK();
    size_t b = name.find('/', a + 1);
    std::string service = name.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    auto svc = Find(service);
    if (!svc) return Status::OK();
    return CheckOwner(peer, *svc).Annotate("ref " + name);
  }

  Status HandleClient(Connection& c, uint32_t request, wire::Message&& m) {
    if (auto* a = std::get_if<wire::Attach>(&m)) {
      auto p = Find(a->service);
      if (!p) return Status::NotFound("this home runs no service \"" + a->service + "\"");
      SLINGSHOT_RETURN_IF_ERROR(CheckOwner(c.peer(), *p));
      SLINGSHOT_RETURN_IF_ERROR(TakeHold(c, *p, a->take_over));
      std::shared_ptr<ReplicaHost> host = p->primary->host();  // waits out a checkpoint or bring-up
      if (!host) return Status::Unavailable("service " + a->service + " is starting; try again shortly");
      Status end = host->Serve(c);
      LogInfo(c.peer().Describe() + " left " + a->service + ": " + (end.ok() ? "it said so" : end.message()));
      return Status::OK();
    }
    if (auto* g = std::get_if<wire::GetCapability>(&m)) {
      auto p = Find(g->service);
      if (!p) return Status::NotFound("this home runs no service \"" + g->service + "\"");
      SLINGSHOT_RETURN_IF_ERROR(CheckOwner(c.peer(), *p));
      int64_t ttl = std::clamp<int64_t>(g->valid_seconds == 0 ? 600 : g->valid_seconds, 30,
                                        options.capability_max_seconds);
      SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials cap,
                                 ca.IssueCapability(Capability{g->service, c.peer().common_name, 0, ""}, ttl));
      SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(cap.cert_pem));
      LogInfo("issued a capability for " + g->service + " to " + c.peer().Describe() + " (certificate " +
              info.fingerprint + ", " + std::to_string(ttl) + " s)");
      wire::Capability reply{g->service, cap.cert_pem, cap.key_pem, info.not_after, {}};
      // The current manifest comes along, granted to the capability as if
      // its holder had asked: the surrogate starts without that round trip.
      // Without it (no checkpoint yet, say) the surrogate asks, as before.
      Capability granted{g->service, c.peer().common_name, info.not_after, info.fingerprint};
      if (auto ref = scope->GrantCurrent(granted, std::time(nullptr)); ref.ok()) {
        auto m = store->GetObject(ref->object);
        if (m.ok() && m->size() <= wire::kMaxCarriedManifest) reply.signed_manifest = std::move(*m);
      }
      return c.Send(request, reply);
    }
    // Reads: see MayReadRef.
    const int64_t now = std::time(nullptr);
    if (auto* r = std::get_if<wire::GetRef>(&m)) {
      Status may = MayReadRef(c.peer(), r->name, now);
      if (!may.ok()) {
        LogWarning("refused " + c.peer().Describe() + ": " + may.message());
        return may;
      }
      SLINGSHOT_ASSIGN_OR_RETURN(Ref ref, scope->GrantRef(ClientScope(c.peer()), r->name, now));
      return c.Send(request, wire::RefData{ref.name, static_cast<uint8_t>(ref.kind), ref.object});
    }
    std::vector<ChunkId> ids;
    if (auto* g = std::get_if<wire::GetChunks>(&m)) ids = g->ids;
    else if (auto* o = std::get_if<wire::GetObject>(&m)) ids = {o->id};
    else if (auto* w = std::get_if<wire::GetWorkingSet>(&m)) ids = {w->table};
    else if (std::holds_alternative<wire::PutWorkingSet>(m)) {
      return Status::PermissionDenied("a client does not record working sets; its surrogates do");
    } else return chunks->Handle(c, request, std::move(m));  // refuses what it does not serve
    Status allowed = scope->Check(ClientScope(c.peer()), ids, now);
    if (!allowed.ok()) {
      LogWarning("refused " + c.peer().Describe() + ": " + allowed.message());
      return allowed;
    }
    return chunks->Handle(c, request, std::move(m));
  }

  // A surrogate holds a capability (capability.h): it may read its
  // service's current manifest and what the manifests it was given reach.
  Status HandleSurrogate(Connection& c, uint32_t request, wire::Message&& m) {
    auto info = InspectCertificate(c.peer().cert_pem);
    auto cap = info.ok() ? CapabilityOf(*info) : Result<Capability>(info.status());
    if (!cap.ok()) {
      return Status::PermissionDenied(c.peer().Describe() +
                                      " holds no capability: a surrogate fetches a service only with a "
                                      "capability the home issued to a paired client (" + cap.status().message() + ")");
    }
    const int64_t now = std::time(nullptr);
    if (auto* r = std::get_if<wire::GetRef>(&m)) {
      if (r->name != "manifest/" + cap->service) {
        return Status::PermissionDenied("the capability of " + c.peer().Describe() + " is for service " +
                                        cap->service + ", not for " + r->name);
      }
      SLINGSHOT_ASSIGN_OR_RETURN(Ref ref, scope->GrantCurrent(*cap, now));
      return c.Send(request, wire::RefData{ref.name, static_cast<uint8_t>(ref.kind), ref.object});
    }
    std::vector<ChunkId> ids;
    if (auto* g = std::get_if<wire::GetChunks>(&m)) ids = g->ids;
    else if (auto* o = std::get_if<wire::GetObject>(&m)) ids = {o->id};
    else if (auto* w = std::get_if<wire::GetWorkingSet>(&m)) ids = {w->table};
    else if (auto* p = std::get_if<wire::PutWorkingSet>(&m)) ids = {p->table};  // its ids: ChunkService checks
    else {
      return Status::PermissionDenied(std::string("a surrogate may not send ") +
                                      wire::MessageTypeName(wire::TypeOf(m)));
    }
    Status allowed = scope->Check(*cap, ids, now);
    if (!allowed.ok()) {
      LogWarning("refused " + c.peer().Describe() + ": " + allowed.message());
      return allowed;
    }
    return chunks->Handle(c, request, std::move(m));
  }
};

HomeServer::HomeServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HomeServer::~HomeServer() { Stop(); }

Result<std::unique_ptr<HomeServer>> HomeServer::Start(ChunkStore* store, SigningKey key, CertificateAuthority ca,
                                                      TlsCredentials creds, HomeOptions options) {
  auto impl = std::make_unique<Impl>(std::move(key), std::move(ca));
  impl->store = store;
  impl->creds = std::move(creds);
  impl->options = std::move(options);
  std::error_code ec;
  fs::create_directories(impl->options.services_dir, ec);
  if (ec) return Status::IOError("create " + impl->options.services_dir + ": " + ec.message());
  SLINGSHOT_ASSIGN_OR_RETURN(impl->hv, OpenHypervisor(impl->options.hypervisor));
  impl->chunks = std::make_unique<ChunkService>(store);
  impl->scope = std::make_unique<CheckpointScope>(store);
  Impl* raw = impl.get();
  impl->hv->OnDeath([raw](const std::string& name, const std::string& why) {
    LogWarning("VM " + name + " died: " + why);
    if (auto svc = raw->Find(name)) svc->primary->MarkDead();
  });
  ServerOptions so;
  so.host = impl->options.listen_host;
  so.port = impl->options.listen_port;
  so.software = "slingshot-home";
  SLINGSHOT_ASSIGN_OR_RETURN(impl->server, Server::Start(impl->creds, so, raw));
  impl->manager = std::thread([raw] { raw->Manage(); });
  return std::unique_ptr<HomeServer>(new HomeServer(std::move(impl)));
}

uint16_t HomeServer::port() const { return impl_->server ? impl_->server->port() : 0; }

void HomeServer::Stop() {
  if (!impl_) return;
  {
    MutexLock l(&impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
    impl_->cv.SignalAll();
  }
  if (impl_->manager.joinable()) impl_->manager.join();
  if (impl_->server) impl_->server->Stop();
  std::map<std::string, std::shared_ptr<Service>> all;
  {
    MutexLock l(&impl_->mu);
    all = impl_->services;
  }
  for (auto& [name, p] : all) {
    if (p->runner.joinable()) p->runner.join();
  }
}

}  // namespace slingshot
