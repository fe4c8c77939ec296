#include "slingshot/replica/checkpoint_scope.h"

#include <algorithm>

#include "slingshot/store/gc.h"

namespace slingshot {

CheckpointScope::CheckpointScope(ChunkStore* store, size_t max_manifests)
    : store_(store), max_manifests_(std::max<size_t>(1, max_manifests)) {}

Result<std::shared_ptr<const CheckpointScope::IdSet>> CheckpointScope::Reachable(const ChunkId& manifest) {
  {
    MutexLock l(&mu_);
    auto it = sets_.find(manifest);
    if (it != sets_.end()) return it->second;
  }
  auto set = std::make_shared<IdSet>();
  SLINGSHOT_RETURN_IF_ERROR(WalkObjects(
      store_, {manifest},
      [&](const ChunkId& id, ByteView) {
        set->insert(id);
        return Status::OK();
      },
      [&](const ChunkId& id) {
        set->insert(id);
        return Status::OK();
      }));
  MutexLock l(&mu_);
  auto [it, fresh] = sets_.emplace(manifest, std::move(set));
  if (fresh) {
    lru_.push_front(manifest);
    while (lru_.size() > max_manifests_) {
      sets_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  return it->second;
}

Result<Ref> CheckpointScope::GrantCurrent(const Capability& cap, int64_t now) {
  return GrantRef(cap, "manifest/" + cap.service, now);
}

Result<Ref> CheckpointScope::GrantRef(const Capability& cap, const std::string& name, int64_t now) {
  if (cap.not_after <= now) return Status::PermissionDenied("capability " + cap.fingerprint + " has expired");
  SLINGSHOT_ASSIGN_OR_RETURN(Ref ref, store_->GetRef(name));
  SLINGSHOT_RETURN_IF_ERROR(Reachable(ref.object).status());
  MutexLock l(&mu_);
  for (auto it = grants_.begin(); it != grants_.end();) {  // forget the expired
    it = it->second.not_after <= now ? grants_.erase(it) : std::next(it);
  }
  Grant& g = grants_[cap.fingerprint];
  g.not_after = cap.not_after;
  if (std::find(g.manifests.begin(), g.manifests.end(), ref.object) == g.manifests.end()) {
    g.manifests.push_back(ref.object);
  }
  return ref;
}

std::vector<ChunkId> CheckpointScope::LiveManifests(int64_t now) {
  std::vector<ChunkId> out;
  MutexLock l(&mu_);
  for (const auto& [fingerprint, g] : grants_) {
    if (g.not_after > now) out.insert(out.end(), g.manifests.begin(), g.manifests.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Status CheckpointScope::Check(const Capability& cap, const std::vector<ChunkId>& ids, int64_t now) {
  if (cap.not_after <= now) return Status::PermissionDenied("capability " + cap.fingerprint + " has expired");
  std::vector<ChunkId> manifests;
  {
    MutexLock l(&mu_);
    auto it = grants_.find(cap.fingerprint);
    if (it != grants_.end()) manifests = it->second.manifests;
  }
  if (manifests.empty()) {
    return Status::PermissionDenied("the capability for " + cap.service +
                                    " has not been given a manifest yet: ask for ref manifest/" + cap.service +
                                    " first");
  }
  std::vector<std::shared_ptr<const IdSet>> sets;
  for (const auto& m : manifests) {
    SLINGSHOT_ASSIGN_OR_RETURN(auto s, Reachable(m));
    sets.push_back(std::move(s));
  }
  for (const auto& id : ids) {
    bool ok = std::any_of(sets.begin(), sets.end(), [&](const auto& s) { return s->count(id) > 0; });
    if (!ok) {
      return Status::PermissionDenied("object " + id.Short() + " is not part of a checkpoint of " + cap.service +
                                      ", which is all a capability for it may read");
    }
  }
  return Status::OK();
}

}  // namespace slingshot
