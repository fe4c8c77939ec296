#include "slingshot/replica/instantiate.h"

#include <chrono>
#include <filesystem>

#include "slingshot/base/coding.h"
#include "slingshot/base/log.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/store/working_set.h"

namespace slingshot {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {
double MsSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }
}  // namespace

std::string InstantiateTimes::Describe() const {
  auto ms = [](double v) { return std::to_string(static_cast<long long>(v + 0.5)) + " ms"; };
  return "manifest " + ms(manifest_ms) + ", files " + ms(files_ms) + ", tables " + ms(tables_ms) + ", restore " +
         ms(restore_ms) + ", connect " + ms(connect_ms);
}

Result<Bytes> StoreCheckpointSource::SignedManifest(const std::string& service) {
  SLINGSHOT_ASSIGN_OR_RETURN(Ref ref, store_->GetRef("manifest/" + service));
  return store_->GetObject(ref.object);
}
Result<Bytes> StoreCheckpointSource::GetObject(const ChunkId& id) { return store_->GetObject(id); }
Result<std::vector<ChunkId>> StoreCheckpointSource::WorkingSet(const ChunkId& table) {
  auto ws = LoadWorkingSet(store_, table);
  if (ws.status().IsNotFound()) return std::vector<ChunkId>{};
  SLINGSHOT_RETURN_IF_ERROR(ws.status());
  return ws->ids;
}

Result<Bytes> RemoteCheckpointSource::SignedManifest(const std::string& service) {
  if (!given_manifest_.empty()) return std::move(given_manifest_);
  SLINGSHOT_ASSIGN_OR_RETURN(Ref ref, home_->GetRef("manifest/" + service));
  return home_->GetObject(ref.object);
}
Result<Bytes> RemoteCheckpointSource::GetObject(const ChunkId& id) {
  if (auto it = objects_.find(id); it != objects_.end()) {
    Result<Bytes> r = std::move(it->second);
    objects_.erase(it);
    return r;
  }
  return home_->GetObject(id);
}
Result<std::vector<ChunkId>> RemoteCheckpointSource::WorkingSet(const ChunkId& table) {
  if (auto it = working_sets_.find(table); it != working_sets_.end()) {
    Result<std::vector<ChunkId>> r = std::move(it->second);
    working_sets_.erase(it);
    return r;
  }
  return home_->GetWorkingSet(table);
}
void RemoteCheckpointSource::Prefetch(std::span<const ChunkId> objects, std::span<const ChunkId> tables) {
  auto batch = home_->GetObjectsAndWorkingSets(objects, tables);
  if (!batch.ok()) return;  // each is asked for again, and fails on its own
  for (size_t i = 0; i < objects.size(); ++i) objects_.insert_or_assign(objects[i], std::move(batch->objects[i]));
  for (size_t i = 0; i < tables.size(); ++i) {
    working_sets_.insert_or_assign(tables[i], std::move(batch->working_sets[i]));
  }
}
ChunkSource* RemoteCheckpointSource::chunks() { return chain_ ? static_cast<ChunkSource*>(chain_) : home_; }

LiveReplica::~LiveReplica() { Destroy(); }

void LiveReplica::Destroy() {
  if (destroyed_) return;
  destroyed_ = true;
  if (host_) host_->Shutdown();
  (void)hv_.Destroy(vm_name_);
  if (disk_) disk_->Stop();
  lazy_ram_.reset();
}

Result<std::unique_ptr<LiveReplica>> StartReplica(Hypervisor& hv, ReplicaPlan plan) {
  auto report = [&](const std::string& phase, uint64_t done, uint64_t total) {
    if (plan.progress) plan.progress(InstantiateProgress{phase, done, total});
  };
  std::unique_ptr<LiveReplica> r(new LiveReplica(hv));
  r->vm_name_ = plan.spec.name;
  r->manifest_ = plan.manifest;
  r->booted_ = !plan.memory;
  r->lazy_ram_ = std::move(plan.lazy_ram);
  r->times_ = plan.times;
  r->destroyed_ = true;  // nothing to destroy until the VM is asked for
  SLINGSHOT_ASSIGN_OR_RETURN(r->disk_, ReplicaDisk::Open(plan.table, plan.chunks, hv, plan.disk));
  VmSpec spec = plan.spec;
  spec.disk = r->disk_->address();
  spec.service_ports = {plan.manifest.service_port};
  for (uint16_t p : plan.extra_ports) {
    if (p != plan.manifest.service_port) spec.service_ports.push_back(p);
  }
  r->destroyed_ = false;
  auto start = Clock::now();
  if (plan.memory) {
    report("restore", 0, plan.manifest.memory_size);
    uint64_t done = 0;
    auto last = Clock::now();
    auto counted = [&](const ByteSink& sink) {
      return plan.memory([&](ByteView b) {
        done += b.size();
        if (Clock::now() - last > std::chrono::milliseconds(200)) {
          report("restore", done, plan.manifest.memory_size);
          last = Clock::now();
        }
        return sink(b);
      });
    };
    auto restored = hv.Restore(spec, counted, plan.ram ? &*plan.ram : nullptr);
    SLINGSHOT_RETURN_IF_ERROR(restored.status());
  } else {
    report("boot", 0, 0);
    SLINGSHOT_RETURN_IF_ERROR(hv.Boot(spec));
  }
  r->times_.restore_ms = MsSince(start);
  const auto connecting = Clock::now();
  SLINGSHOT_ASSIGN_OR_RETURN(r->service_, hv.ServiceEndpoint(spec.name, plan.manifest.service_port));
  auto host = std::make_shared<ReplicaHost>(plan.manifest.service_id, plan.manifest.service_type, plan.label);
  LiveReplica* raw = r.get();
  host->OnLost([raw, on_lost = plan.on_lost](const Status& why) {
    raw->MarkDead();
    if (on_lost) on_lost(why);
  });
  SLINGSHOT_RETURN_IF_ERROR(host->Connect(r->service_, plan.manifest.last_seq, plan.connect_timeout_ms));
  r->times_.connect_ms = MsSince(connecting);
  r->host_ = std::move(host);
  report("ready", plan.manifest.memory_size, plan.manifest.memory_size);
  return r;
}

Result<std::unique_ptr<LiveReplica>> Instantiate(Hypervisor& hv, CheckpointSource& source,
                                                 const InstantiateOptions& options) {
  auto report = [&](const std::string& phase, uint64_t done, uint64_t total) {
    if (options.progress) options.progress(InstantiateProgress{phase, done, total});
  };
  InstantiateTimes times;
  auto phase = Clock::now();
  auto lap = [&phase]() {
    double ms = MsSince(phase);
    phase = Clock::now();
    return ms;
  };
  report("manifest", 0, 0);
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes signed_manifest, source.SignedManifest(options.service));
  auto verified = VerifyManifest(signed_manifest, options.manifest_key);
  if (!verified.ok()) return verified.status().Annotate("the home's manifest for " + options.service + " is refused");
  const Manifest& m = *verified;
  if (m.service_id != options.service) {
    return Status::Corruption("the manifest under manifest/" + options.service + " is for " + m.service_id);
  }
  if (m.kernel.IsNull()) return Status::Unsupported("the manifest carries no kernel (a version 1 manifest)");
  // A memory image restores only on a hypervisor of its own kind. A service
  // that keeps its state on its disk boots from the checkpoint's disk
  // instead, and the log replay from last_seq brings it current all the same.
  const bool foreign = m.vm.backend != hv.StreamFormat();
  const bool boot = foreign || (options.prefer_boot && m.state_on_disk);
  if (foreign && !m.state_on_disk) {
    return Status::Unsupported("the checkpoint of " + options.service + " holds a " + m.vm.backend +
                               " memory image, which this hypervisor (" + hv.Name() +
                               ") cannot restore, and the service keeps state in memory (it was not created "
                               "with --state-on-disk), so it cannot be booted from its disk either; use a "
                               "surrogate whose hypervisor matches the home's");
  }
  // Before anything is fetched: whether the replica fits here.
  if (options.admit) SLINGSHOT_RETURN_IF_ERROR(options.admit(m));
  times.manifest_ms = lap();
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return Status::IOError("create " + options.dir + ": " + ec.message());

  // What follows asks for these: from a remote home, in one round trip.
  const bool files = boot || hv.RestoreNeedsBootFiles();
  const bool ram_table = !boot && !m.ram_table.IsNull();
  {
    std::vector<ChunkId> objects{m.disk_table}, tables;
    if (files) objects.push_back(m.kernel);
    if (files && !m.initrd.IsNull()) objects.push_back(m.initrd);
    if (!boot) objects.push_back(m.memory_list);
    if (ram_table) objects.push_back(m.ram_table);
    if (source.chain()) tables.push_back(m.disk_table);
    if (ram_table && options.lazy_memory && source.chain()) tables.push_back(m.ram_table);
    source.Prefetch(objects, tables);
  }
  times.tables_ms = lap();  // and what follows the files, below

  auto list_of = [&](const ChunkId& id) -> Result<ChunkList> {
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, source.GetObject(id));
    return ChunkList::Decode(b);
  };
  // A restore on a hypervisor that needs no boot files (the kernel is in
  // the restored memory) fetches none: on a slow link they can be most of
  // what a replica would otherwise wait for.
  ChunkList kernel, initrd;
  if (files) {
    SLINGSHOT_ASSIGN_OR_RETURN(kernel, list_of(m.kernel));
  }
  if (files && !m.initrd.IsNull()) {
    SLINGSHOT_ASSIGN_OR_RETURN(initrd, list_of(m.initrd));
  }
  report("files", 0, kernel.total_size + initrd.total_size);
  if (FetchChain* chain = files ? source.chain() : nullptr) {
    // The boot files are needed whole before anything starts: fetch them
    // with every source at once.
    std::vector<ChunkId> ids;
    for (const ChunkList* l : {&kernel, &initrd}) {
      for (const auto& e : l->entries) ids.push_back(e.id);
    }
    SLINGSHOT_RETURN_IF_ERROR(chain->Fetch(ids));
  }
  const std::string boot_dir = options.boot_dir.empty() ? options.dir : options.boot_dir;
  if (boot_dir != options.dir) {
    fs::create_directories(boot_dir, ec);
    if (ec) return Status::IOError("create " + boot_dir + ": " + ec.message());
    fs::permissions(boot_dir, fs::perms::owner_all, ec);
  }
  if (files) {
    SLINGSHOT_RETURN_IF_ERROR(WriteFileFromList(kernel, source.chunks(), boot_dir + "/kernel"));
    if (!m.initrd.IsNull()) SLINGSHOT_RETURN_IF_ERROR(WriteFileFromList(initrd, source.chunks(), boot_dir + "/initrd"));
  }
  report("files", kernel.total_size + initrd.total_size, kernel.total_size + initrd.total_size);
  times.files_ms = lap();

  ReplicaPlan plan;
  plan.spec.name = options.vm_name;
  if (files) plan.spec.kernel = boot_dir + "/kernel";
  if (files && !m.initrd.IsNull()) plan.spec.initrd = boot_dir + "/initrd";
  plan.spec.cmdline = m.vm.kernel_cmdline;
  plan.spec.memory_mib = m.vm.memory_mib;
  plan.spec.vcpus = m.vm.vcpus;
  plan.spec.run_dir = options.dir + "/vm";
  plan.manifest = m;
  plan.label = options.label;
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes tb, source.GetObject(m.disk_table));
  SLINGSHOT_ASSIGN_OR_RETURN(plan.table, DiskTable::Decode(tb));
  plan.chunks = source.chunks();
  plan.disk.dir = options.dir + "/disk";
  plan.disk.description = m.service_id;
  plan.disk.cipher = options.cipher;
  plan.disk.prefetch = source.chain();
  if (plan.disk.prefetch) {
    auto ws = source.WorkingSet(m.disk_table);
    if (ws.ok()) plan.disk.working_set = std::move(*ws);
  }
  plan.extra_ports = options.extra_ports;
  plan.on_lost = options.on_lost;
  plan.progress = options.progress;
  plan.connect_timeout_ms = boot ? options.boot_connect_ms : options.restore_connect_ms;
  if (boot) {
    LogInfo("booting " + options.service + " from its checkpoint's disk: " +
            (foreign ? "its " + m.vm.backend + " memory image does not restore on " + hv.Name()
                     : std::string("--prefer-boot")));
  } else {
    // The memory image streams into the restore as its chunks arrive.
    SLINGSHOT_ASSIGN_OR_RETURN(ChunkList memory, list_of(m.memory_list));
    ChunkSource* chunks = source.chunks();
    plan.memory = [memory = std::move(memory), chunks](const ByteSink& sink) {
      return ReadMemoryImage(memory, chunks, sink);
    };
    if (!m.ram_table.IsNull()) {
      // The RAM by offset, fetched (every source at once) while the VM
      // starts.
      SLINGSHOT_ASSIGN_OR_RETURN(Bytes rb, source.GetObject(m.ram_table));
      SLINGSHOT_ASSIGN_OR_RETURN(DiskTable ram, DiskTable::Decode(rb));
      if (ram.image_size != m.ram_size) {
        return Status::Corruption("the RAM table of " + options.service + " holds " + std::to_string(ram.image_size) +
                                  " bytes, its manifest says " + std::to_string(m.ram_size));
      }
      RestoreRam given;
      given.size = ram.image_size;
      if (options.lazy_memory && (source.chain() || options.record_ram_reads)) {
        LazyImageOptions lo;
        lo.dir = boot_dir + "/ram";
        lo.chunks = chunks;
        lo.prefetch = options.record_ram_reads ? nullptr : source.chain();
        lo.fill_page_cache = options.fill_ram_page_cache;
        auto ws = source.WorkingSet(m.ram_table);
        lo.order = PrefetchOrder(ram, ws.ok() ? *ws : std::vector<ChunkId>{});
        const size_t recorded = ws.ok() ? ws->size() : 0;
        lo.table = ram;
        auto lazy = LazyImage::Mount(std::move(lo));
        if (lazy.ok()) {
          // Its RAM arrives while it runs: the service answers once the
          // pages it needs have come, which on a slow link takes as long
          // as fetching them did before it could start.
          plan.connect_timeout_ms = std::max(plan.connect_timeout_ms, options.boot_connect_ms);
          LogInfo("the RAM of " + options.service + " (epoch " + std::to_string(m.epoch) + ", " +
                  HumanBytes(ram.image_size) + ") is served on demand; " + std::to_string(recorded) +
                  " chunks of its recorded working set are fetched first, then the rest");
          given.lazy_file = (*lazy)->path();
          plan.lazy_ram = std::move(*lazy);
        } else {
          LogWarning("the RAM of " + options.service + " is fetched whole before it runs: " + lazy.status().ToString());
        }
      }
      if (given.lazy_file.empty()) {
        given.fill = [ram = std::move(ram), chunks](const RestoreRam::Put& put) { return ReadImage(ram, chunks, put); };
      }
      plan.ram = std::move(given);
    }
  }
  times.tables_ms += lap();
  plan.times = times;
  return StartReplica(hv, std::move(plan));
}

}  // namespace slingshot
