#include "agent_server.h"

#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <list>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "slingshot/net/chunk_service.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/base/coding.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/base/keys.h"
#include "slingshot/base/log.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/base/mutex.h"
#include "slingshot/disk/nbd_server.h"
#include "slingshot/store/portable.h"
#include "slingshot/replica/replica_host.h"
#include "slingshot/net/tls.h"
#include "slingshot/net/transport.h"

namespace slingshot {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string ScopeValue(const std::string& scope, const std::string& key) {
  std::stringstream ss(scope);
  std::string part;
  while (std::getline(ss, part, ';')) {
    if (part.rfind(key + "=", 0) == 0) return part.substr(key.size() + 1);
  }
  return "";
}

}  // namespace

// One replica: its fetch chain, disk, VM and session host.
struct Replica {
  std::string id;  // VM name
  std::string service, client;
  std::string dir;
  int64_t expires = 0;
  std::unique_ptr<HomeSource> home;
  std::unique_ptr<PortableSource> stick;
  std::unique_ptr<FetchChain> chain;
  std::unique_ptr<NbdServer> nbd;
  std::unique_ptr<Prefetcher> prefetch;
  std::shared_ptr<ReplicaHost> host;
};

struct AgentServer::Impl final : public RequestHandler {
  AgentOptions options;
  TlsCredentials creds;
  std::string fingerprint;
  std::unique_ptr<ChunkStore> cache;
  std::unique_ptr<Hypervisor> hv;
  std::unique_ptr<Server> server;

  Mutex mu;
  std::set<std::string> used_capabilities GUARDED_BY(mu);  // fingerprints, until the agent stops
  std::list<std::shared_ptr<Replica>> replicas GUARDED_BY(mu);
  uint64_t next_id GUARDED_BY(mu) = 0;
  std::atomic<uint64_t> from_cache{0}, from_stick{0}, from_home{0};

  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override {
    if (auto* in = std::get_if<wire::Instantiate>(&m)) return Instantiate(c, request, *in);
    if (std::holds_alternative<wire::GetStatus>(m)) return c.Send(request, StatusReport());
    return Status::InvalidArgument(std::string("a surrogate agent does not take ") +
                                   wire::MessageTypeName(wire::TypeOf(m)));
  }

  wire::AgentStatus StatusReport() {
    wire::AgentStatus s;
    s.name = options.name;
    {
      MutexLock l(&mu);
      for (const auto& r : replicas) {
        s.replicas.push_back(wire::ReplicaStatus{r->service, r->client, r->host ? r->host->consumed() : 0, r->expires});
        if (!r->chain) continue;  // still being built
        FetchChainStats fs = r->chain->stats();  // live replicas' fetches so far
        for (size_t i = 0; i < fs.sources.size(); ++i) {
          (i + 1 == fs.sources.size() ? s.from_home : s.from_stick) += fs.sources[i].bytes;
        }
      }
    }
    auto st = cache->Stats();
    if (st.ok()) s.cache_bytes = st->stored_bytes;
    s.from_cache = from_cache;
    s.from_stick += from_stick;  // plus what replicas now gone fetched
    s.from_home += from_home;
    return s;
  }

  // Step 1: everything about the capability that can be checked here.
  Status CheckCapability(const Connection& c, const wire::Instantiate& in, CertificateInfo* cap) {
    SLINGSHOT_RETURN_IF_ERROR(VerifyCertificate(in.cert_pem, in.ca_pem, "the capability"));
    SLINGSHOT_ASSIGN_OR_RETURN(*cap, InspectCertificate(in.cert_pem));
    if (cap->role != "surrogate" || ScopeValue(cap->scope, "service").empty()) {
      return Status::PermissionDenied("the certificate offered as a capability is not one (role \"" + cap->role +
                                      "\", scope \"" + cap->scope + "\")");
    }
    if (ScopeValue(cap->scope, "service") != in.service) {
      return Status::PermissionDenied("the capability is for service " + ScopeValue(cap->scope, "service") +
                                      ", not " + in.service);
    }
    SLINGSHOT_RETURN_IF_ERROR(VerifyCertificate(c.peer().cert_pem, in.ca_pem, "the client's certificate"));
    if (ScopeValue(cap->scope, "client") != c.peer().common_name) {
      return Status::PermissionDenied("the capability was issued to client \"" + ScopeValue(cap->scope, "client") +
                                      "\", and this is \"" + c.peer().common_name + "\"");
    }
    if (in.manifest_key.size() != PublicKey::kRawSize) {
      return Status::InvalidArgument("the home's manifest key must be " + std::to_string(PublicKey::kRawSize) + " bytes");
    }
    MutexLock l(&mu);
    if (!used_capabilities.insert(cap->fingerprint).second) {
      return Status::PermissionDenied("capability " + cap->fingerprint +
                                      " was already used here: ask the home for a fresh one for each replica");
    }
    if (static_cast<int>(replicas.size()) >= options.max_replicas) {
      return Status::ResourceExhausted("this surrogate already runs " + std::to_string(replicas.size()) + " replicas");
    }
    return Status::OK();
  }

  void Report(Connection& c, uint32_t request, const std::string& phase, uint64_t done, uint64_t total,
              const Replica& r) {
    wire::Progress p{phase, done, total, 0, 0, 0};
    if (r.chain) {
      FetchChainStats s = r.chain->stats();
      for (size_t i = 0; i < s.sources.size(); ++i) {
        bool is_home = i + 1 == s.sources.size();
        (is_home ? p.from_home : p.from_stick) += s.sources[i].bytes;
      }
    }
    (void)c.Send(request, p, 10000);
  }

  Status Build(Connection& c, uint32_t request, const wire::Instantiate& in, Replica& r) {
    Report(c, request, "manifest", 0, 0, r);
    TlsCredentials cap{in.ca_pem, in.cert_pem, in.key_pem};
    SLINGSHOT_ASSIGN_OR_RETURN(r.home, HomeSource::Open(in.home_host, in.home_port, cap));
    SLINGSHOT_ASSIGN_OR_RETURN(Ref ref, r.home->GetRef("manifest/" + in.service));
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes signed_manifest, r.home->GetObject(ref.object));
    SLINGSHOT_ASSIGN_OR_RETURN(PublicKey key, PublicKey::FromRaw(in.manifest_key));
    auto verified = VerifyManifest(signed_manifest, key);
    if (!verified.ok()) return verified.status().Annotate("the home's manifest for " + in.service + " is refused");
    const Manifest& m = *verified;
    if (m.service_id != in.service) {
      return Status::Corruption("the manifest under manifest/" + in.service + " is for " + m.service_id);
    }
    if (m.kernel.IsNull()) return Status::Unsupported("the manifest carries no kernel (a version 1 manifest)");
    // A memory image restores only on a hypervisor of its own kind. A
    // service that keeps its state on its disk boots from the checkpoint's
    // disk instead ("cold"), and the log replay from last_seq brings it
    // current all the same.
    const bool foreign = m.vm.backend != hv->StreamFormat();
    const bool cold = foreign || (options.prefer_boot && m.state_on_disk);
    if (foreign && !m.state_on_disk) {
      return Status::Unsupported("the checkpoint of " + in.service + " holds a " + m.vm.backend +
                                 " memory image, which this surrogate's hypervisor (" + hv->Name() +
                                 ") cannot restore, and the service keeps state in memory (it was not created "
                                 "with --state-on-disk), so it cannot be booted from its disk either; use a "
                                 "surrogate whose hypervisor matches the home's");
    }

    std::vector<ChunkSource*> sources;
    if (!in.stick_dir.empty()) {
      auto p = PortableSource::Open(in.stick_dir);
      if (p.ok()) {
        r.stick = std::move(*p);
        sources.push_back(r.stick.get());
      } else {
        LogWarning("carrying on without the stick: " + p.status().ToString());
      }
    }
    sources.push_back(r.home.get());
    {
      MutexLock l(&mu);  // StatusReport reads it
      r.chain = std::make_unique<FetchChain>(cache.get(), sources);
    }

    // Memory (unless booting cold), kernel and initrd: every chunk, fetched
    // in bulk with progress.
    auto list_of = [&](const ChunkId& id) -> Result<ChunkList> {
      SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, r.home->GetObject(id));
      return ChunkList::Decode(b);
    };
    ChunkList memory;  // stays empty when booting cold: nothing of it is needed
    if (!cold) {
      SLINGSHOT_ASSIGN_OR_RETURN(memory, list_of(m.memory_list));
    }
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkList kernel, list_of(m.kernel));
    ChunkList initrd;
    if (!m.initrd.IsNull()) {
      SLINGSHOT_ASSIGN_OR_RETURN(initrd, list_of(m.initrd));
    }
    std::vector<ChunkId> ids;
    uint64_t total = 0;
    for (const ChunkList* l : {&kernel, &initrd, &memory}) {
      for (const auto& e : l->entries) ids.push_back(e.id);
      total += l->total_size;
    }
    std::atomic<uint64_t> done{0};
    auto last = Clock::now();
    for (size_t at = 0; at < ids.size(); at += 512) {
      std::span<const ChunkId> slice(ids.data() + at, std::min<size_t>(512, ids.size() - at));
      SLINGSHOT_RETURN_IF_ERROR(r.chain->Fetch(slice, [&](const ChunkId&, Result<Bytes>&& b) {
        if (b.ok()) done += b->size();
      }));
      if (Clock::now() - last > std::chrono::milliseconds(200)) {
        Report(c, request, "memory", done, total, r);
        last = Clock::now();
      }
    }
    Report(c, request, "memory", done, total, r);

    SLINGSHOT_RETURN_IF_ERROR(WriteFileFromList(kernel, r.chain.get(), r.dir + "/kernel"));
    if (!m.initrd.IsNull()) SLINGSHOT_RETURN_IF_ERROR(WriteFileFromList(initrd, r.chain.get(), r.dir + "/initrd"));

    // The disk: on demand, the primary's working set first.
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes tb, r.home->GetObject(m.disk_table));
    SLINGSHOT_ASSIGN_OR_RETURN(DiskTable table, DiskTable::Decode(tb));
    SLINGSHOT_ASSIGN_OR_RETURN(auto disk, ChunkTableExport::Open(table, r.chain.get(), r.dir + "/overlay"));
    r.nbd = std::make_unique<NbdServer>();
    SLINGSHOT_RETURN_IF_ERROR(r.nbd->AddExport("disk", std::shared_ptr<BlockExport>(std::move(disk)), in.service));
    NbdDisk nbd_disk = hv->DiskAddress(r.dir);
    if (!nbd_disk.unix_socket.empty()) {
      SLINGSHOT_RETURN_IF_ERROR(r.nbd->ListenUnix(nbd_disk.unix_socket));
    } else {
      SLINGSHOT_ASSIGN_OR_RETURN(nbd_disk.port, r.nbd->ListenTcp(nbd_disk.host, 0));
    }
    SLINGSHOT_RETURN_IF_ERROR(r.nbd->Start());
    auto ws = r.home->GetWorkingSet(m.disk_table);
    std::vector<ChunkId> order = ws.ok() ? *ws : std::vector<ChunkId>{};
    std::unordered_set<ChunkId, ChunkIdHash> seen(order.begin(), order.end());
    for (const auto& id : table.ids) {
      if (!id.IsNull() && seen.insert(id).second) order.push_back(id);
    }
    r.prefetch = std::make_unique<Prefetcher>(r.chain.get(), std::move(order));

    Report(c, request, cold ? "boot" : "restore", 0, m.memory_size, r);
    VmSpec spec;
    spec.name = r.id;
    spec.kernel = r.dir + "/kernel";
    if (!m.initrd.IsNull()) spec.initrd = r.dir + "/initrd";
    spec.cmdline = m.vm.kernel_cmdline;
    spec.memory_mib = m.vm.memory_mib;
    spec.vcpus = m.vm.vcpus;
    spec.disk = nbd_disk;
    spec.service_ports = {m.service_port};
    spec.run_dir = r.dir + "/vm";
    if (cold) {
      LogInfo("booting " + in.service + " from its checkpoint's disk: " +
              (foreign ? "its " + m.vm.backend + " memory image does not restore on " + hv->Name()
                       : std::string("--prefer-boot")));
      SLINGSHOT_RETURN_IF_ERROR(hv->Boot(spec));
    } else {
      auto restored =
          hv->Restore(spec, [&](const ByteSink& sink) { return ReadMemoryImage(memory, r.chain.get(), sink); });
      SLINGSHOT_RETURN_IF_ERROR(restored.status());
    }
    SLINGSHOT_ASSIGN_OR_RETURN(Endpoint ep, hv->ServiceEndpoint(r.id, m.service_port));
    auto host = std::make_shared<ReplicaHost>(in.service, m.service_type, options.name);
    // A cold boot runs the guest's whole start-up first (minutes, nested).
    SLINGSHOT_RETURN_IF_ERROR(host->Connect(ep, m.last_seq, cold ? 600000 : 60000));
    {
      MutexLock l(&mu);  // the death callback and StatusReport read it
      r.host = std::move(host);
    }
    Report(c, request, "ready", m.memory_size, m.memory_size, r);
    return Status::OK();
  }

  void Destroy(const std::shared_ptr<Replica>& r) {
    {
      MutexLock l(&mu);  // out of StatusReport's sight before its parts go
      replicas.remove(r);
    }
    if (r->host) r->host->Shutdown();
    (void)hv->Destroy(r->id);
    if (r->prefetch) r->prefetch->Stop();
    if (r->nbd) r->nbd->Stop();
    if (r->chain) {
      FetchChainStats s = r->chain->stats();
      for (size_t i = 0; i < s.sources.size(); ++i) {
        bool is_home = i + 1 == s.sources.size();
        (is_home ? from_home : from_stick) += s.sources[i].bytes;
      }
    }
    r->prefetch.reset();
    r->nbd.reset();
    r->chain.reset();
    std::error_code ec;
    fs::remove_all(r->dir, ec);
  }

  Status Instantiate(Connection& c, uint32_t request, const wire::Instantiate& in) {
    auto start = Clock::now();
    CertificateInfo cap;
    Status ok = CheckCapability(c, in, &cap);
    if (!ok.ok()) {
      LogWarning("refused an instantiate from " + c.peer().Describe() + ": " + ok.message());
      return ok;
    }
    auto r = std::make_shared<Replica>();
    {
      MutexLock l(&mu);
      r->id = "replica-" + std::to_string(++next_id);
      replicas.push_back(r);
    }
    r->service = in.service;
    r->client = c.peer().common_name;
    r->expires = cap.not_after;
    r->dir = options.cache_dir + "/" + r->id;
    std::error_code ec;
    fs::create_directories(r->dir, ec);
    Status built = Build(c, request, in, *r);
    if (!built.ok()) {
      LogWarning("instantiating " + in.service + " for " + c.peer().Describe() + " failed: " + built.message());
      Destroy(r);
      return built;
    }
    LogInfo("replica " + r->id + " of " + in.service + " for " + c.peer().Describe() + " ready in " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()) + " ms");
    // The capability's expiry ends the session.
    std::atomic<bool> done{false};
    std::thread expiry([&] {
      while (!done) {
        if (std::time(nullptr) >= r->expires) {
          LogInfo("replica " + r->id + ": the capability expired; destroying it");
          r->host->Shutdown();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
    Status end = r->host->Serve(c);
    done = true;
    expiry.join();
    LogInfo("replica " + r->id + " of " + in.service + ": the session ended (" + end.message() + "); destroying it");
    Destroy(r);
    return Status::OK();
  }
};

AgentServer::AgentServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AgentServer::~AgentServer() { Stop(); }

Result<std::unique_ptr<AgentServer>> AgentServer::Start(AgentOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  const std::string& dir = impl->options.cache_dir;
  if (dir.empty()) return Status::InvalidArgument("the agent needs a cache directory");
  // No hard state: whatever a previous run left is gone.
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) return Status::IOError("create " + dir + ": " + ec.message());
  ChunkStoreOptions co;
  co.mode = ChunkStoreOptions::Mode::kCache;
  co.cache_budget_bytes = impl->options.cache_budget_bytes;
  SLINGSHOT_ASSIGN_OR_RETURN(impl->cache, ChunkStore::Open(dir + "/cache", co));
  SLINGSHOT_ASSIGN_OR_RETURN(impl->hv, OpenHypervisor(impl->options.hypervisor));
  Impl* raw = impl.get();
  impl->hv->OnDeath([raw](const std::string& name, const std::string& why) {
    LogWarning("replica VM " + name + " died: " + why);
    std::shared_ptr<ReplicaHost> host;
    {
      MutexLock l(&raw->mu);
      for (auto& r : raw->replicas) {
        if (r->id == name) host = r->host;
      }
    }
    if (host) host->Shutdown();  // ends the session; Instantiate then destroys the replica
  });
  // An ephemeral identity: a surrogate belongs to no home.
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateAuthority self, CertificateAuthority::Create(impl->options.name, 365 * 86400));
  SLINGSHOT_ASSIGN_OR_RETURN(impl->creds, self.Issue(impl->options.name, "agent", 365 * 86400));
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(impl->creds.cert_pem));
  impl->fingerprint = info.fingerprint;
  ServerOptions so;
  so.host = impl->options.listen_host;
  so.port = impl->options.listen_port;
  so.verify_client_ca = false;
  so.software = "slingshot-agent";
  SLINGSHOT_ASSIGN_OR_RETURN(impl->server, Server::Start(impl->creds, so, raw));
  return std::unique_ptr<AgentServer>(new AgentServer(std::move(impl)));
}

uint16_t AgentServer::port() const { return impl_->server ? impl_->server->port() : 0; }
std::string AgentServer::fingerprint() const { return impl_->fingerprint; }

void AgentServer::Stop() {
  if (!impl_ || !impl_->server) return;
  impl_->server->Stop();  // ends every session; each destroys its replica
  impl_->server.reset();
  impl_->hv.reset();
  impl_->cache.reset();
  std::error_code ec;
  fs::remove_all(impl_->options.cache_dir, ec);
}

}  // namespace slingshot
