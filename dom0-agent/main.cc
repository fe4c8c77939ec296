// slingshot-agent: the surrogate's dom0 daemon. This build manages its
// disposable chunk cache (a byte budget with LRU eviction, no hard state).
#include <cstdio>
#include <filesystem>

#include "slingshot/chunk_store.h"
#include "slingshot/cli.h"
#include "slingshot/coding.h"
#include "slingshot/file_util.h"
#include "slingshot/hypervisor.h"

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
  SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<Hypervisor> h, OpenHypervisor(o));
  cli::PrintFigure("hypervisor", h->Name());
  cli::PrintFigure("replicas", std::to_string(h->List().size()));
  return Status::OK();
}

}  // namespace
}  // namespace slingshot

int main(int argc, char** argv) {
  using namespace slingshot;
  using cli::po::value;
  using Opts = cli::Options;
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
        ("qemu", value<std::string>()->default_value("qemu-system-x86_64"), "QEMU binary");
  };
  p.commands = {
      {"cache stats", "print what the chunk cache holds", "", cli::NoOptions, CacheStats},
      {"cache verify", "hash-check every cached chunk and drop damaged ones", "", cli::NoOptions, CacheVerify},
      {"cache clear", "delete the chunk cache", "", cli::NoOptions, CacheClear},
      {"hypervisor probe", "say which hypervisor replicas would run on, and why", "", cli::NoOptions,
       HypervisorProbe},
  };
  return cli::Main(p, argc, argv);
}
