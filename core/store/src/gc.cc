#include "slingshot/store/gc.h"

#include <cstring>
#include <unordered_set>

#include "slingshot/store/disk_table.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/store/working_set.h"

namespace slingshot {
namespace {

class Walker {
 public:
  Walker(ChunkStore* store, const std::function<Status(const ChunkId&, ByteView)>& on_object,
         const std::function<Status(const ChunkId&)>& on_chunk)
      : store_(store), on_object_(on_object), on_chunk_(on_chunk) {}

  Status Object(const ChunkId& id, std::string_view via) {
    if (!objects_.insert(id).second) return Status::OK();
    auto bytes = store_->GetObject(id);
    if (!bytes.ok()) return bytes.status().Annotate(std::string("reached from ") + std::string(via));
    SLINGSHOT_RETURN_IF_ERROR(on_object_(id, *bytes));
    ByteView b = *bytes;
    if (b.size() >= 4 && std::memcmp(b.data(), "SSDT", 4) == 0) {
      SLINGSHOT_ASSIGN_OR_RETURN(DiskTable t, DiskTable::Decode(b));
      for (const auto& c : t.ids) SLINGSHOT_RETURN_IF_ERROR(Chunk(c));
    } else if (b.size() >= 4 && std::memcmp(b.data(), "SSCL", 4) == 0) {
      SLINGSHOT_ASSIGN_OR_RETURN(ChunkList l, ChunkList::Decode(b));
      for (const auto& e : l.entries) SLINGSHOT_RETURN_IF_ERROR(Chunk(e.id));
    } else if (b.size() >= 4 && std::memcmp(b.data(), "SSMS", 4) == 0) {
      SLINGSHOT_ASSIGN_OR_RETURN(Manifest m, DecodeSignedManifestUnverified(b));
      std::string from = "manifest " + m.service_id + " epoch " + std::to_string(m.epoch);
      if (!m.disk_table.IsNull()) SLINGSHOT_RETURN_IF_ERROR(Object(m.disk_table, from));
      if (!m.memory_list.IsNull()) SLINGSHOT_RETURN_IF_ERROR(Object(m.memory_list, from));
      if (!m.ram_table.IsNull()) SLINGSHOT_RETURN_IF_ERROR(Object(m.ram_table, from));
      if (!m.kernel.IsNull()) SLINGSHOT_RETURN_IF_ERROR(Object(m.kernel, from));
      if (!m.initrd.IsNull()) SLINGSHOT_RETURN_IF_ERROR(Object(m.initrd, from));
    } else if (b.size() >= 4 && std::memcmp(b.data(), "SSWS", 4) == 0) {
      SLINGSHOT_ASSIGN_OR_RETURN(WorkingSetRecord ws, WorkingSetRecord::Decode(b));
      for (const auto& c : ws.ids) SLINGSHOT_RETURN_IF_ERROR(Chunk(c));
    } else {
      return Status::Corruption("object " + id.ToHex() + " has an unknown type");
    }
    return Status::OK();
  }

  Status Chunk(const ChunkId& id) {
    if (id.IsNull() || !chunks_.insert(id).second) return Status::OK();
    return on_chunk_(id);
  }

  std::unordered_set<ChunkId, ChunkIdHash> objects_, chunks_;

 private:
  ChunkStore* store_;
  const std::function<Status(const ChunkId&, ByteView)>& on_object_;
  const std::function<Status(const ChunkId&)>& on_chunk_;
};

Status WalkInto(Walker* w, ChunkStore* store, const std::vector<std::string>& names, uint64_t* nrefs) {
  std::vector<Ref> refs;
  if (names.empty()) {
    SLINGSHOT_ASSIGN_OR_RETURN(refs, store->ListRefs());
  } else {
    for (const auto& n : names) {
      SLINGSHOT_ASSIGN_OR_RETURN(Ref r, store->GetRef(n));
      refs.push_back(std::move(r));
    }
  }
  if (nrefs) *nrefs = refs.size();
  for (const auto& r : refs) SLINGSHOT_RETURN_IF_ERROR(w->Object(r.object, "ref " + r.name));
  return Status::OK();
}

}  // namespace

Status WalkReachable(ChunkStore* store, const std::vector<std::string>& names,
                     const std::function<Status(const ChunkId&, ByteView)>& on_object,
                     const std::function<Status(const ChunkId&)>& on_chunk) {
  Walker w(store, on_object, on_chunk);
  return WalkInto(&w, store, names, nullptr);
}

Status WalkObjects(ChunkStore* store, const std::vector<ChunkId>& roots,
                   const std::function<Status(const ChunkId&, ByteView)>& on_object,
                   const std::function<Status(const ChunkId&)>& on_chunk) {
  Walker w(store, on_object, on_chunk);
  for (const auto& id : roots) SLINGSHOT_RETURN_IF_ERROR(w.Object(id, "root " + id.Short()));
  return Status::OK();
}

Result<GcStats> CollectGarbage(ChunkStore* store, const std::vector<ChunkId>& extra_roots) {
  auto guard = store->BeginGc();
  GcStats stats;
  std::function<Status(const ChunkId&, ByteView)> on_object = [](const ChunkId&, ByteView) { return Status::OK(); };
  std::function<Status(const ChunkId&)> on_chunk = [](const ChunkId&) { return Status::OK(); };
  Walker w(store, on_object, on_chunk);
  Status st = WalkInto(&w, store, {}, &stats.refs);
  for (size_t i = 0; st.ok() && i < extra_roots.size(); ++i) st = w.Object(extra_roots[i], "a live capability's grant");
  if (!st.ok()) return st.Annotate("garbage collection stopped before sweeping anything");
  stats.live_objects = w.objects_.size();
  stats.live_chunks = w.chunks_.size();

  constexpr size_t kDeleteBatch = 1024;
  std::vector<ChunkId> dead;
  SLINGSHOT_RETURN_IF_ERROR(store->ForEachChunk([&](const ChunkId& id) {
    if (!w.chunks_.count(id)) dead.push_back(id);
    return true;
  }));
  for (size_t i = 0; i < dead.size(); i += kDeleteBatch) {
    std::vector<ChunkId> batch;
    for (size_t j = i; j < std::min(dead.size(), i + kDeleteBatch); ++j) {
      if (!store->IsProtected(dead[j])) batch.push_back(dead[j]);
    }
    SLINGSHOT_RETURN_IF_ERROR(store->Delete(batch));
    stats.swept_chunks += batch.size();
  }
  dead.clear();
  SLINGSHOT_RETURN_IF_ERROR(store->ForEachObject([&](const ChunkId& id) {
    if (!w.objects_.count(id) && !store->IsProtected(id)) dead.push_back(id);
    return true;
  }));
  SLINGSHOT_RETURN_IF_ERROR(store->DeleteObjects(dead));
  stats.swept_objects = dead.size();
  guard.reset();
  SLINGSHOT_ASSIGN_OR_RETURN(stats.compaction, store->CompactPacks());
  return stats;
}

}  // namespace slingshot
