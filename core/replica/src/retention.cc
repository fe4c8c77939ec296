#include "slingshot/replica/retention.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "slingshot/base/coding.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/working_set.h"

namespace slingshot {
namespace {
constexpr std::string_view kHistory = "history/";
constexpr std::string_view kWorkingSet = "working-set/";
constexpr std::string_view kManifest = "manifest/";
constexpr std::string_view kBoot = "boot/";

// The service a ref belongs to ("" for none); working sets are attributed
// by the tables they describe, not by name.
std::string ServiceOfRef(const std::string& name) {
  auto after = [&](std::string_view prefix) { return name.substr(prefix.size()); };
  if (name.rfind(kManifest, 0) == 0) return after(kManifest);
  if (name.rfind(kHistory, 0) == 0 || name.rfind(kBoot, 0) == 0) {
    std::string rest = after(name[0] == 'h' ? kHistory : kBoot);
    return rest.substr(0, rest.rfind('/'));
  }
  return "";
}

struct Reach {
  std::unordered_map<ChunkId, uint64_t, ChunkIdHash> objects;  // id -> size
  std::unordered_set<ChunkId, ChunkIdHash> chunks;
};

Status WalkInto(ChunkStore* store, const std::vector<std::string>& names, Reach* reach) {
  return WalkReachable(
      store, names,
      [&](const ChunkId& id, ByteView bytes) {
        reach->objects.emplace(id, bytes.size());
        return Status::OK();
      },
      [&](const ChunkId& id) {
        reach->chunks.insert(id);
        return Status::OK();
      });
}
}  // namespace

std::string HistoryRef(const std::string& service, uint64_t epoch) {
  char digits[24];
  std::snprintf(digits, sizeof(digits), "%020llu", static_cast<unsigned long long>(epoch));
  return std::string(kHistory) + service + "/" + digits;
}

Status RecordCheckpoint(ChunkStore* store, const std::string& service, uint64_t epoch, const ChunkId& manifest) {
  return store->SetRef(Ref{HistoryRef(service, epoch), ObjectKind::kManifest, manifest});
}

Result<RetentionStats> ApplyRetention(ChunkStore* store, const RetentionPolicy& policy,
                                      const std::vector<ChunkId>& live_roots) {
  const auto start = std::chrono::steady_clock::now();
  RetentionStats stats;
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkStoreStats before, store->Stats());
  stats.stored_bytes_before = before.stored_bytes;
  const uint32_t keep = std::max<uint32_t>(1, policy.keep_checkpoints);
  const std::set<ChunkId> live(live_roots.begin(), live_roots.end());

  SLINGSHOT_ASSIGN_OR_RETURN(std::vector<Ref> refs, store->ListRefs());
  // Per service, its history refs in epoch order (the names sort so).
  std::map<std::string, std::vector<Ref>> history;
  std::vector<Ref> working_sets;
  std::set<ChunkId> kept_manifests(live);
  for (auto& r : refs) {
    if (r.name.rfind(kHistory, 0) == 0) {
      std::string rest = r.name.substr(kHistory.size());
      history[rest.substr(0, rest.rfind('/'))].push_back(r);
    } else if (r.name.rfind(kWorkingSet, 0) == 0) {
      working_sets.push_back(r);
    } else if (r.kind == ObjectKind::kManifest) {
      kept_manifests.insert(r.object);  // manifest/SERVICE: the current one
    }
  }
  for (auto& [service, list] : history) {
    std::sort(list.begin(), list.end(), [](const Ref& a, const Ref& b) { return a.name < b.name; });
    for (size_t i = 0; i < list.size(); ++i) {
      const bool newest = i + keep >= list.size();
      if (newest || live.count(list[i].object)) {
        kept_manifests.insert(list[i].object);
        ++stats.kept_checkpoints;
        continue;
      }
      SLINGSHOT_RETURN_IF_ERROR(store->DeleteRef(list[i].name));
      ++stats.dropped_checkpoints;
    }
  }
  // The disk and RAM tables the kept checkpoints use, and every table a ref
  // names directly (a service's first disk, imported disks): their working
  // sets stay.
  std::set<ChunkId> tables;
  for (const auto& r : refs) {
    if (r.kind == ObjectKind::kDiskTable) tables.insert(r.object);
  }
  for (const auto& id : kept_manifests) {
    auto bytes = store->GetObject(id);
    if (!bytes.ok()) continue;  // marking reports it, before anything is swept
    auto m = DecodeSignedManifestUnverified(*bytes);
    if (!m.ok()) continue;
    for (const ChunkId& t : {m->disk_table, m->ram_table}) {
      if (!t.IsNull()) tables.insert(t);
    }
  }
  for (const auto& r : working_sets) {
    auto table = ChunkId::FromHex(r.name.substr(kWorkingSet.size()));
    if (table.ok() && tables.count(*table)) continue;
    SLINGSHOT_RETURN_IF_ERROR(store->DeleteRef(r.name));
    ++stats.dropped_working_sets;
  }
  SLINGSHOT_ASSIGN_OR_RETURN(stats.gc, CollectGarbage(store, live_roots));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkStoreStats after, store->Stats());
  stats.stored_bytes_after = after.stored_bytes;
  stats.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

Result<std::vector<ServiceUsage>> MeasureUsage(ChunkStore* store) {
  SLINGSHOT_ASSIGN_OR_RETURN(std::vector<Ref> refs, store->ListRefs());
  std::map<std::string, std::vector<std::string>> names;  // service -> its refs
  std::map<std::string, uint64_t> checkpoints;
  std::vector<Ref> working_sets;
  for (const auto& r : refs) {
    if (r.name.rfind(kWorkingSet, 0) == 0) {
      working_sets.push_back(r);
      continue;
    }
    const std::string service = ServiceOfRef(r.name);
    names[service].push_back(r.name);
    if (r.name.rfind(kHistory, 0) == 0) ++checkpoints[service];
  }
  std::map<std::string, Reach> reach;
  for (const auto& [service, list] : names) SLINGSHOT_RETURN_IF_ERROR(WalkInto(store, list, &reach[service]));
  for (const auto& ws : working_sets) {
    auto table = ChunkId::FromHex(ws.name.substr(kWorkingSet.size()));
    bool owned = false;
    for (auto& [service, r] : reach) {
      if (service.empty() || !table.ok() || !r.objects.count(*table)) continue;
      SLINGSHOT_RETURN_IF_ERROR(WalkInto(store, {ws.name}, &r));
      owned = true;
    }
    if (!owned) SLINGSHOT_RETURN_IF_ERROR(WalkInto(store, {ws.name}, &reach[""]));
  }

  // How many services reach each chunk and object, and each chunk's size.
  std::unordered_map<ChunkId, uint32_t, ChunkIdHash> chunk_holders, object_holders;
  std::unordered_map<ChunkId, uint64_t, ChunkIdHash> chunk_bytes;
  for (const auto& [service, r] : reach) {
    for (const auto& id : r.chunks) {
      if (chunk_holders[id]++ > 0) continue;
      auto size = store->SizeOf(id);
      if (!size.ok() && !size.status().IsNotFound()) return size.status();
      chunk_bytes[id] = size.ok() ? size->stored : 0;  // missing: store verify reports it
    }
    for (const auto& [id, bytes] : r.objects) ++object_holders[id];
  }
  std::vector<ServiceUsage> out;
  for (const auto& [service, r] : reach) {
    ServiceUsage u;
    u.service = service;
    u.checkpoints = checkpoints[service];
    u.chunks = r.chunks.size();
    for (const auto& id : r.chunks) {
      const uint64_t b = chunk_bytes[id];
      u.bytes += b;
      if (chunk_holders[id] == 1) u.own_bytes += b;
    }
    for (const auto& [id, b] : r.objects) {
      u.bytes += b;
      if (object_holders[id] == 1) u.own_bytes += b;
    }
    out.push_back(std::move(u));
  }
  // std::map put "" first; the refs of no service go last.
  if (!out.empty() && out.front().service.empty()) std::rotate(out.begin(), out.begin() + 1, out.end());
  return out;
}

std::string DescribeUsage(const ServiceUsage& u) {
  return "store " + HumanBytes(u.bytes) + ", " + HumanBytes(u.own_bytes) + " of it its own; " +
         std::to_string(u.checkpoints) + (u.checkpoints == 1 ? " checkpoint, " : " checkpoints, ") +
         std::to_string(u.chunks) + " chunks";
}

}  // namespace slingshot
