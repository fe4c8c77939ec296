// slingshot-agent: the surrogate's dom0 daemon (`run`, agent_server.h), and
// diagnostics: its disposable chunk cache (stats, verify, clear), which
// hypervisor it would use (`hypervisor probe`), and `disk serve`, which
// serves a home's disk over NBD to any NBD client exactly as a replica's
// disk is served (ReplicaDisk: on demand through cache, stick and home, the
// working set prefetched first).
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/cli/cli.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/net/discovery.h"
#include "slingshot/net/wire.h"
#include "slingshot/replica/replica_disk.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/store/portable.h"
#include "slingshot/vm/hypervisor.h"
#include "agent_server.h"

namespace slingshot {
namespace {

Result<std::unique_ptr<ChunkStore>> OpenCache(const cli::po::variables_map& vm) {
  ChunkStoreOptions o;
  o.mode = ChunkStoreOptions::Mode::kCache;
  o.cache_budget_bytes = vm["cache-budget-mb"].as<uint64_t>() << 20;
  return ChunkStore::Open(vm["cache"].as<std::string>(), o);
}

Status CacheStats(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto cache, OpenCache(vm));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkStoreStats s, cache->Stats());
  std::printf("cache %s\n", cache->dir().c_str());
  cli::PrintFigure("chunks", std::to_string(s.chunks));
  cli::PrintFigure("raw bytes", HumanBytes(s.raw_bytes));
  cli::PrintFigure("stored bytes", HumanBytes(s.stored_bytes));
  cli::PrintFigure("budget", HumanBytes(vm["cache-budget-mb"].as<uint64_t>() << 20));
  return Status::OK();
}

Status CacheVerify(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto cache, OpenCache(vm));
  std::vector<ChunkId> bad;
  SLINGSHOT_ASSIGN_OR_RETURN(uint64_t n, cache->VerifyAll([&](const ChunkId& id, const Status& st) {
    std::fprintf(stderr, "BAD %s\n", st.ToString().c_str());
    bad.push_back(id);
  }));
  // A cache holds nothing that cannot be fetched again: drop what is bad.
  SLINGSHOT_RETURN_IF_ERROR(cache->Delete(bad));
  cli::PrintFigure("chunks checked", std::to_string(n));
  cli::PrintFigure("damaged, dropped", std::to_string(bad.size()));
  return Status::OK();
}

Status CacheClear(const cli::po::variables_map& vm) {
  const std::string dir = vm["cache"].as<std::string>();
  if (std::filesystem::exists(dir) && !std::filesystem::exists(dir + "/STORE")) {
    return Status::InvalidArgument(dir + " does not hold a chunk cache; refusing to delete it");
  }
  UniqueFd lock;
  if (std::filesystem::exists(dir)) {
    SLINGSHOT_ASSIGN_OR_RETURN(lock, LockDirectory(dir, "chunk cache"));  // not while an agent uses it
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec) return Status::IOError("remove " + dir + ": " + ec.message());
  std::printf("cleared cache %s\n", dir.c_str());
  return Status::OK();
}

// Opens the hypervisor the agent would run replicas on, as configured, and
// says which it is (the log line above says why).
Status HypervisorProbe(const cli::po::variables_map& vm) {
  HypervisorOptions o;
  o.backend = vm["hypervisor"].as<std::string>();
  o.accel = vm["accel"].as<std::string>();
  o.qemu_binary = vm["qemu"].as<std::string>();
  o.xen_guest_type = vm["xen-guest-type"].as<std::string>();
  o.network_prefix = "slprb";  // not the running agent's networks
  SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<Hypervisor> h, OpenHypervisor(o));
  cli::PrintFigure("hypervisor", h->Name());
  cli::PrintFigure("replicas", std::to_string(h->List().size()));
  return Status::OK();
}

// Serves a disk of the home's over NBD, fetching chunks on demand through
// cache -> stick -> home, prefetching the home's recorded working set and
// then the rest, until SIGINT/SIGTERM; then prints where the chunks came from.
Status DiskServe(const cli::po::variables_map& vm) {
  const std::string ref = vm["ref"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(auto addr, cli::ParseHostPort(vm["home"].as<std::string>()));
  SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials creds, TlsCredentials::Load(vm["credentials"].as<std::string>()));
  SLINGSHOT_ASSIGN_OR_RETURN(auto cache, OpenCache(vm));
  std::unique_ptr<PortableSource> stick;
  if (vm.count("stick")) {
    auto p = PortableSource::Open(vm["stick"].as<std::string>());
    if (p.ok()) stick = std::move(*p);
    else LogWarning("carrying on without the stick: " + p.status().ToString());
  }
  SLINGSHOT_ASSIGN_OR_RETURN(auto home, HomeSource::Open(addr.first, addr.second, creds));
  SLINGSHOT_ASSIGN_OR_RETURN(Ref r, home->GetRef(ref));
  if (r.kind != ObjectKind::kDiskTable) return Status::InvalidArgument(ref + " is not a disk");
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes tb, home->GetObject(r.object));
  SLINGSHOT_ASSIGN_OR_RETURN(DiskTable table, DiskTable::Decode(tb));

  std::vector<ChunkSource*> sources;
  if (stick) sources.push_back(stick.get());
  sources.push_back(home.get());
  FetchChain chain(cache.get(), sources);
  ReplicaDiskOptions o;
  o.dir = vm["cache"].as<std::string>() + "/disk-" + r.object.Short();
  o.description = ref;
  o.read_only = !vm.count("writable");
  if (!vm.count("no-prefetch")) {
    o.prefetch = &chain;
    SLINGSHOT_ASSIGN_OR_RETURN(o.working_set, home->GetWorkingSet(r.object));
  }
  const size_t working_set = o.working_set.size();
  NbdDisk where{"", "", 0, vm["export"].as<std::string>(), o.read_only};
  if (vm.count("socket")) {
    where.unix_socket = vm["socket"].as<std::string>();
  } else {
    SLINGSHOT_ASSIGN_OR_RETURN(auto listen, cli::ParseHostPort(vm["listen"].as<std::string>()));
    where.host = listen.first;
    where.port = listen.second;
  }
  cli::BlockStopSignals();
  SLINGSHOT_ASSIGN_OR_RETURN(auto disk, ReplicaDisk::Open(table, &chain, where, o));
  const NbdDisk& at = disk->address();
  const std::string url = at.unix_socket.empty()
                              ? "nbd://" + at.host + ":" + std::to_string(at.port) + "/" + at.export_name
                              : "nbd+unix:///" + at.export_name + "?socket=" + at.unix_socket;
  std::printf("serving %s (%s, %s) at %s; chunks from %s%s\n", ref.c_str(), HumanBytes(table.image_size).c_str(),
              o.read_only ? "read-only" : "writable, into a disposable overlay", url.c_str(), chain.Describe().c_str(),
              o.prefetch ? (", prefetching " + std::to_string(working_set) + " working-set chunks first").c_str() : "");
  std::fflush(stdout);
  int sig = cli::WaitForStopSignal();
  const uint64_t prefetched = disk->prefetched(), prefetch_total = disk->prefetch_total();
  disk->Stop();
  auto st = chain.stats();
  std::printf("stopped by %s\n", strsignal(sig));
  cli::PrintFigure("cache hits", std::to_string(st.cache_hits));
  for (const auto& s : st.sources) {
    cli::PrintFigure(s.name, std::to_string(s.chunks) + " chunks (" + HumanBytes(s.bytes) + "), " +
                                 std::to_string(s.corrupt) + " corrupt, " + std::to_string(s.misses) + " missing, " +
                                 std::to_string(s.errors) + " errors");
  }
  if (o.prefetch) cli::PrintFigure("prefetched", std::to_string(prefetched) + " of " + std::to_string(prefetch_total));
  disk.reset();
  std::error_code ec;
  std::filesystem::remove_all(o.dir, ec);
  return Status::OK();
}

// The daemon: replicas for clients of any home (agent_server.h).
Status RunCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto listen, cli::ParseHostPort(vm["listen"].as<std::string>()));
  AgentOptions o;
  o.name = vm["name"].as<std::string>();
  o.listen_host = listen.first;
  o.listen_port = listen.second;
  o.cache_dir = vm["cache"].as<std::string>();
  o.cache_budget_bytes = vm["cache-budget-mb"].as<uint64_t>() << 20;
  o.admission.max_replicas = vm["max-replicas"].as<int>();
  o.admission.budget_mib = vm["replica-memory-mb"].as<uint64_t>();
  o.admission.reserve_mib = vm["memory-reserve-mb"].as<uint64_t>();
  o.prefer_boot = vm.count("prefer-boot") > 0;
  o.lazy_memory = vm["lazy-memory"].as<bool>();
  o.ram_page_cache = vm["ram-page-cache"].as<bool>();
  o.working_set_after = std::chrono::seconds(std::max(vm["working-set-seconds"].as<int>(), 0));
  o.reattach_after = std::chrono::seconds(std::max(vm["reattach-seconds"].as<int>(), 0));
  o.hypervisor.backend = vm["hypervisor"].as<std::string>();
  o.hypervisor.accel = vm["accel"].as<std::string>();
  o.hypervisor.qemu_binary = vm["qemu"].as<std::string>();
  o.hypervisor.xen_guest_type = vm["xen-guest-type"].as<std::string>();
  cli::BlockStopSignals();
  SLINGSHOT_ASSIGN_OR_RETURN(auto agent, AgentServer::Start(o));
  std::printf("slingshot-agent \"%s\" listening on %s:%u, certificate %s; cache %s (wiped)\n", o.name.c_str(),
              listen.first.c_str(), agent->port(), agent->fingerprint().c_str(), o.cache_dir.c_str());
  std::fflush(stdout);
  // Clients on the hotspot find the agent by DNS-SD (discovery.h); the
  // advert carries the certificate's fingerprint for them to pin.
  std::unique_ptr<Advertiser> advert;
  if (!vm.count("no-advertise")) {
    ServiceAdvert ad;
    ad.name = o.name;
    ad.port = agent->port();
    ad.txt = {{"v", std::to_string(wire::kVersion)}, {"fp", agent->fingerprint()}};
    SLINGSHOT_ASSIGN_OR_RETURN(advert, Advertiser::Start(ad));
  }
  int sig = cli::WaitForStopSignal();
  advert.reset();
  std::printf("stopping on %s: destroying every replica\n", strsignal(sig));
  std::fflush(stdout);
  agent->Stop();
  return Status::OK();
}

}  // namespace
}  // namespace slingshot

int main(int argc, char** argv) {
  using namespace slingshot;
  using cli::po::value;
  using Opts = cli::Options;
  using Pos = cli::Positional;
  cli::Program p;
  p.name = "slingshot-agent";
  p.description =
      "The Slingshot surrogate agent (runs in the appliance's dom0). It keeps no hard\n"
      "state: its chunk cache is disposable and bounded by a byte budget.";
  p.default_config = "/etc/slingshot/agent.conf";
  p.global_options = [](Opts& d) {
    d.add_options()
        ("cache", value<std::string>()->default_value("/var/cache/slingshot/chunks"), "chunk cache directory")
        ("cache-budget-mb", value<uint64_t>()->default_value(4096), "most MiB the cache keeps before evicting")
        ("hypervisor", value<std::string>()->default_value("auto"),
         "auto (Xen in a Xen dom0, else QEMU), qemu or xen")
        ("accel", value<std::string>()->default_value("auto"),
         "QEMU: auto (KVM if a probe guest runs fast enough, else TCG), kvm or tcg")
        ("qemu", value<std::string>()->default_value("qemu-system-x86_64"), "QEMU binary")
        ("xen-guest-type", value<std::string>()->default_value("auto"),
         "Xen: auto (PVH, with live checkpoints, where Xen has hardware-assisted paging; else PV), pvh or pv");
  };
  p.commands = {
      {"run", "the surrogate daemon: make replicas for clients that bring a capability from their home",
       "[--listen HOST:PORT] [--name NAME]",
       [](Opts& d, Pos&) {
         d.add_options()("listen", value<std::string>()->default_value("0.0.0.0:7391"), "address to listen on")
             ("name", value<std::string>()->default_value("surrogate"), "this surrogate's name, shown to clients")
             ("max-replicas", value<int>()->default_value(8), "replicas run at once")
             ("replica-memory-mb", value<uint64_t>()->default_value(0),
              "memory for all replicas together (0: the host's free memory at start, less the reserve)")
             ("memory-reserve-mb", value<uint64_t>()->default_value(256),
              "memory kept for the host (dom0 or the OS, this agent, its cache); no replica takes it")
             ("no-advertise", "do not advertise this agent over DNS-SD (clients then need its address)")
             ("prefer-boot", "boot services that keep their state on their disk (service create --state-on-disk) "
                             "from the checkpoint's disk instead of restoring their memory image: less to fetch, "
                             "a guest start-up to wait for")
             ("lazy-memory", value<bool>()->default_value(true),
              "restore a replica before its RAM has arrived, each page fetched as the guest first touches it "
              "(QEMU; false: fetch the RAM whole first)")
             ("ram-page-cache", value<bool>()->default_value(true),
              "put the RAM chunks the prefetch has into the page cache before the guest touches them: no "
              "round trip per first touch (false: every first touch is a read this agent sees, and their "
              "order goes home as the RAM working set)")
             ("working-set-seconds", value<int>()->default_value(30),
              "send the home the order a replica first read its RAM in once it has run this long "
              "(with --ram-page-cache false)")
             ("reattach-seconds", value<int>()->default_value(60),
              "keep a replica whose client's connection broke this long, for the client to attach again "
              "(0: destroy it at once)");
       },
       RunCmd},
      {"cache stats", "print what the chunk cache holds", "", cli::NoOptions, CacheStats},
      {"cache verify", "hash-check every cached chunk and drop damaged ones", "", cli::NoOptions, CacheVerify},
      {"cache clear", "delete the chunk cache", "", cli::NoOptions, CacheClear},
      {"hypervisor probe", "say which hypervisor replicas would run on, and why", "", cli::NoOptions,
       HypervisorProbe},
      {"disk serve", "serve a home's disk over NBD, fetched on demand (cache, stick, home) and prefetched",
       "REF --home HOST:PORT --credentials DIR [--stick DIR] (--socket PATH | --listen HOST:PORT)",
       [](Opts& d, Pos& pos) {
         d.add_options()("ref", value<std::string>()->required(), "the disk's ref at home, e.g. disk/notepad")
             ("home", value<std::string>()->required(), "the home's chunk service, HOST:PORT")
             ("credentials", value<std::string>()->default_value("/var/lib/slingshot/agent/tls"),
              "this surrogate's TLS credentials (ca.pem, cert.pem, key.pem)")
             ("stick", value<std::string>(), "a portable storage directory to read chunks from first")
             ("socket", value<std::string>(), "serve on this unix socket")
             ("listen", value<std::string>()->default_value("127.0.0.1:10809"), "else serve on this TCP address")
             ("export", value<std::string>()->default_value("disk"), "the NBD export name")
             ("writable", "accept writes (into an overlay that is deleted on exit)")
             ("no-prefetch", "fetch only what is read");
         pos.add("ref", 1);
       },
       DiskServe},
  };
  return cli::Main(p, argc, argv);
}
