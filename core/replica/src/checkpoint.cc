#include "slingshot/replica/checkpoint.h"

#include <future>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "slingshot/base/log.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/store/working_set.h"

namespace slingshot {
namespace {
using Clock = std::chrono::steady_clock;

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
// A RAM working set (the order a replica first read its RAM in, sent home
// by its surrogate) is kept by the table it was read from; the guest reads
// the same offsets first after the next checkpoint too. So the published
// checkpoint's set, if any, is carried to the new table by offset. Best
// effort: a prefetch order, nothing a replica needs.
void CarryRamWorkingSet(ChunkStore* store, const std::string& service, const DiskTable& table, const ChunkId& id) {
  auto ref = store->GetRef("manifest/" + service);
  if (!ref.ok()) return;
  auto bytes = store->GetObject(ref->object);
  auto prev = bytes.ok() ? DecodeSignedManifestUnverified(*bytes) : Result<Manifest>(bytes.status());
  if (!prev.ok() || prev->ram_table.IsNull() || prev->ram_table == id) return;
  auto ws = LoadWorkingSet(store, prev->ram_table);
  auto old_bytes = ws.ok() ? store->GetObject(prev->ram_table) : Result<Bytes>(ws.status());
  auto old = old_bytes.ok() ? DiskTable::Decode(*old_bytes) : Result<DiskTable>(old_bytes.status());
  if (!old.ok() || old->chunk_size != table.chunk_size) return;
  std::unordered_map<ChunkId, size_t, ChunkIdHash> at;
  for (size_t i = 0; i < old->ids.size(); ++i) at.emplace(old->ids[i], i);
  std::unordered_set<ChunkId, ChunkIdHash> seen;
  WorkingSetRecord next{id, {}};
  for (const auto& c : ws->ids) {
    auto it = at.find(c);
    if (it == at.end() || it->second >= table.ids.size()) continue;
    const ChunkId& now = table.ids[it->second];
    if (!now.IsNull() && seen.insert(now).second) next.ids.push_back(now);
  }
  if (next.ids.empty()) return;
  if (Status s = SaveWorkingSet(store, next); !s.ok()) {
    LogWarning("service " + service + ": its RAM working set was not carried to the new checkpoint: " + s.ToString());
  }
}
}  // namespace

Result<DiskImport> ImportGuestRam(const GuestRam& g, ChunkStore* store) {
  // A big guest's table must stay one object (kMaxChunkSize): its chunks
  // grow with it past 4 GiB.
  uint32_t chunk = kRamChunkSize;
  while (g.bytes.size() / chunk * ChunkId::kSize > kMaxChunkSize / 2) chunk *= 2;
  std::vector<bool> known_zero((g.bytes.size() + chunk - 1) / chunk, true);
  for (const auto& e : g.data) {
    if (e.length == 0) continue;
    for (uint64_t i = e.offset / chunk; i <= (e.offset + e.length - 1) / chunk && i < known_zero.size(); ++i) {
      known_zero[i] = false;
    }
  }
  DiskImportOptions o;
  o.chunk_size = chunk;
  return ImportImage(g.bytes, known_zero, store, o);
}

Result<CheckpointResult> TakeCheckpoint(Hypervisor& hv, LiveReplica& replica, const CheckpointOptions& options) {
  if (!options.store || !options.key) return Status::InvalidArgument("a checkpoint needs a store and a signing key");
  const auto start = Clock::now();
  ReplicaHost& host = *replica.host();
  SLINGSHOT_ASSIGN_OR_RETURN(uint64_t seq, host.Quiesce(options.quiesce_ms));
  MemoryImageWriter writer(options.store, ChunkerOptions{});
  ChunkTableExport& disk = replica.disk().table_export();
  // The disk's table is taken at the instant the memory is (the guest
  // stands still); its chunks are stored while the checkpoint goes on.
  bool freezing = false;
  // Inputs flow again as soon as the guest runs, though its memory may
  // still be streaming (a live checkpoint): on another thread, since the
  // service's reconnection must not hold up the stream.
  std::future<Status> resumed;
  CheckpointHooks hooks;
  hooks.at_pause = [&]() -> Status {
    SLINGSHOT_RETURN_IF_ERROR(disk.BeginFreeze(options.store));
    freezing = true;
    return Status::OK();
  };
  hooks.running = [&] {
    resumed = std::async(std::launch::async, [&] { return host.Resume(replica.service_endpoint(), options.resume_ms); });
  };
  // RAM kept apart (the backend copied it aside at the pause): a table of
  // fixed-size chunks by offset, so that any page can be fetched alone;
  // chunks outside the extents ever written are zero without a look.
  std::optional<DiskImport> ram;
  hooks.ram = [&](const GuestRam& g) -> Status {
    SLINGSHOT_ASSIGN_OR_RETURN(ram, ImportGuestRam(g, options.store));
    return Status::OK();
  };
  auto ck = hv.Checkpoint(replica.vm_name(), [&](ByteView b) { return writer.Write(b); }, /*keep_running=*/true, hooks);
  Result<ChunkList> memory = ck.ok() ? writer.Finish() : Result<ChunkList>(ck.status());
  Result<DiskTable> table = freezing ? disk.FinishFreeze() : Result<DiskTable>(Status::IOError("no disk table"));
  if (!memory.ok()) table = memory.status();
  // The VM runs on whatever happened; if it never ran again (it died),
  // Resume says so.
  Status resumed_status = resumed.valid() ? resumed.get() : host.Resume(replica.service_endpoint(), options.resume_ms);
  const std::string what = "checkpoint of " + options.base.service_id;
  SLINGSHOT_RETURN_IF_ERROR(table.status().Annotate(what));
  SLINGSHOT_RETURN_IF_ERROR(resumed_status.Annotate(what + ": the service did not come back"));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkId memory_id, options.store->PutObject(memory->Encode()));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkId table_id, options.store->PutObject(table->Encode()));
  std::vector<ChunkId> first = replica.disk().table_export().FirstReads();
  if (!first.empty()) {
    SLINGSHOT_RETURN_IF_ERROR(SaveWorkingSet(options.store, WorkingSetRecord{table_id, std::move(first)}));
  }

  CheckpointResult r;
  Manifest& m = r.manifest;
  m = options.base;
  m.epoch = options.base.epoch + 1;
  m.last_seq = seq;
  m.created_ns = options.now_ns ? options.now_ns : WallNs();
  m.vm.backend = hv.StreamFormat();
  m.disk_table = table_id;
  m.disk_size = table->image_size;
  m.memory_list = memory_id;
  m.memory_size = memory->total_size;
  m.ram_table = ChunkId();
  m.ram_size = 0;
  if (ck->ram_apart) {
    if (!ram) return Status::IOError(what + ": the hypervisor kept RAM apart but handed none");
    SLINGSHOT_ASSIGN_OR_RETURN(m.ram_table, options.store->PutObject(ram->table.Encode()));
    m.ram_size = ram->table.image_size;
    r.ram = ram->stats;
    CarryRamWorkingSet(options.store, m.service_id, ram->table, m.ram_table);
  }
  SLINGSHOT_ASSIGN_OR_RETURN(r.manifest_id, options.store->PutObject(SignManifest(m, *options.key)));
  SLINGSHOT_RETURN_IF_ERROR(
      options.store->SetRef(Ref{"manifest/" + m.service_id, ObjectKind::kManifest, r.manifest_id}));
  host.Broadcast(wire::Checkpointed{m.epoch, seq});
  // The store's own checkpoint: a crash from now on has only what comes
  // after to recover, and recovery's room on disk is allocated again.
  if (Status s = options.store->Checkpoint(); !s.ok()) {
    LogWarning(what + ": the store's own checkpoint failed (" + s.ToString() + "); the published checkpoint stands");
  }
  r.pause_ms = ck->pause_ms;
  r.ram_copy_ms = ck->ram_copy_ms;
  r.live = ck->live;
  r.ram_apart = ck->ram_apart;
  r.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return r;
}

}  // namespace slingshot
