#include "home_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include "slingshot/net/chunk_service.h"
#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/base/coding.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/base/mutex.h"
#include "slingshot/disk/nbd_server.h"
#include "slingshot/replica/replica_host.h"
#include "slingshot/net/transport.h"
#include "slingshot/store/working_set.h"

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

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "service=S;client=C" -> value of key.
std::string ScopeValue(const std::string& scope, const std::string& key) {
  std::stringstream ss(scope);
  std::string part;
  while (std::getline(ss, part, ';')) {
    if (part.rfind(key + "=", 0) == 0) return part.substr(key.size() + 1);
  }
  return "";
}

}  // namespace

std::string ServiceDef::Encode() const {
  std::string s = "# written by slingshot-home service create\n";
  s += "name=" + name + "\ntype=" + type + "\ncmdline=" + cmdline + "\n";
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

// One service's primary replica and its incarnation (VM, disk, session host).
struct Primary {
  ServiceDef def;
  std::string dir;
  std::thread runner;
  std::atomic<bool> dead{false};

  Mutex mu;  // the incarnation below; held across bring-up and checkpoints
  std::shared_ptr<ReplicaHost> host GUARDED_BY(mu);
  std::unique_ptr<NbdServer> nbd GUARDED_BY(mu);
  ChunkTableExport* disk GUARDED_BY(mu) = nullptr;
  Endpoint service_ep GUARDED_BY(mu);
  ChunkId kernel, initrd;
  uint64_t kernel_size = 0, initrd_size = 0;
  uint64_t epoch GUARDED_BY(mu) = 0;
  uint64_t checkpoint_seq GUARDED_BY(mu) = 0;
  Clock::time_point checkpoint_time GUARDED_BY(mu) = Clock::now();
};

struct HomeServer::Impl final : public RequestHandler {
  ChunkStore* store = nullptr;
  SigningKey key;
  CertificateAuthority ca;
  TlsCredentials creds;
  HomeOptions options;
  std::unique_ptr<Hypervisor> hv;
  std::unique_ptr<Server> server;
  std::unique_ptr<ChunkService> chunks;
  std::thread manager;

  Mutex mu;
  CondVar cv;
  bool stopping GUARDED_BY(mu) = false;
  std::map<std::string, std::shared_ptr<Primary>> primaries GUARDED_BY(mu);

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

  std::shared_ptr<Primary> Find(const std::string& name) {
    MutexLock l(&mu);
    auto it = primaries.find(name);
    return it == primaries.end() ? nullptr : it->second;
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

  Status ImportBoot(Primary& p) {
    SLINGSHOT_ASSIGN_OR_RETURN(p.kernel, RefOrStore("boot/" + p.def.name + "/kernel", ObjectKind::kChunkList,
                                                    [&] { return StoreFile(p.dir + "/kernel", store); }));
    p.kernel_size = fs::file_size(p.dir + "/kernel");
    if (fs::exists(p.dir + "/initrd")) {
      SLINGSHOT_ASSIGN_OR_RETURN(p.initrd, RefOrStore("boot/" + p.def.name + "/initrd", ObjectKind::kChunkList,
                                                      [&] { return StoreFile(p.dir + "/initrd", store); }));
      p.initrd_size = fs::file_size(p.dir + "/initrd");
    }
    return Status::OK();
  }

  Result<DiskTable> ImportServiceDisk(Primary& p) {
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkId id, RefOrStore("disk/" + p.def.name, ObjectKind::kDiskTable, [&]() -> Result<ChunkId> {
      std::string image = p.def.disk_image;
      std::string blank = p.dir + "/blank.img";
      if (image.empty()) {
        UniqueFd fd(::open(blank.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(p.def.disk_size_mb << 20)) != 0) {
          return Status::FromErrno("create " + blank, errno);
        }
        image = blank;
      }
      SLINGSHOT_ASSIGN_OR_RETURN(DiskImport imp, ImportDisk(image, store));
      std::error_code ec;
      fs::remove(blank, ec);
      LogInfo("service " + p.def.name + ": imported its disk " + image + " (" + HumanBytes(imp.stats.logical_bytes) + ")");
      return store->PutObject(imp.table.Encode());
    }));
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, store->GetObject(id));
    return DiskTable::Decode(b);
  }

  // --- an incarnation ---

  VmSpec Spec(const Primary& p) {
    VmSpec s;
    s.name = p.def.name;
    s.kernel = p.dir + "/kernel";
    if (fs::exists(p.dir + "/initrd")) s.initrd = p.dir + "/initrd";
    s.cmdline = p.def.cmdline;
    s.memory_mib = p.def.memory_mib;
    s.vcpus = p.def.vcpus;
    s.disk = NbdDisk{p.dir + "/run/disk.sock", "", 0, "disk", false};
    s.service_ports.push_back(p.def.service_port);
    for (uint16_t x : p.def.extra_ports) s.service_ports.push_back(x);
    s.run_dir = p.dir + "/run/vm";
    return s;
  }

  Status StartDisk(Primary& p, const DiskTable& table) REQUIRES(p.mu) {
    std::error_code ec;
    fs::create_directories(p.dir + "/run", ec);
    fs::remove(p.dir + "/run/disk.sock", ec);
    SLINGSHOT_ASSIGN_OR_RETURN(auto exp, ChunkTableExport::Open(table, store, p.dir + "/run/overlay"));
    p.disk = exp.get();
    p.nbd = std::make_unique<NbdServer>();
    SLINGSHOT_RETURN_IF_ERROR(p.nbd->AddExport("disk", std::shared_ptr<BlockExport>(std::move(exp)), p.def.name));
    SLINGSHOT_RETURN_IF_ERROR(p.nbd->ListenUnix(p.dir + "/run/disk.sock"));
    return p.nbd->Start();
  }

  Status Publish(Primary& p) REQUIRES(p.mu) {
    std::string text;
    for (uint16_t port : Spec(p).service_ports) {
      auto ep = hv->ServiceEndpoint(p.def.name, port);
      if (ep.ok()) text += std::to_string(port) + " " + ep->host + ":" + std::to_string(ep->port) + "\n";
    }
    SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(p.dir + "/endpoints", AsBytes(text)));
    SLINGSHOT_ASSIGN_OR_RETURN(p.service_ep, hv->ServiceEndpoint(p.def.name, p.def.service_port));
    return Status::OK();
  }

  Status ColdBoot(Primary& p) REQUIRES(p.mu) {
    SLINGSHOT_ASSIGN_OR_RETURN(DiskTable table, ImportServiceDisk(p));
    SLINGSHOT_RETURN_IF_ERROR(StartDisk(p, table));
    SLINGSHOT_RETURN_IF_ERROR(hv->Boot(Spec(p)));
    SLINGSHOT_RETURN_IF_ERROR(Publish(p));
    p.host = std::make_shared<ReplicaHost>(p.def.name, p.def.type, "home");
    SLINGSHOT_RETURN_IF_ERROR(p.host->Connect(p.service_ep, 0, options.boot_timeout_ms));
    p.epoch = 0;
    p.checkpoint_seq = 0;
    LogInfo("service " + p.def.name + ": booted; taking its first checkpoint");
    return CheckpointLocked(p);
  }

  Status Restore(Primary& p, const Ref& ref) REQUIRES(p.mu) {
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes signed_manifest, store->GetObject(ref.object));
    SLINGSHOT_ASSIGN_OR_RETURN(Manifest m, VerifyManifest(signed_manifest, key.public_key()));
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes tb, store->GetObject(m.disk_table));
    SLINGSHOT_ASSIGN_OR_RETURN(DiskTable table, DiskTable::Decode(tb));
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes lb, store->GetObject(m.memory_list));
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkList memory, ChunkList::Decode(lb));
    SLINGSHOT_RETURN_IF_ERROR(StartDisk(p, table));
    auto r = hv->Restore(Spec(p), [&](const ByteSink& sink) { return ReadMemoryImage(memory, store, sink); });
    SLINGSHOT_RETURN_IF_ERROR(r.status());
    SLINGSHOT_RETURN_IF_ERROR(Publish(p));
    p.host = std::make_shared<ReplicaHost>(p.def.name, p.def.type, "home");
    SLINGSHOT_RETURN_IF_ERROR(p.host->Connect(p.service_ep, m.last_seq, 60000));
    p.epoch = m.epoch;
    p.checkpoint_seq = m.last_seq;
    p.checkpoint_time = Clock::now();
    LogInfo("service " + p.def.name + ": restored from checkpoint epoch " + std::to_string(m.epoch) + " (seq " +
            std::to_string(m.last_seq) + ") in " + std::to_string(static_cast<int>(r->total_ms)) + " ms");
    return Status::OK();
  }

  Status CheckpointLocked(Primary& p) REQUIRES(p.mu) {
    auto start = Clock::now();
    SLINGSHOT_ASSIGN_OR_RETURN(uint64_t seq, p.host->Quiesce(30000));
    MemoryImageWriter writer(store, ChunkerOptions{});
    auto ck = hv->Checkpoint(p.def.name, [&](ByteView b) { return writer.Write(b); }, true);
    Result<ChunkList> memory = ck.ok() ? writer.Finish() : Result<ChunkList>(ck.status());
    Result<DiskTable> table = memory.ok() ? p.disk->Freeze(store) : Result<DiskTable>(memory.status());
    // The VM runs on whatever happened; reconnect before anything else.
    Status resumed = p.host->Resume(p.service_ep, 30000);
    SLINGSHOT_RETURN_IF_ERROR(table.status().Annotate("checkpoint of " + p.def.name));
    SLINGSHOT_RETURN_IF_ERROR(resumed);
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkId memory_id, store->PutObject(memory->Encode()));
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkId table_id, store->PutObject(table->Encode()));
    std::vector<ChunkId> first = p.disk->FirstReads();
    if (!first.empty()) SLINGSHOT_RETURN_IF_ERROR(SaveWorkingSet(store, WorkingSetRecord{table_id, std::move(first)}));

    Manifest m;
    m.service_id = p.def.name;
    m.service_type = p.def.type;
    m.epoch = p.epoch + 1;
    m.last_seq = seq;
    m.created_ns = NowNs();
    m.vm = VmConfig{p.def.memory_mib, p.def.vcpus, p.def.cmdline, hv->StreamFormat(), ""};
    m.state_on_disk = p.def.state_on_disk;
    m.disk_table = table_id;
    m.disk_size = table->image_size;
    m.memory_list = memory_id;
    m.memory_size = memory->total_size;
    m.kernel = p.kernel;
    m.kernel_size = p.kernel_size;
    m.initrd = p.initrd;
    m.initrd_size = p.initrd_size;
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkId mid, store->PutObject(SignManifest(m, key)));
    SLINGSHOT_RETURN_IF_ERROR(store->SetRef(Ref{"manifest/" + p.def.name, ObjectKind::kManifest, mid}));
    p.epoch = m.epoch;
    p.checkpoint_seq = seq;
    p.checkpoint_time = Clock::now();
    SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(
        p.dir + "/status", AsBytes("epoch " + std::to_string(m.epoch) + " seq " + std::to_string(seq) + "\n")));
    p.host->Broadcast(wire::Checkpointed{m.epoch, seq});
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    LogInfo("service " + p.def.name + ": checkpoint epoch " + std::to_string(m.epoch) + " covers seq " +
            std::to_string(seq) + " (" + HumanBytes(memory->total_size) + " memory, guest paused " +
            std::to_string(static_cast<int>(ck->pause_ms)) + " ms, " + std::to_string(static_cast<int>(ms)) + " ms in all)");
    return Status::OK();
  }

  void TearDown(Primary& p) REQUIRES(p.mu) {
    if (p.host) p.host->Shutdown();
    (void)hv->Destroy(p.def.name);
    if (p.nbd) p.nbd->Stop();
    p.nbd.reset();
    p.disk = nullptr;
  }

  Status BringUp(Primary& p) {
    MutexLock l(&p.mu);
    SLINGSHOT_RETURN_IF_ERROR(ImportBoot(p));
    auto ref = store->GetRef("manifest/" + p.def.name);
    if (ref.ok()) return Restore(p, *ref);
    if (!ref.status().IsNotFound()) return ref.status();
    return ColdBoot(p);
  }

  void Run(std::shared_ptr<Primary> p) {
    int backoff_ms = 1000;
    bool up = false;
    while (!Stopping()) {
      if (!up || p->dead) {
        if (p->dead) {
          LogWarning("service " + p->def.name + ": its VM died; restoring it from the last checkpoint");
          MutexLock l(&p->mu);
          TearDown(*p);
        }
        p->dead = false;
        Status s = BringUp(*p);
        if (!s.ok()) {
          LogError("service " + p->def.name + ": " + s.message() + "; retrying in " + std::to_string(backoff_ms / 1000) + " s");
          {
            MutexLock l(&p->mu);
            TearDown(*p);
          }
          if (!Nap(backoff_ms)) break;
          backoff_ms = std::min(backoff_ms * 2, 60000);
          continue;
        }
        up = true;
        backoff_ms = 1000;
      }
      if (!Nap(200)) break;
      MutexLock l(&p->mu);
      if (!p->host || p->dead) continue;
      uint64_t applied = p->host->applied();
      bool due = applied >= p->checkpoint_seq + options.checkpoint_inputs ||
                 (applied > p->checkpoint_seq &&
                  Clock::now() - p->checkpoint_time >= std::chrono::seconds(options.checkpoint_seconds));
      if (due) {
        Status s = CheckpointLocked(*p);
        if (!s.ok()) {
          LogError("service " + p->def.name + ": checkpoint failed: " + s.message());
          p->checkpoint_time = Clock::now();  // not again at once
        }
      }
    }
    MutexLock l(&p->mu);
    TearDown(*p);
  }

  void Manage() {
    do {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(options.services_dir, ec)) {
        std::string name = e.path().filename().string();
        if (name.empty() || name[0] == '.' || !fs::exists(e.path() / "service.conf")) continue;
        {
          MutexLock l(&mu);
          if (primaries.count(name) || stopping) continue;
        }
        auto def = ServiceDef::Decode(ReadText((e.path() / "service.conf").string()));
        if (!def.ok()) {
          LogError("service folder " + e.path().string() + ": " + def.status().message());
          continue;
        }
        auto p = std::make_shared<Primary>();
        p->def = *def;
        p->dir = e.path().string();
        MutexLock l(&mu);
        primaries[name] = p;
        p->runner = std::thread([this, p] { Run(p); });
      }
    } while (Nap(1000));
  }

  // --- the TLS server ---

  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override {
    const PeerInfo& peer = c.peer();
    if (peer.role == "client") return HandleClient(c, request, std::move(m));
    if (peer.role == "surrogate") return HandleSurrogate(c, request, std::move(m));
    return Status::PermissionDenied(peer.Describe() + " has role \"" + peer.role +
                                    "\"; this home serves paired clients and surrogates with a capability");
  }

  Status HandleClient(Connection& c, uint32_t request, wire::Message&& m) {
    if (auto* a = std::get_if<wire::Attach>(&m)) {
      auto p = Find(a->service);
      if (!p) return Status::NotFound("this home runs no service \"" + a->service + "\"");
      std::shared_ptr<ReplicaHost> host;
      {
        MutexLock l(&p->mu);  // waits out a checkpoint or bring-up in progress
        host = p->host;
      }
      if (!host) return Status::Unavailable("service " + a->service + " is starting; try again shortly");
      Status end = host->Serve(c);
      LogInfo(c.peer().Describe() + " left " + a->service + ": " + end.message());
      return Status::OK();
    }
    if (auto* g = std::get_if<wire::GetCapability>(&m)) {
      if (!Find(g->service)) return Status::NotFound("this home runs no service \"" + g->service + "\"");
      int64_t ttl = std::clamp<int64_t>(g->valid_seconds == 0 ? 600 : g->valid_seconds, 30,
                                        options.capability_max_seconds);
      SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials cap,
                                 ca.Issue(c.peer().common_name, "surrogate", ttl,
                                          "service=" + g->service + ";client=" + c.peer().common_name));
      SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(cap.cert_pem));
      LogInfo("issued a capability for " + g->service + " to " + c.peer().Describe() + " (certificate " +
              info.fingerprint + ", " + std::to_string(ttl) + " s)");
      return c.Send(request, wire::Capability{g->service, cap.cert_pem, cap.key_pem, info.not_after});
    }
    return chunks->Handle(c, request, std::move(m));
  }

  Status HandleSurrogate(Connection& c, uint32_t request, wire::Message&& m) {
    auto info = InspectCertificate(c.peer().cert_pem);
    std::string service = info.ok() ? ScopeValue(info->scope, "service") : "";
    if (service.empty()) {
      return Status::PermissionDenied(c.peer().Describe() +
                                      " holds no capability: a surrogate fetches a service only with a "
                                      "capability the home issued to a paired client");
    }
    if (auto* r = std::get_if<wire::GetRef>(&m); r && r->name != "manifest/" + service) {
      return Status::PermissionDenied("the capability of " + c.peer().Describe() + " is for service " + service +
                                      ", not for " + r->name);
    }
    if (std::holds_alternative<wire::GetChunks>(m) || std::holds_alternative<wire::GetObject>(m) ||
        std::holds_alternative<wire::GetRef>(m) || std::holds_alternative<wire::GetWorkingSet>(m)) {
      return chunks->Handle(c, request, std::move(m));
    }
    return Status::PermissionDenied(std::string("a surrogate may not send ") +
                                    wire::MessageTypeName(wire::TypeOf(m)));
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
  Impl* raw = impl.get();
  impl->hv->OnDeath([raw](const std::string& name, const std::string& why) {
    LogWarning("VM " + name + " died: " + why);
    if (auto p = raw->Find(name)) p->dead = true;
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
  std::map<std::string, std::shared_ptr<Primary>> all;
  {
    MutexLock l(&impl_->mu);
    all = impl_->primaries;
  }
  for (auto& [name, p] : all) {
    if (p->runner.joinable()) p->runner.join();
  }
}

}  // namespace slingshot
