#include "slingshot/replica/ram_rehearsal.h"

#include <filesystem>
#include <thread>

#include "slingshot/base/log.h"
#include "slingshot/replica/instantiate.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/working_set.h"

namespace slingshot {
namespace fs = std::filesystem;

namespace {
// The published manifest of service, unverified (for a look only).
Result<Manifest> Published(ChunkStore* store, const std::string& service) {
  SLINGSHOT_ASSIGN_OR_RETURN(Ref ref, store->GetRef("manifest/" + service));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes bytes, store->GetObject(ref.object));
  return DecodeSignedManifestUnverified(bytes);
}
}  // namespace

bool RamWorkingSetMissing(ChunkStore* store, const std::string& service) {
  auto m = Published(store, service);
  if (!m.ok() || m->ram_table.IsNull()) return false;
  return LoadWorkingSet(store, m->ram_table).status().IsNotFound();
}

Result<size_t> RecordRamWorkingSet(Hypervisor& hv, ChunkStore* store, const RamRehearsalOptions& options) {
  if (!RamWorkingSetMissing(store, options.service)) return size_t{0};
  StoreCheckpointSource source(store);
  InstantiateOptions io;
  io.service = options.service;
  io.manifest_key = options.manifest_key;
  io.vm_name = options.service + "-rehearsal";
  io.dir = options.dir;
  io.label = "rehearsal";
  io.lazy_memory = true;
  io.record_ram_reads = true;
  io.restore_connect_ms = options.connect_ms;
  io.boot_connect_ms = options.connect_ms;
  std::error_code ec;
  fs::remove_all(options.dir, ec);
  fs::create_directories(options.dir, ec);
  if (ec) return Status::IOError("create " + options.dir + ": " + ec.message());
  auto cleanup = [&] { fs::remove_all(options.dir, ec); };
  auto live = Instantiate(hv, source, io);
  if (!live.ok()) {
    cleanup();
    return live.status().Annotate("rehearsing a restore of " + options.service);
  }
  LazyImage* lazy = (*live)->lazy_ram();
  const Manifest m = (*live)->manifest();
  if (!lazy) {
    (*live)->Destroy();
    cleanup();
    return Status::Unsupported("the RAM of " + options.service + " cannot be served on demand here (is /dev/fuse there?)");
  }
  std::this_thread::sleep_for(options.settle);
  std::vector<ChunkId> first = lazy->FirstReads();
  (*live)->Destroy();
  cleanup();
  if (first.empty()) return size_t{0};
  // A surrogate's record, made meanwhile from a real session, is kept.
  if (!LoadWorkingSet(store, m.ram_table).status().IsNotFound()) return size_t{0};
  SLINGSHOT_RETURN_IF_ERROR(SaveWorkingSet(store, WorkingSetRecord{m.ram_table, first}));
  return first.size();
}

}  // namespace slingshot
