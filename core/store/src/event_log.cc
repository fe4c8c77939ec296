#include "slingshot/store/event_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <vector>

#include "slingshot/store/chunk_source.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/base/env.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"

namespace slingshot {
namespace fs = std::filesystem;
namespace {

constexpr char kSegMagic[4] = {'S', 'S', 'E', 'L'};
constexpr uint16_t kSegVersion = 1;
constexpr Magic kTruncMagic = {'S', 'S', 'L', 'T'};
constexpr uint16_t kTruncVersion = 1;
constexpr size_t kMaxGroupBytes = 4u << 20;
constexpr uint64_t kMaxSegmentOption = 512ull << 20;
constexpr uint64_t kMaxSegmentFile = kMaxSegmentOption + kMaxGroupBytes + (16u << 20) + 4096;
constexpr uint32_t kHdr = EventLog::kHeaderSize;
constexpr uint32_t kRecHdr = EventLog::kRecordHeaderSize;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string SegName(uint64_t first_seq) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "seg-%020llu.log", static_cast<unsigned long long>(first_seq));
  return buf;
}

Bytes SegHeader(uint64_t first_seq) {
  Bytes h(kHdr, 0);
  std::memcpy(h.data(), kSegMagic, 4);
  PutU16(h.data() + 4, kSegVersion);
  PutU64(h.data() + 8, first_seq);
  PutU32(h.data() + 16, crc32c::Value(h.data(), 16));
  return h;
}

// Record crc: payload first, then header bytes [4, 28).
uint32_t RecordCrc(uint32_t payload_crc, const uint8_t* hdr) {
  return crc32c::Extend(payload_crc, hdr + 4, kRecHdr - 4);
}

void EncodeRecordHeader(uint8_t* h, uint32_t payload_crc, uint32_t len, uint64_t seq, int64_t t,
                        uint16_t type) {
  PutU32(h + 4, len);
  PutU64(h + 8, seq);
  PutU64(h + 16, static_cast<uint64_t>(t));
  PutU16(h + 24, type);
  PutU16(h + 26, 0);
  PutU32(h, RecordCrc(payload_crc, h));
}

// Checks the record at seg[off]. seq_ok decides which seqs are acceptable.
// On success fills rec (if given) and *next; on failure sets *why.
// Lengths are bounded by the format's cap, not by options.max_payload: a
// smaller configured limit must never make recovery cut records that were
// acknowledged under a larger one.
template <typename SeqOk>
bool ParseRecord(ByteView seg, size_t off, SeqOk seq_ok, LogRecord* rec, size_t* next, std::string* why) {
  if (seg.size() - off < kRecHdr) {
    *why = "only " + std::to_string(seg.size() - off) + " bytes of a record header";
    return false;
  }
  const uint8_t* h = seg.data() + off;
  uint32_t len = GetU32(h + 4);
  uint64_t seq = GetU64(h + 8);
  if (len > kMaxChunkSize) {
    *why = "length field " + std::to_string(len) + " exceeds the 16 MiB record limit";
    return false;
  }
  if (seg.size() - off - kRecHdr < len) {
    *why = "record of " + std::to_string(len) + " bytes runs past the end of the segment";
    return false;
  }
  if (!seq_ok(seq)) {
    *why = "unexpected seq " + std::to_string(seq);
    return false;
  }
  uint32_t pcrc = crc32c::Value(h + kRecHdr, len);
  if (RecordCrc(pcrc, h) != GetU32(h)) {
    *why = "checksum mismatch";
    return false;
  }
  if (GetU16(h + 26) != 0) {
    *why = "unknown flags";
    return false;
  }
  if (rec) {
    rec->seq = seq;
    rec->time_ns = static_cast<int64_t>(GetU64(h + 16));
    rec->type = GetU16(h + 24);
    rec->payload.assign(h + kRecHdr, h + kRecHdr + len);
  }
  *next = off + kRecHdr + len;
  return true;
}

// After a power loss, a write that was never synced can come back with any
// of its pages lost: they read as zeros, while later pages of the same write
// survive. Every such hole is a run of zeros ending on a sector boundary that
// starts either at a sector boundary or where the damaged record starts (the
// part of its page that held older, synced bytes survives). An acknowledged
// record cannot follow such a hole: its fdatasync would have written the
// hole's page too. So a bad record at `bad` followed by an intact record at
// `next` is a lost write, safe to cut, when [bad, next) holds such a zero
// run; any other damage is corruption.
bool LostWriteBetween(ByteView seg, size_t bad, size_t next) {
  constexpr size_t kSector = 512;
  size_t run_start = bad;
  for (size_t i = bad; i < next; ++i) {
    if (seg[i] != 0) {
      run_start = i + 1;
      continue;
    }
    const size_t end = i + 1;
    if (end % kSector == 0 && (run_start == bad || end - run_start >= kSector)) return true;
  }
  return false;
}

Status CheckSegHeader(ByteView seg, uint64_t want_first, const std::string& path) {
  if (seg.size() < kHdr) return Status::Corruption(path + ": segment header is truncated");
  if (std::memcmp(seg.data(), kSegMagic, 4) != 0) return Status::Corruption(path + ": not an event log segment (bad magic)");
  if (crc32c::Value(seg.data(), 16) != GetU32(seg.data() + 16) || GetU32(seg.data() + 20) != 0) {
    return Status::Corruption(path + ": segment header checksum mismatch");
  }
  if (GetU16(seg.data() + 4) != kSegVersion) {
    return Status::Unsupported(path + ": segment version " + std::to_string(GetU16(seg.data() + 4)) + " is not supported by this build");
  }
  if (GetU64(seg.data() + 8) != want_first) return Status::Corruption(path + ": header first seq disagrees with the file name");
  return Status::OK();
}

struct Segment {
  uint64_t first_seq;
  uint64_t last_seq;  // first_seq - 1 when empty
  std::string path;
  uint64_t size;      // bytes written and complete
};

struct Writer {
  uint16_t type = 0;
  ByteView payload;
  uint32_t payload_crc = 0;
  int64_t time_ns = 0;
  bool sync = true;
  bool done = false;
  uint64_t seq = 0;
  Status status;
};

}  // namespace

struct EventLog::Impl {
  std::string dir;
  EventLogOptions options;
  LogRecovery recovery;
  UniqueFd lock;  // one writer process at a time

  Mutex io_mu ACQUIRED_BEFORE(mu);  // held by whoever writes files
  Mutex mu;
  CondVar cv;
  std::deque<Writer*> writers GUARDED_BY(mu);
  std::vector<Segment> segments GUARDED_BY(mu);  // changed only with io_mu held too
  std::unique_ptr<WritableFile> active GUARDED_BY(io_mu);
  Env* env = Env::Default();
  bool unsynced GUARDED_BY(io_mu) = false;
  uint64_t next_seq GUARDED_BY(mu) = 1;
  uint64_t truncated GUARDED_BY(mu) = 0;
  Status broken GUARDED_BY(mu);

  // Maps a segment's first `limit` bytes (no copy: a replay of a large
  // segment costs no heap). The cap is fixed by the format, not derived from
  // options, which may change between runs. Mapped bytes are never cut from
  // under a reader: only bytes past the committed size are ever truncated.
  Result<MappedFile> MapSegment(const std::string& path, uint64_t limit) {
    return MappedFile::Open(path, kMaxSegmentFile, limit);
  }

  Status CreateSegment(uint64_t first_seq) REQUIRES(io_mu) EXCLUDES(mu) {
    // The old segment must be durable before records land in a new one:
    // recovery treats damage in any segment but the last as corruption.
    if (active && unsynced) {
      SLINGSHOT_RETURN_IF_ERROR(active->Sync().Annotate("log segment"));
      unsynced = false;
    }
    std::string path = dir + "/" + SegName(first_seq);
    auto fd = env->NewFile(path, 0600);
    if (!fd.ok()) return fd.status().Annotate("create log segment");
    Bytes h = SegHeader(first_seq);
    Status st = (*fd)->WriteAt(0, h);
    if (st.ok()) st = (*fd)->Sync();
    if (st.ok()) st = env->SyncDir(dir);
    if (!st.ok()) {
      (void)env->RemoveFile(path);
      return st;
    }
    active = std::move(*fd);
    unsynced = false;
    MutexLock l(&mu);
    segments.push_back({first_seq, first_seq - 1, path, kHdr});
    return Status::OK();
  }

  // Runs inside Open, before any other thread can see the log.
  Status Recover() NO_THREAD_SAFETY_ANALYSIS {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Status::IOError("create " + dir + ": " + ec.message());
    SLINGSHOT_ASSIGN_OR_RETURN(lock, LockDirectory(dir, "event log"));
    auto marker = ReadFileBounded(dir + "/TRUNCATED", 4096);
    if (marker.ok()) {
      SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(*marker, kTruncMagic, kTruncVersion, 64, dir + "/TRUNCATED"));
      Decoder d(f.body, dir + "/TRUNCATED");
      truncated = d.U64();
      SLINGSHOT_RETURN_IF_ERROR(d.Finish());
    } else if (!marker.status().IsNotFound()) {
      return marker.status();
    }
    recovery.truncated_seq = truncated;

    std::vector<std::pair<uint64_t, std::string>> files;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      std::string name = e.path().filename().string();
      unsigned long long first = 0;
      char tail[8] = {0};
      if (name.size() == SegName(0).size() && std::sscanf(name.c_str(), "seg-%20llu.%3s", &first, tail) == 2 &&
          std::string(tail) == "log" && SegName(first) == name) {
        files.emplace_back(first, e.path().string());
      }
    }
    if (ec) return Status::IOError("list " + dir + ": " + ec.message());
    std::sort(files.begin(), files.end());

    for (size_t i = 0; i < files.size(); ++i) {
      const bool last = i + 1 == files.size();
      const auto& [first, path] = files[i];
      SLINGSHOT_ASSIGN_OR_RETURN(MappedFile mapped, MapSegment(path, UINT64_MAX));
      ByteView data = mapped.view();
      Status hs = CheckSegHeader(data, first, path);
      if (!hs.ok()) {
        if (last && data.size() <= kHdr) {  // torn creation of a new segment
          LogWarning("event log: removing " + path + ", a segment whose creation was cut short");
          SLINGSHOT_RETURN_IF_ERROR(env->RemoveFile(path));
          recovery.torn_bytes += data.size();
          recovery.torn_reason = "incomplete segment header";
          SLINGSHOT_RETURN_IF_ERROR(env->SyncDir(dir));
          continue;
        }
        return hs.Annotate("event log damaged; move the directory aside and report it");
      }
      if (segments.empty()) {
        if (first > truncated + 1) {
          return Status::Corruption(dir + ": records " + std::to_string(truncated + 1) + ".." +
                                    std::to_string(first - 1) + " are missing (a segment was deleted)");
        }
      } else if (first != segments.back().last_seq + 1) {
        return Status::Corruption(path + ": starts at seq " + std::to_string(first) + " but the previous segment ends at " +
                                  std::to_string(segments.back().last_seq));
      }
      uint64_t expect = first;
      size_t off = kHdr;
      std::string why;
      while (off < data.size()) {
        size_t next;
        if (!ParseRecord(data, off, [&](uint64_t s) { return s == expect; }, nullptr, &next, &why)) break;
        ++expect;
        off = next;
      }
      if (off < data.size()) {
        std::string where = path + " offset " + std::to_string(off) + " (seq " + std::to_string(expect) + ")";
        if (!last) {
          return Status::Corruption("event log record damaged at " + where + ": " + why +
                                    "; later segments exist, so this is not a torn write. Move the log aside and report it");
        }
        // An intact record after the bad one means damage, not a torn
        // write, unless the gap shows a lost write (see LostWriteBetween).
        for (size_t p = off + 1; p + kRecHdr <= data.size(); ++p) {
          size_t n2;
          std::string w2;
          if (ParseRecord(data, p, [&](uint64_t s) { return s >= expect && s - expect < (1ull << 32); },
                          nullptr, &n2, &w2)) {
            if (LostWriteBetween(data, off, p)) {
              why += " (a lost write: zeroed sectors before intact records that were never synced)";
              break;
            }
            return Status::Corruption("event log record damaged at " + where + ": " + why +
                                      ", yet an intact record follows at offset " + std::to_string(p) +
                                      ": this is damage, not a torn write. Move the log aside and report it");
          }
        }
        LogWarning("event log: cutting torn tail of " + std::to_string(data.size() - off) + " bytes at " + where + ": " + why);
        {
          SLINGSHOT_ASSIGN_OR_RETURN(auto fd, env->OpenFile(path));
          Status cut = fd->Truncate(off);
          if (cut.ok()) cut = fd->Sync();
          SLINGSHOT_RETURN_IF_ERROR(cut.Annotate("cut the torn tail"));
        }
        recovery.torn_bytes += data.size() - off;
        recovery.torn_reason = why;
      }
      segments.push_back({first, expect - 1, path, off});
    }
    // Drop whole segments the truncation point covers (a crash may have
    // interrupted TruncateUpTo after it wrote the marker).
    while (segments.size() > 1 && segments.front().last_seq <= truncated) {
      SLINGSHOT_RETURN_IF_ERROR(env->RemoveFile(segments.front().path));
      segments.erase(segments.begin());
    }
    recovery.segments = segments.size();
    if (segments.empty()) {
      SLINGSHOT_RETURN_IF_ERROR(CreateSegment(truncated + 1));
    } else {
      SLINGSHOT_ASSIGN_OR_RETURN(auto fd, env->OpenFile(segments.back().path));
      // A process killed after an unsynced append left records that only
      // the page cache holds: what recovery keeps is made durable first.
      SLINGSHOT_RETURN_IF_ERROR(fd->Sync());
      active = std::move(fd);
    }
    next_seq = std::max(segments.back().last_seq + 1, truncated + 1);
    uint64_t first_kept = std::max(segments.front().first_seq, truncated + 1);
    recovery.last_seq = next_seq - 1 >= first_kept ? next_seq - 1 : 0;
    recovery.first_seq = recovery.last_seq ? first_kept : 0;
    recovery.records = recovery.last_seq ? recovery.last_seq - first_kept + 1 : 0;
    return Status::OK();
  }

  // Writes a group of records (leader only).
  Status WriteGroup(std::vector<Writer*>& group, uint64_t first_seq) REQUIRES(io_mu) EXCLUDES(mu) {
    Bytes buf;
    size_t total = 0;
    for (auto* w : group) total += kRecHdr + w->payload.size();
    buf.resize(total);
    size_t off = 0;
    bool sync = false;
    for (size_t i = 0; i < group.size(); ++i) {
      Writer* w = group[i];
      EncodeRecordHeader(buf.data() + off, w->payload_crc, static_cast<uint32_t>(w->payload.size()),
                         first_seq + i, w->time_ns, w->type);
      std::memcpy(buf.data() + off + kRecHdr, w->payload.data(), w->payload.size());
      off += kRecHdr + w->payload.size();
      sync |= w->sync;
    }
    Segment seg;
    {
      MutexLock l(&mu);
      seg = segments.back();
    }
    if (seg.size + total > options.segment_bytes && seg.last_seq >= seg.first_seq) {
      SLINGSHOT_RETURN_IF_ERROR(CreateSegment(first_seq));
      MutexLock l(&mu);
      seg = segments.back();
    }
    Status written = active->WriteAt(seg.size, buf);
    if (!written.ok()) {
      // Take back the partial write so no torn record stays in the log.
      Status undo = active->Truncate(seg.size);
      if (!undo.ok()) {
        MutexLock l(&mu);
        broken = undo.Annotate("event log " + seg.path + " could not undo a failed write; reopen the log to recover");
      }
      return written.Annotate("append to event log");
    }
    unsynced = true;
    if (sync) {
      Status synced = active->Sync();
      if (!synced.ok()) {
        MutexLock l(&mu);
        broken = synced.Annotate("the event log's fsync failed; reopen the log to recover");
        return broken;
      }
      unsynced = false;
    }
    MutexLock l(&mu);
    segments.back().size += total;
    segments.back().last_seq = first_seq + group.size() - 1;
    return Status::OK();
  }
};

EventLog::EventLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EventLog::~EventLog() {
  if (impl_ && impl_->active && impl_->unsynced) (void)impl_->active->Sync();
}

Result<std::unique_ptr<EventLog>> EventLog::Open(const std::string& dir, const EventLogOptions& options) {
  if (options.max_payload > kMaxChunkSize) return Status::InvalidArgument("max_payload above 16 MiB");
  if (options.segment_bytes == 0 || options.segment_bytes > kMaxSegmentOption) {
    return Status::InvalidArgument("segment_bytes must be 1 byte .. 512 MiB");
  }
  if (!options.create_if_missing && !fs::exists(dir)) return Status::NotFound("no event log in " + dir);
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->options = options;
  if (options.env) impl->env = options.env;
  SLINGSHOT_RETURN_IF_ERROR(impl->Recover());
  return std::unique_ptr<EventLog>(new EventLog(std::move(impl)));
}

Result<uint64_t> EventLog::Append(uint16_t type, ByteView payload, bool sync, int64_t time_ns) {
  if (payload.size() > impl_->options.max_payload) {
    return Status::InvalidArgument("event of " + std::to_string(payload.size()) + " bytes exceeds the log's limit of " +
                                   std::to_string(impl_->options.max_payload));
  }
  Writer w;
  w.type = type;
  w.payload = payload;
  w.payload_crc = crc32c::Value(payload);
  w.time_ns = time_ns < 0 ? NowNs() : time_ns;
  w.sync = sync;
  Impl& m = *impl_;
  m.mu.Lock();
  m.writers.push_back(&w);
  while (!w.done && m.writers.front() != &w) m.cv.Wait(&m.mu);
  if (w.done) {
    m.mu.Unlock();
    if (!w.status.ok()) return w.status;
    return w.seq;
  }
  // This writer leads: it writes its own record and those queued behind it.
  m.mu.Unlock();
  MutexLock io(&m.io_mu);
  m.mu.Lock();
  std::vector<Writer*> group;
  size_t bytes = 0;
  for (Writer* x : m.writers) {
    if (!group.empty() && bytes + x->payload.size() + kRecHdr > kMaxGroupBytes) break;
    group.push_back(x);
    bytes += x->payload.size() + kRecHdr;
  }
  uint64_t first = m.next_seq;
  Status st = m.broken;
  m.mu.Unlock();
  if (st.ok()) st = m.WriteGroup(group, first);
  m.mu.Lock();
  if (st.ok()) m.next_seq += group.size();
  for (size_t i = 0; i < group.size(); ++i) {
    group[i]->status = st;
    group[i]->seq = first + i;
    group[i]->done = true;
    m.writers.pop_front();
  }
  m.cv.SignalAll();
  m.mu.Unlock();
  if (!st.ok()) return st;
  return w.seq;
}

Status EventLog::Sync() {
  Impl& m = *impl_;
  MutexLock io(&m.io_mu);
  {
    MutexLock l(&m.mu);
    if (!m.broken.ok()) return m.broken;
  }
  if (m.unsynced) {
    Status synced = m.active->Sync();
    if (!synced.ok()) {
      // After a failed fsync the page cache may have dropped the records:
      // nothing more is taken until the log is reopened and recovered.
      MutexLock l(&m.mu);
      m.broken = synced.Annotate("the event log's fsync failed; reopen the log to recover");
      return m.broken;
    }
  }
  m.unsynced = false;
  return Status::OK();
}

Status EventLog::ReadFrom(uint64_t from, const std::function<bool(const LogRecord&)>& fn) {
  std::vector<Segment> segs;
  uint64_t trunc;
  {
    MutexLock l(&impl_->mu);
    segs = impl_->segments;
    trunc = impl_->truncated;
  }
  from = std::max(from, trunc + 1);
  for (const auto& s : segs) {
    if (s.last_seq < from) continue;
    auto mapped = impl_->MapSegment(s.path, s.size);
    if (!mapped.ok()) {
      if (mapped.status().IsNotFound()) {
        MutexLock l(&impl_->mu);
        if (s.last_seq <= impl_->truncated) continue;  // truncated away while we read
      }
      return mapped.status();
    }
    const ByteView data = mapped->view();
    if (data.size() < s.size) return Status::Corruption(s.path + ": segment is shorter than what was written to it");
    SLINGSHOT_RETURN_IF_ERROR(CheckSegHeader(data, s.first_seq, s.path));
    uint64_t expect = s.first_seq;
    size_t off = kHdr;
    LogRecord rec;
    while (off < s.size) {
      size_t next;
      std::string why;
      if (!ParseRecord(data.first(s.size), off, [&](uint64_t q) { return q == expect; }, &rec, &next, &why)) {
        return Status::Corruption("event log record at " + s.path + " offset " + std::to_string(off) + " (seq " +
                                  std::to_string(expect) + ") is damaged: " + why);
      }
      off = next;
      ++expect;
      if (rec.seq >= from && !fn(rec)) return Status::OK();
    }
  }
  return Status::OK();
}

Status EventLog::TruncateUpTo(uint64_t seq) {
  Impl& m = *impl_;
  MutexLock io(&m.io_mu);
  uint64_t last;
  {
    MutexLock l(&m.mu);
    last = m.next_seq - 1;
    seq = std::min(seq, last);
    if (seq <= m.truncated) return Status::OK();
  }
  Bytes body;
  Encoder(&body).U64(seq);
  SLINGSHOT_RETURN_IF_ERROR(m.env->WriteFileAtomic(m.dir + "/TRUNCATED", SealFrame(kTruncMagic, kTruncVersion, body), 0600));
  Segment active_seg;
  {
    MutexLock l(&m.mu);
    m.truncated = seq;
    active_seg = m.segments.back();
  }
  // When every record is covered, start a fresh segment so the old one can go.
  if (seq >= last && active_seg.last_seq >= active_seg.first_seq) {
    SLINGSHOT_RETURN_IF_ERROR(m.CreateSegment(last + 1));
  }
  std::vector<std::string> doomed;
  {
    MutexLock l(&m.mu);
    while (m.segments.size() > 1 && m.segments.front().last_seq <= seq) {
      doomed.push_back(m.segments.front().path);
      m.segments.erase(m.segments.begin());
    }
  }
  for (const auto& p : doomed) SLINGSHOT_RETURN_IF_ERROR(m.env->RemoveFile(p));
  return doomed.empty() ? Status::OK() : m.env->SyncDir(m.dir);
}

Result<uint64_t> EventLog::RestartAfter(uint64_t seq) {
  Impl& m = *impl_;
  MutexLock io(&m.io_mu);
  uint64_t last;
  {
    MutexLock l(&m.mu);
    last = m.next_seq - 1;
  }
  // The marker first: a crash after it leaves a log that recovery reads as
  // starting after seq (segments it covers are dropped on open).
  Bytes body;
  Encoder(&body).U64(seq);
  SLINGSHOT_RETURN_IF_ERROR(m.env->WriteFileAtomic(m.dir + "/TRUNCATED", SealFrame(kTruncMagic, kTruncVersion, body), 0600));
  std::vector<std::string> doomed;
  {
    MutexLock l(&m.mu);
    for (const auto& g : m.segments) doomed.push_back(g.path);
    m.segments.clear();
    m.truncated = seq;
    m.next_seq = seq + 1;
  }
  // A crash from here on leaves the marker and fewer segments: recovery
  // makes the segment after seq if none is left.
  for (const auto& p : doomed) SLINGSHOT_RETURN_IF_ERROR(m.env->RemoveFile(p));
  SLINGSHOT_RETURN_IF_ERROR(m.CreateSegment(seq + 1));
  return last > seq ? last - seq : 0;
}

uint64_t EventLog::last_seq() const {
  MutexLock l(&impl_->mu);
  return impl_->next_seq - 1;
}

uint64_t EventLog::truncated_seq() const {
  MutexLock l(&impl_->mu);
  return impl_->truncated;
}

const LogRecovery& EventLog::recovery() const { return impl_->recovery; }

}  // namespace slingshot
