#include "slingshot/store/working_set.h"

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"

namespace slingshot {
namespace {
constexpr Magic kMagic = {'S', 'S', 'W', 'S'};
constexpr uint16_t kVersion = 1;
}  // namespace

Bytes WorkingSetRecord::Encode() const {
  Bytes body;
  Encoder e(&body);
  e.Id(table);
  e.U32(static_cast<uint32_t>(ids.size()));
  for (const auto& id : ids) e.Id(id);
  return SealFrame(kMagic, kVersion, body);
}

Result<WorkingSetRecord> WorkingSetRecord::Decode(ByteView bytes) {
  SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(bytes, kMagic, kVersion,
                                                      ChunkId::kSize * (kMaxWorkingSetIds + 2), "working set"));
  Decoder d(f.body, "working set");
  WorkingSetRecord ws;
  ws.table = d.Id();
  uint32_t n = d.U32();
  if (n > kMaxWorkingSetIds || size_t(n) * ChunkId::kSize != d.remaining()) {
    d.Fail("count " + std::to_string(n) + " does not match the record's length");
  } else {
    ws.ids.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      ws.ids.push_back(d.Id());
      if (ws.ids.back().IsNull()) d.Fail("id " + std::to_string(i) + " is null");
    }
  }
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  return ws;
}

std::string WorkingSetRef(const ChunkId& table) { return "working-set/" + table.ToHex(); }

Status SaveWorkingSet(ChunkStore* store, const WorkingSetRecord& ws) {
  if (ws.ids.size() > kMaxWorkingSetIds) {
    return Status::InvalidArgument("a working set holds at most " + std::to_string(kMaxWorkingSetIds) + " chunks");
  }
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkId obj, store->PutObject(ws.Encode()));
  return store->SetRef(Ref{WorkingSetRef(ws.table), ObjectKind::kWorkingSet, obj});
}

Result<WorkingSetRecord> LoadWorkingSet(ChunkStore* store, const ChunkId& table) {
  SLINGSHOT_ASSIGN_OR_RETURN(Ref r, store->GetRef(WorkingSetRef(table)));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, store->GetObject(r.object));
  SLINGSHOT_ASSIGN_OR_RETURN(WorkingSetRecord ws, WorkingSetRecord::Decode(b));
  if (ws.table != table) return Status::Corruption("working set ref for " + table.Short() + " names another table");
  return ws;
}

}  // namespace slingshot
