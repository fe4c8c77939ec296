// The working set of a disk (DESIGN.md §5): the chunks a primary read first
// after boot or restore, in the order it read them. The home records it
// (ChunkTableExport::FirstReads) and stores it next to the disk table; a
// surrogate prefetches in that order, so the chunks a fresh replica will ask
// for are usually already local when it asks.
//
// Encoded as a sealed frame (coding.h), magic "SSWS", version 1, body:
//   table  32 bytes  the disk table's object id
//   count  u32       <= kMaxWorkingSetIds
//   ids    count x 32 bytes (never null)
// Stored as an object under the ref "working-set/<table id hex>".
#ifndef SLINGSHOT_STORE_WORKING_SET_H_
#define SLINGSHOT_STORE_WORKING_SET_H_

#include <string>
#include <vector>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

class ChunkStore;

constexpr size_t kMaxWorkingSetIds = 1u << 20;

struct WorkingSetRecord {
  ChunkId table;
  std::vector<ChunkId> ids;

  Bytes Encode() const;
  static Result<WorkingSetRecord> Decode(ByteView bytes);
};

std::string WorkingSetRef(const ChunkId& table);
// Stores the record and points its ref at it (replacing an older one).
Status SaveWorkingSet(ChunkStore* store, const WorkingSetRecord& ws);
// NotFound if none was recorded for table.
Result<WorkingSetRecord> LoadWorkingSet(ChunkStore* store, const ChunkId& table);

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_WORKING_SET_H_
