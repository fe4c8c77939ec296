#include "slingshot/replica/replica_disk.h"

#include <filesystem>
#include <unordered_set>

namespace slingshot {

std::vector<ChunkId> PrefetchOrder(const DiskTable& table, const std::vector<ChunkId>& working_set) {
  std::vector<ChunkId> order;
  order.reserve(table.ids.size());
  std::unordered_set<ChunkId, ChunkIdHash> seen;
  for (const auto& list : {&working_set, &table.ids}) {
    for (const auto& id : *list) {
      if (!id.IsNull() && seen.insert(id).second) order.push_back(id);
    }
  }
  return order;
}

Result<std::unique_ptr<ReplicaDisk>> ReplicaDisk::Open(const DiskTable& table, ChunkSource* source,
                                                       const Hypervisor& hv, ReplicaDiskOptions options) {
  NbdDisk where = hv.DiskAddress(options.dir);
  return Open(table, source, std::move(where), std::move(options));
}

Result<std::unique_ptr<ReplicaDisk>> ReplicaDisk::Open(const DiskTable& table, ChunkSource* source, NbdDisk where,
                                                       ReplicaDiskOptions options) {
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return Status::IOError("create " + options.dir + ": " + ec.message());
  std::unique_ptr<ReplicaDisk> d(new ReplicaDisk);
  ChunkTableExportOptions eo;
  eo.read_only = options.read_only;
  eo.cipher = options.cipher;
  SLINGSHOT_ASSIGN_OR_RETURN(auto exp, ChunkTableExport::Open(table, source, options.dir + "/overlay", eo));
  d->export_ = exp.get();
  d->nbd_ = std::make_unique<NbdServer>();
  d->address_ = std::move(where);
  if (d->address_.export_name.empty()) d->address_.export_name = "disk";
  d->address_.read_only = options.read_only;
  SLINGSHOT_RETURN_IF_ERROR(
      d->nbd_->AddExport(d->address_.export_name, std::shared_ptr<BlockExport>(std::move(exp)), options.description));
  if (!d->address_.unix_socket.empty()) {
    SLINGSHOT_RETURN_IF_ERROR(d->nbd_->ListenUnix(d->address_.unix_socket));
  } else {
    SLINGSHOT_ASSIGN_OR_RETURN(d->address_.port, d->nbd_->ListenTcp(d->address_.host, d->address_.port));
  }
  SLINGSHOT_RETURN_IF_ERROR(d->nbd_->Start());
  if (options.prefetch) {
    d->prefetch_ = std::make_unique<Prefetcher>(options.prefetch, PrefetchOrder(table, options.working_set));
  }
  return d;
}

ReplicaDisk::~ReplicaDisk() { Stop(); }

uint64_t ReplicaDisk::prefetched() const { return prefetch_ ? prefetch_->done() : 0; }
uint64_t ReplicaDisk::prefetch_total() const { return prefetch_ ? prefetch_->total() : 0; }

void ReplicaDisk::Stop() {
  if (prefetch_) prefetch_->Stop();
  if (nbd_) nbd_->Stop();
}

}  // namespace slingshot
