#include "agent_server.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <list>
#include <set>
#include <sstream>
#include <thread>

#include "slingshot/base/keys.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/net/tls.h"
#include "slingshot/net/transport.h"
#include "slingshot/replica/admission.h"
#include "slingshot/replica/instantiate.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/store/portable.h"

namespace slingshot {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// One replica: its fetch chain and the replica the engine runs.
struct Replica {
  std::string id;  // VM name
  std::string service, client;
  std::string dir;
  int64_t expires = 0;
  std::unique_ptr<HomeSource> home;
  std::unique_ptr<PortableSource> stick;
  std::unique_ptr<FetchChain> chain;
  std::unique_ptr<LiveReplica> live;
  std::shared_ptr<ReplicaHost> host;  // live's, once it runs
  std::unique_ptr<Admission::Ticket> admitted;  // its room here, once it fits
  std::string ca_pem;  // the home CA its client's certificate chains to
  // Its sessions (under AgentServer::Impl::mu): a re-attach may overlap the
  // session it replaces.
  int sessions = 0;
  bool ending = false;  // no more sessions: it is being destroyed
  Clock::time_point detached_since;  // when the last session ended
};

struct AgentServer::Impl final : public RequestHandler {
  AgentOptions options;
  TlsCredentials creds;
  std::string fingerprint;
  std::unique_ptr<ChunkStore> cache;
  std::shared_ptr<const LocalCipher> cipher;  // this run's, in memory only
  std::string boot_root;                       // under memory_dir, this run's
  std::unique_ptr<Hypervisor> hv;
  std::unique_ptr<Admission> admission;
  std::unique_ptr<Server> server;

  Mutex mu;
  CondVar cv;  // a session ended, or the agent stops
  bool stopping GUARDED_BY(mu) = false;
  std::set<std::string> used_capabilities GUARDED_BY(mu);  // fingerprints, until the agent stops
  std::list<std::shared_ptr<Replica>> replicas GUARDED_BY(mu);
  uint64_t next_id GUARDED_BY(mu) = 0;
  FetchedBytes gone GUARDED_BY(mu);  // what replicas now destroyed fetched

  // Ends replica id's session (if it runs): its keeper then destroys it.
  void EndSession(const std::string& id) EXCLUDES(mu) {
    std::shared_ptr<ReplicaHost> host;
    {
      MutexLock l(&mu);
      for (auto& r : replicas) {
        if (r->id == id) host = r->host;
      }
    }
    if (host) host->Shutdown();
  }

  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override {
    if (auto* in = std::get_if<wire::Instantiate>(&m)) return Instantiate(c, request, *in);
    if (auto* a = std::get_if<wire::Attach>(&m)) return Reattach(c, *a);
    if (std::holds_alternative<wire::GetStatus>(m)) return c.Send(request, StatusReport());
    return Status::InvalidArgument(std::string("a surrogate agent does not take ") +
                                   wire::MessageTypeName(wire::TypeOf(m)));
  }

  wire::AgentStatus StatusReport() {
    wire::AgentStatus s;
    s.name = options.name;
    FetchedBytes fetched;
    {
      MutexLock l(&mu);
      fetched = gone;  // what replicas now destroyed fetched
      for (const auto& r : replicas) {
        s.replicas.push_back(wire::ReplicaStatus{r->service, r->client, r->host ? r->host->consumed() : 0, r->expires});
        if (!r->chain) continue;  // still being built
        fetched += r->chain->stats().bytes();  // live replicas' fetches so far
      }
    }
    auto st = cache->Stats();
    if (st.ok()) s.cache_bytes = st->stored_bytes;
    s.from_cache = fetched.cache;
    s.from_stick = fetched.near;
    s.from_home = fetched.last;
    const AdmissionState a = admission->State();
    s.capacity = wire::AgentCapacity{static_cast<uint32_t>(a.max_replicas), a.budget_mib, a.committed_mib,
                                     a.host_free_mib};
    return s;
  }

  // Step 1: everything about the capability that can be checked here.
  Status CheckCapability(const Connection& c, const wire::Instantiate& in, Capability* cap) {
    SLINGSHOT_ASSIGN_OR_RETURN(*cap, VerifyCapability(in.cert_pem, in.ca_pem));
    if (cap->service != in.service) {
      return Status::PermissionDenied("the capability is for service " + cap->service + ", not " + in.service);
    }
    SLINGSHOT_RETURN_IF_ERROR(VerifyCertificate(c.peer().cert_pem, in.ca_pem, "the client's certificate"));
    if (cap->client != c.peer().common_name) {
      return Status::PermissionDenied("the capability was issued to client \"" + cap->client + "\", and this is \"" +
                                      c.peer().common_name + "\"");
    }
    if (in.manifest_key.size() != PublicKey::kRawSize) {
      return Status::InvalidArgument("the home's manifest key must be " + std::to_string(PublicKey::kRawSize) + " bytes");
    }
    MutexLock l(&mu);
    if (!used_capabilities.insert(cap->fingerprint).second) {
      return Status::PermissionDenied("capability " + cap->fingerprint +
                                      " was already used here: ask the home for a fresh one for each replica");
    }
    return Status::OK();
  }

  void Report(Connection& c, uint32_t request, const std::string& phase, uint64_t done, uint64_t total,
              const Replica& r) {
    wire::Progress p{phase, done, total, 0, 0, 0};
    if (r.chain) {
      FetchedBytes b = r.chain->stats().bytes();
      p.from_cache = b.cache;
      p.from_stick = b.near;
      p.from_home = b.last;
    }
    (void)c.Send(request, p, 10000);
  }

  Status Build(Connection& c, uint32_t request, const wire::Instantiate& in, Replica& r) {
    Report(c, request, "manifest", 0, 0, r);
    TlsCredentials cap{in.ca_pem, in.cert_pem, in.key_pem};
    HomeSourceOptions ho;
    ho.connect.await_hello = false;  // the first request follows our Hello at once
    SLINGSHOT_ASSIGN_OR_RETURN(r.home, HomeSource::Open(in.home_host, in.home_port, cap, ho));
    SLINGSHOT_ASSIGN_OR_RETURN(PublicKey key, PublicKey::FromRaw(in.manifest_key));
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
    RemoteCheckpointSource source(r.home.get(), r.chain.get(), in.signed_manifest);
    InstantiateOptions o;
    o.service = in.service;
    o.manifest_key = key;
    o.vm_name = r.id;
    o.dir = r.dir;
    o.label = options.name;
    o.prefer_boot = options.prefer_boot;
    o.lazy_memory = options.lazy_memory;
    o.fill_ram_page_cache = options.ram_page_cache;
    o.cipher = cipher;
    if (!boot_root.empty()) o.boot_dir = boot_root + "/" + r.id;
    o.on_lost = [this, id = r.id](const Status& why) {
      LogWarning("replica " + id + ": its service connection was lost (" + why.message() + "); destroying it");
      EndSession(id);
    };
    o.progress = [&](const InstantiateProgress& p) { Report(c, request, p.phase, p.done, p.total, r); };
    o.admit = [&](const Manifest& m) -> Status {
      SLINGSHOT_ASSIGN_OR_RETURN(r.admitted, admission->Admit(m.service_id + " for " + r.client,
                                                              m.vm.memory_mib + options.replica_overhead_mib));
      return Status::OK();
    };
    SLINGSHOT_ASSIGN_OR_RETURN(auto live, slingshot::Instantiate(*hv, source, o));
    r.admitted->Started();
    {
      MutexLock l(&mu);  // the death callback and StatusReport read it
      r.host = live->host();
      r.live = std::move(live);
    }
    return Status::OK();
  }

  // "; RAM: 812 chunks read by the guest, 1500 of 6115 prefetched, 1400
  // stored into the page cache" for a replica whose RAM is served on demand.
  static std::string LazyRamNote(const LiveReplica& live) {
    LazyImage* lazy = live.lazy_ram();
    if (!lazy) return "";
    LazyImageStats s = lazy->stats();
    return "; RAM: " + std::to_string(s.chunks_read) + " chunks read by the guest, " + std::to_string(s.prefetched) +
           " of " + std::to_string(s.prefetch_total) + " prefetched, " + std::to_string(s.stored) +
           " stored into the page cache";
  }

  // The replica's RAM working set, to its home (best effort: a prefetch
  // order, nothing a replica needs). Only a whole record goes: once the
  // prefetch has stored pages into the page cache, the guest's touches of
  // them are not seen, and the home's own record stands.
  void SendWorkingSet(const Replica& r) {
    LazyImage* lazy = r.live ? r.live->lazy_ram() : nullptr;
    if (!lazy || !r.home || lazy->stats().stored != 0) return;
    std::vector<ChunkId> first = lazy->FirstReads();
    Status s = r.home->PutWorkingSet(r.live->manifest().ram_table, first);
    if (s.ok()) {
      LogInfo("replica " + r.id + ": sent home the order of its first " + std::to_string(first.size()) +
              " RAM chunks read");
    } else {
      LogWarning("replica " + r.id + ": its RAM working set did not reach home: " + s.ToString());
    }
  }

  void Destroy(const std::shared_ptr<Replica>& r) {
    {
      MutexLock l(&mu);  // out of StatusReport's sight before its parts go
      replicas.remove(r);
    }
    if (r->live) r->live->Destroy();
    else (void)hv->Destroy(r->id);  // a VM a failed instantiate may have left
    if (r->chain) {
      MutexLock l(&mu);
      gone += r->chain->stats().bytes();
    }
    r->live.reset();
    r->chain.reset();
    r->admitted.reset();  // its room is free again
    std::error_code ec;
    fs::remove_all(r->dir, ec);
    if (!boot_root.empty()) fs::remove_all(boot_root + "/" + r->id, ec);
  }

  // A session of r ended: why is OK if its client said Leave.
  void SessionEnded(Replica& r, const Status& why) {
    MutexLock l(&mu);
    --r.sessions;
    if (why.ok()) {
      LogInfo("replica " + r.id + " of " + r.service + ": client " + r.client + " left; destroying it");
      r.ending = true;
    } else if (r.sessions == 0 && !r.ending && !r.host->stopped()) {
      LogInfo("replica " + r.id + " of " + r.service + ": the session ended (" + why.message() + "); kept " +
              std::to_string(options.reattach_after.count()) + " s for client " + r.client + " to attach again");
    }
    if (r.sessions == 0) r.detached_since = Clock::now();
    cv.SignalAll();
  }

  // Runs for r's life once it is ready: sends its RAM working set home when
  // it has run a while, and decides when it ends. Then shuts its sessions.
  void Keep(Replica& r) {
    const auto ready = Clock::now();
    bool sent_working_set = false;
    std::string why;
    for (;;) {
      if (!sent_working_set && Clock::now() - ready >= options.working_set_after) {
        SendWorkingSet(r);  // the order the replica first read its RAM in
        sent_working_set = true;
      }
      const bool vm_gone = r.host->stopped();  // its VM died, or its service was lost
      MutexLock l(&mu);
      if (stopping) why = "the agent stops";
      else if (r.ending) why = "its client left";
      else if (vm_gone) why = "its VM or service is gone";
      else if (std::time(nullptr) >= r.expires) why = "the capability expired";
      else if (r.sessions == 0 && Clock::now() - r.detached_since >= options.reattach_after) {
        why = "client " + r.client + " did not attach again within " +
              std::to_string(options.reattach_after.count()) + " s";
      }
      if (!why.empty()) {
        r.ending = true;
        break;
      }
      cv.WaitFor(&mu, std::chrono::milliseconds(200));
    }
    if (!sent_working_set && std::time(nullptr) < r.expires) SendWorkingSet(r);
    LogInfo("replica " + r.id + " of " + r.service + ": " + why + "; destroying it");
    r.host->Shutdown();  // ends a session that still runs
  }

  // The client of a replica here attaches again (its connection broke).
  Status Reattach(Connection& c, const wire::Attach& a) {
    if (a.take_over) {
      return Status::InvalidArgument("a surrogate's replica is attached to, not taken over: take the service "
                                     "over at home");
    }
    std::shared_ptr<Replica> r;
    {
      MutexLock l(&mu);
      for (const auto& x : replicas) {
        if (x->service == a.service && x->client == c.peer().common_name && x->host && !x->ending &&
            !x->host->stopped()) {
          r = x;
        }
      }
    }
    auto none = [&] {
      return Status::NotFound("this surrogate holds no replica of " + a.service + " for " + c.peer().common_name +
                              " (it was destroyed, or never made here): make one with `slingshot-client use`");
    };
    if (!r) return none();
    // The same client: a certificate from the CA the replica was made for,
    // with the same name (TLS proved it holds the key).
    if (Status ok = VerifyCertificate(c.peer().cert_pem, r->ca_pem, "the client's certificate"); !ok.ok()) {
      // Answered as if there were none: a stranger learns nothing of who
      // has a replica here.
      LogWarning("refused a re-attach from " + c.peer().Describe() + ": " + ok.message());
      return none();
    }
    SLINGSHOT_RETURN_IF_ERROR(c.Authorize());
    {
      MutexLock l(&mu);
      if (r->ending) return none();
      ++r->sessions;
    }
    LogInfo("replica " + r->id + " of " + r->service + ": " + c.peer().Describe() + " attached again at seq " +
            std::to_string(r->host->consumed()));
    SessionEnded(*r, r->host->Serve(c));
    return Status::OK();
  }

  Status Instantiate(Connection& c, uint32_t request, const wire::Instantiate& in) {
    auto start = Clock::now();
    Capability cap;
    Status ok = CheckCapability(c, in, &cap);
    if (!ok.ok()) {
      LogWarning("refused an instantiate from " + c.peer().Describe() + ": " + ok.message());
      return ok;
    }
    // A valid capability: the peer leaves the pending pool (transport.h).
    if (Status a = c.Authorize(); !a.ok()) {
      LogWarning("refused an instantiate from " + c.peer().Describe() + ": " + a.message());
      return a;
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
    r->ca_pem = in.ca_pem;
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
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()) + " ms (" +
            r->live->times().Describe() + ")" + LazyRamNote(*r->live));
    {
      MutexLock l(&mu);
      r->sessions = 1;
    }
    // This thread serves the first session; the keeper ends the replica's
    // life (leave, expiry, no re-attach in time, VM death, agent stop).
    std::thread keeper([&] { Keep(*r); });
    SessionEnded(*r, r->host->Serve(c));
    keeper.join();
    {
      MutexLock l(&mu);  // Shutdown ended them: they are leaving
      while (r->sessions > 0) cv.Wait(&mu);
    }
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
  SLINGSHOT_ASSIGN_OR_RETURN(impl->cipher, LocalCipher::Random());
  if (!impl->options.memory_dir.empty()) {
    // Boot files of agents that are gone (they were killed) go first.
    for (const auto& e : fs::directory_iterator(impl->options.memory_dir, ec)) {
      const std::string n = e.path().filename().string();
      constexpr std::string_view kPrefix = "slingshot-agent-";
      if (n.rfind(kPrefix, 0) != 0) continue;
      const std::string pid = n.substr(kPrefix.size());
      if (pid.find_first_not_of("0123456789") == std::string::npos && !fs::exists("/proc/" + pid)) {
        if (int n = DetachLazyImagesUnder(e.path().string())) {
          LogInfo("detached " + std::to_string(n) + " lazy RAM mount(s) a killed agent left in " + e.path().string());
        }
        fs::remove_all(e.path(), ec);
      }
    }
    impl->boot_root = impl->options.memory_dir + "/slingshot-agent-" + std::to_string(::getpid());
    fs::remove_all(impl->boot_root, ec);
    fs::create_directories(impl->boot_root, ec);
    fs::permissions(impl->boot_root, fs::perms::owner_all, ec);
    if (ec) {
      LogWarning("no private directory in " + impl->options.memory_dir + " for boot files (" + ec.message() +
                 "); they go beside each replica's overlay, on the disk");
      impl->boot_root.clear();
    }
  }
  ChunkStoreOptions co;
  co.mode = ChunkStoreOptions::Mode::kCache;
  co.cache_budget_bytes = impl->options.cache_budget_bytes;
  co.cipher = impl->cipher;
  SLINGSHOT_ASSIGN_OR_RETURN(impl->cache, ChunkStore::Open(dir + "/cache", co));
  SLINGSHOT_ASSIGN_OR_RETURN(impl->hv, OpenHypervisor(impl->options.hypervisor));
  Impl* raw = impl.get();
  SLINGSHOT_ASSIGN_OR_RETURN(impl->admission,
                             Admission::Make(impl->options.admission, [raw] { return raw->hv->Memory(); }));
  {
    const AdmissionState a = impl->admission->State();
    LogInfo("room for " + std::to_string(a.max_replicas) + " replicas and " + std::to_string(a.budget_mib) +
            " MiB of memory for them (" + std::to_string(impl->options.admission.reserve_mib) +
            " MiB kept for the host)");
  }
  impl->hv->OnDeath([raw](const std::string& name, const std::string& why) {
    LogWarning("replica VM " + name + " died: " + why);
    raw->EndSession(name);
  });
  // An ephemeral identity: a surrogate belongs to no home.
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateAuthority self, CertificateAuthority::Create(impl->options.name, 365 * 86400));
  SLINGSHOT_ASSIGN_OR_RETURN(impl->creds, self.Issue(impl->options.name, Role::kAgent, 365 * 86400));
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
  {
    MutexLock l(&impl_->mu);  // replicas waiting for their client end now
    impl_->stopping = true;
    impl_->cv.SignalAll();
  }
  impl_->server->Stop();  // ends every session; each replica is destroyed
  impl_->server.reset();
  impl_->hv.reset();
  impl_->cache.reset();
  std::error_code ec;
  fs::remove_all(impl_->options.cache_dir, ec);
  if (!impl_->boot_root.empty()) fs::remove_all(impl_->boot_root, ec);
}

}  // namespace slingshot
