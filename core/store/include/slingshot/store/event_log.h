// EventLog: the client's durable log of every input since the last
// checkpoint (DESIGN.md §4). A replica is rebuilt from a checkpoint plus the
// records after the checkpoint's seq, so an acknowledged record must never
// be lost or changed, and a torn write must never be returned.
//
// Directory layout:
//   seg-<first seq, 20 digits>.log   segments, append-only, rolled by size
//   LOCK                              flock'ed by the process that has it open
//   TRUNCATED                         sealed frame (coding.h, magic "SSLT"):
//                                     u64 seq; records <= seq are discarded
//
// Segment format, version 1 (little-endian):
//   header (24 bytes): magic "SSEL", u16 version, u16 0, u64 first_seq,
//                      u32 CRC-32C of the preceding 16 bytes, u32 0
//   records, back to back, each:
//     u32 crc      CRC-32C of payload then bytes [4,28) of this header
//     u32 length   payload length, <= max_payload (and <= 16 MiB always)
//     u64 seq      = previous seq + 1 (the first = first_seq)
//     i64 time_ns  wall-clock time of the input (ns since the Unix epoch)
//     u16 type     the ServiceAdapter's input type
//     u16 flags    0
//     payload      length bytes
//
// Recovery (Open): every segment is scanned and every record checked. In
// the last segment, an invalid record with no valid record after it is a
// torn write: the tail is cut (reported in recovery()) and appends continue
// from there. So is an invalid record followed by intact ones when the gap
// holds zeroed sectors: pages of a never-synced write lost in a power cut
// (an acknowledged record cannot follow such a hole, since its fdatasync
// would have written it). Any other invalid record is damage, not a torn
// write: Open fails with Corruption saying where, and changes nothing.
//
// Durability: Append(sync=true) returns after the record and all before it
// are on disk (fdatasync). Concurrent appenders share one write and one
// fdatasync (group commit). Append(sync=false) survives a process crash but
// not a power loss, until the next synced append or Sync(). Open makes the
// records it keeps durable (a killed writer may have left unsynced ones).
// After a failed fdatasync the log refuses appends and syncs until reopened.
//
// Thread-safety: all methods may be called concurrently.
#ifndef SLINGSHOT_STORE_EVENT_LOG_H_
#define SLINGSHOT_STORE_EVENT_LOG_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/env.h"
#include "slingshot/base/status.h"

namespace slingshot {

struct EventLogOptions {
  uint64_t segment_bytes = 64ull << 20;  // roll to a new segment past this size
  uint32_t max_payload = 1u << 20;       // larger appends are refused
  bool create_if_missing = true;
  // Every write, sync, creation and removal goes through it (env.h); null:
  // Env::Default().
  Env* env = nullptr;
};

struct LogRecord {
  uint64_t seq = 0;
  int64_t time_ns = 0;
  uint16_t type = 0;
  Bytes payload;
};

struct LogRecovery {
  uint64_t segments = 0;
  uint64_t records = 0;        // records kept
  uint64_t torn_bytes = 0;     // bytes cut from the tail of the last segment
  std::string torn_reason;     // what was wrong with the first cut record
  uint64_t first_seq = 0;      // first retained record (0 if none)
  uint64_t last_seq = 0;       // last retained record (0 if none)
  uint64_t truncated_seq = 0;  // records <= this were discarded by TruncateUpTo
};

class EventLog {
 public:
  static constexpr uint32_t kHeaderSize = 24;
  static constexpr uint32_t kRecordHeaderSize = 28;

  static Result<std::unique_ptr<EventLog>> Open(const std::string& dir,
                                                const EventLogOptions& options = {});
  ~EventLog();

  // Appends a record; returns its seq. time_ns < 0 means "now".
  // InvalidArgument for an oversized payload; IOError if the disk refuses
  // (e.g. full), in which case nothing of the record remains in the log and
  // later appends may succeed.
  Result<uint64_t> Append(uint16_t type, ByteView payload, bool sync = true, int64_t time_ns = -1);
  // Makes every appended record durable.
  Status Sync();

  // Calls fn for each record with seq >= from, in order, until fn returns
  // false. Reads from disk and re-checks every record (Corruption if a byte
  // changed since it was written). Sees records appended before the call.
  Status ReadFrom(uint64_t from, const std::function<bool(const LogRecord&)>& fn);

  // Discards every record with seq <= seq (the home has checkpointed them).
  // Whole segments are deleted; the boundary is kept in TRUNCATED.
  Status TruncateUpTo(uint64_t seq);

  // Discards every record and continues the log after seq: the next append
  // gets seq + 1 (a device that takes a service over starts from the
  // home's checkpoint, whose inputs <= seq it never had). Returns how many
  // records above seq were discarded.
  Result<uint64_t> RestartAfter(uint64_t seq);

  uint64_t last_seq() const;       // 0 when no record was ever appended
  uint64_t truncated_seq() const;  // records <= this are gone
  const LogRecovery& recovery() const;

 private:
  struct Impl;
  explicit EventLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_EVENT_LOG_H_
