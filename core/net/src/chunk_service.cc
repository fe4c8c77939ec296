#include "slingshot/net/chunk_service.h"

#include <algorithm>
#include <deque>
#include <unordered_set>

#include "slingshot/base/log.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/working_set.h"

namespace slingshot {

// --- home side ---

Status ChunkService::Handle(Connection& c, uint32_t request, wire::Message&& m) {
  if (auto* g = std::get_if<wire::GetChunks>(&m)) {
    // One reply per id, in order: the chunk, its absence, or an Error (a
    // damaged copy here), so one bad chunk does not fail the batch.
    for (const auto& id : g->ids) {
      auto v = store_->GetEncoded(id);
      Status st;
      if (v.ok()) {
        bytes_sent_ += v->size();
        ++chunks_sent_;
        st = c.Send(request, wire::ChunkData{id, true, std::move(*v)});
      } else if (v.status().IsNotFound()) {
        ++chunks_missing_;
        st = c.Send(request, wire::ChunkData{id, false, {}});
      } else {
        st = c.Send(request, wire::Error{v.status().code(), v.status().message()});
      }
      SLINGSHOT_RETURN_IF_ERROR(st);
    }
    return Status::OK();
  }
  if (auto* g = std::get_if<wire::GetObject>(&m)) {
    SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, store_->GetObject(g->id));
    return c.Send(request, wire::ObjectData{g->id, std::move(b)});
  }
  if (auto* g = std::get_if<wire::GetRef>(&m)) {
    SLINGSHOT_ASSIGN_OR_RETURN(Ref r, store_->GetRef(g->name));
    return c.Send(request, wire::RefData{r.name, static_cast<uint8_t>(r.kind), r.object});
  }
  if (auto* g = std::get_if<wire::GetWorkingSet>(&m)) {
    wire::WorkingSet reply{g->table, {}};
    auto ws = LoadWorkingSet(store_, g->table);
    if (ws.ok()) {
      reply.ids = std::move(ws->ids);
      if (reply.ids.size() > wire::kMaxWorkingSet) reply.ids.resize(wire::kMaxWorkingSet);
    } else if (!ws.status().IsNotFound()) {
      return ws.status();
    }
    return c.Send(request, reply);
  }
  if (auto* p = std::get_if<wire::PutWorkingSet>(&m)) {
    SLINGSHOT_RETURN_IF_ERROR(StoreWorkingSet(p->table, std::move(p->ids)));
    return c.Send(request, wire::WorkingSet{p->table, {}});
  }
  return Status::InvalidArgument(std::string(wire::MessageTypeName(wire::TypeOf(m))) +
                                 " is not a request the chunk service answers");
}

Status ChunkService::StoreWorkingSet(const ChunkId& table, std::vector<ChunkId> ids) {
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes tb, store_->GetObject(table));
  auto t = DiskTable::Decode(tb);
  if (!t.ok()) return Status::InvalidArgument("a working set is kept only for a chunk table: " + t.status().message());
  std::unordered_set<ChunkId, ChunkIdHash> in_table(t->ids.begin(), t->ids.end()), seen;
  for (const auto& id : ids) {
    if (id.IsNull() || !in_table.count(id)) {
      return Status::InvalidArgument("working set names chunk " + id.Short() + ", which is not in table " +
                                     table.Short());
    }
    if (!seen.insert(id).second) {
      return Status::InvalidArgument("working set names chunk " + id.Short() + " twice");
    }
  }
  // The longer record stands: a replica that ran longer saw more of what a
  // fresh one will read.
  MutexLock l(&put_mu_);
  auto old = LoadWorkingSet(store_, table);
  if (old.ok() && old->ids.size() >= ids.size()) {
    LogInfo("working set for table " + table.Short() + ": kept the one of " + std::to_string(old->ids.size()) +
            " chunks (" + std::to_string(ids.size()) + " sent)");
    return Status::OK();
  }
  if (!old.ok() && !old.status().IsNotFound()) return old.status();
  const size_t n = ids.size();
  SLINGSHOT_RETURN_IF_ERROR(SaveWorkingSet(store_, WorkingSetRecord{table, std::move(ids)}));
  LogInfo("working set for table " + table.Short() + ": recorded " + std::to_string(n) + " chunks");
  return Status::OK();
}

ChunkService::Stats ChunkService::stats() const {
  return Stats{chunks_sent_.load(), chunks_missing_.load(), bytes_sent_.load()};
}

// --- surrogate side ---

BulkPacer::BulkPacer(size_t max_ids, size_t initial_ids, size_t min_ids, std::chrono::milliseconds queue_target)
    : max_ids_(std::max<size_t>(max_ids, 1)),
      initial_ids_(std::clamp<size_t>(initial_ids, 1, max_ids_)),
      min_ids_(std::clamp<size_t>(min_ids, 1, max_ids_)),
      queue_target_s_(std::chrono::duration<double>(queue_target).count()) {}

size_t BulkPacer::WindowLocked() const {
  if (rate_ <= 0 || mean_bytes_ <= 0) return initial_ids_;
  double ids = rate_ * (min_rtt_s_ + queue_target_s_) / mean_bytes_;
  return std::clamp<size_t>(static_cast<size_t>(ids), min_ids_, max_ids_);
}

size_t BulkPacer::window() const {
  MutexLock l(&mu_);
  return WindowLocked();
}

size_t BulkPacer::Reserve(size_t want, bool have_in_flight) {
  MutexLock l(&mu_);
  const size_t w = WindowLocked();
  size_t room = in_flight_ < w ? w - in_flight_ : 0;
  if (room == 0 && !have_in_flight) room = 1;
  const size_t n = std::min(want, room);
  if (in_flight_ == 0 && n > 0) {  // a new busy period: rate samples start here
    sample_start_ = Clock::now();
    sample_bytes_ = 0;
  }
  in_flight_ += n;
  return n;
}

void BulkPacer::Unreserve(size_t n) {
  MutexLock l(&mu_);
  in_flight_ -= std::min(n, in_flight_);
}

void BulkPacer::Arrived(size_t wire_bytes, bool reserved, Clock::time_point now) {
  MutexLock l(&mu_);
  if (reserved && in_flight_ > 0) --in_flight_;
  mean_bytes_ = mean_bytes_ == 0 ? double(wire_bytes) : 0.9 * mean_bytes_ + 0.1 * double(wire_bytes);
  sample_bytes_ += wire_bytes;
  // A rate sample every 50 ms of a busy period (chunks in flight all
  // along); the estimate keeps the best recent one, decaying slowly, so a
  // pause of the fetch does not read as a slow link.
  const double elapsed = std::chrono::duration<double>(now - sample_start_).count();
  if (elapsed >= 0.05) {
    const double sample = double(sample_bytes_) / elapsed;
    rate_ = std::max(sample, 0.9 * rate_);
    sample_start_ = now;
    sample_bytes_ = 0;
  }
}

void BulkPacer::RoundTrip(Clock::duration rtt) {
  const double s = std::chrono::duration<double>(rtt).count();
  MutexLock l(&mu_);
  if (min_rtt_s_ == 0 || s < min_rtt_s_) min_rtt_s_ = s;
}

HomeSource::HomeSource(std::string host, uint16_t port, TlsCredentials creds, HomeSourceOptions options)
    : host_(std::move(host)),
      port_(port),
      creds_(std::move(creds)),
      options_(std::move(options)),
      pacer_(size_t(options_.batch) * options_.window, 8, 2, options_.queue_target) {}

HomeSource::~HomeSource() = default;

Result<std::unique_ptr<HomeSource>> HomeSource::Open(const std::string& host, uint16_t port,
                                                     const TlsCredentials& creds, HomeSourceOptions options) {
  if (!options.connect.expected_role) options.connect.expected_role = Role::kHome;
  options.batch = std::clamp<uint32_t>(options.batch, 1, wire::kMaxBatch);
  options.window = std::max<uint32_t>(options.window, 1);
  std::unique_ptr<HomeSource> h(new HomeSource(host, port, creds, options));
  SLINGSHOT_ASSIGN_OR_RETURN(auto c, h->Acquire());
  h->Release(std::move(c));
  return h;
}

std::string HomeSource::Describe() const { return "home " + host_ + ":" + std::to_string(port_); }

Result<std::unique_ptr<Connection>> HomeSource::Acquire() {
  {
    MutexLock lock(&mu_);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
  }
  ++connects_;
  auto c = Connection::Connect(host_, port_, creds_, options_.connect);
  if (!c.ok()) return c.status().Annotate("chunk service at " + host_ + ":" + std::to_string(port_));
  return std::move(*c);
}

void HomeSource::Release(std::unique_ptr<Connection> c) {
  if (!c || c->broken()) return;
  MutexLock lock(&mu_);
  if (idle_.size() < options_.max_idle_connections) idle_.push_back(std::move(c));
}

Result<Bytes> HomeSource::Verify(const wire::ChunkData& d, const ChunkId& want) {
  if (!d.present) {
    ++missing_;
    return Status::NotFound("chunk " + want.ToHex() + " is not at " + Describe());
  }
  auto raw = ChunkStore::DecodeValue(want, d.value);
  if (!raw.ok()) {
    ++corrupt_;
    return raw.status().Annotate("chunk from " + Describe());
  }
  ++chunks_;
  wire_bytes_ += d.value.size();
  raw_bytes_ += raw->size();
  return raw;
}

Status HomeSource::GetMany(std::span<const ChunkId> ids, const Sink& sink) {
  return GetManyWithValues(ids, [&](const ChunkId& id, Result<Bytes>&& chunk, Bytes&&) { sink(id, std::move(chunk)); });
}

Status HomeSource::GetManyWithValues(std::span<const ChunkId> ids, const ValueSink& sink) {
  if (ids.empty()) return Status::OK();
  // A single read (a fault) goes out at once; a bulk fetch keeps within the
  // pacer's window, shared by this source's bulk fetches.
  const bool bulk = ids.size() > 1;
  size_t delivered = 0;  // ids handed to the sink
  // A pooled connection may have been closed by the home while idle: one
  // retry on a fresh connection, from the first undelivered id, if nothing
  // of the request that failed was delivered.
  for (int attempt = 0;; ++attempt) {
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, Acquire());
    struct Sent {
      uint32_t request;
      size_t from, to;
      BulkPacer::Clock::time_point at;
    };
    std::deque<Sent> in_flight;
    size_t next = delivered;  // the first id not asked for yet
    Status failed;
    bool partial = false;
    auto unreserve = [&] {
      if (bulk) pacer_.Unreserve(next - delivered);
    };
    while (delivered < ids.size() && failed.ok()) {
      while (next < ids.size() && in_flight.size() < options_.window) {
        size_t want = std::min<size_t>(options_.batch, ids.size() - next);
        size_t n = bulk ? pacer_.Reserve(want, !in_flight.empty()) : want;
        if (n == 0) break;
        wire::GetChunks g{std::vector<ChunkId>(ids.begin() + next, ids.begin() + next + n)};
        uint32_t req = next_request_++;
        failed = c->Send(req, g, options_.timeout_ms);
        if (!failed.ok()) {
          if (bulk) pacer_.Unreserve(n);
          break;
        }
        ++requests_;
        in_flight.push_back(Sent{req, next, next + n, BulkPacer::Clock::now()});
        next += n;
      }
      if (!failed.ok()) break;
      const Sent s = in_flight.front();
      for (size_t i = s.from; i < s.to; ++i) {
        auto f = c->Receive(options_.timeout_ms);
        if (!f.ok()) {
          failed = f.status();
          partial = i > s.from;
          break;
        }
        if (f->request != s.request) {
          unreserve();
          c->Close();
          return Status::Corruption(Describe() + " answered request " + std::to_string(f->request) + " out of turn");
        }
        const auto now = BulkPacer::Clock::now();
        if (i == s.from) pacer_.RoundTrip(now - s.at);
        if (auto* e = std::get_if<wire::Error>(&f->message)) {
          pacer_.Arrived(64, bulk, now);
          sink(ids[i], e->ToStatus(Describe()), Bytes());
        } else if (auto* d = std::get_if<wire::ChunkData>(&f->message); d && d->id == ids[i]) {
          pacer_.Arrived(d->value.size() + 64, bulk, now);
          auto raw = Verify(*d, ids[i]);
          sink(ids[i], std::move(raw), raw.ok() ? std::move(d->value) : Bytes());
        } else {
          unreserve();
          c->Close();
          return Status::Corruption(Describe() + " sent something other than chunk " + ids[i].Short() +
                                    " where it was due");
        }
        ++delivered;
      }
      if (!failed.ok()) break;
      in_flight.pop_front();
    }
    unreserve();  // what was asked for and will not be read on this connection
    if (failed.ok()) {
      Release(std::move(c));
      return Status::OK();
    }
    if (attempt > 0 || partial || failed.code() != Status::Code::kUnavailable) {
      return failed.Annotate("fetching chunks from " + Describe());
    }
  }
}

Result<Bytes> HomeSource::Get(const ChunkId& id) {
  Result<Bytes> out = Status::IOError("no reply");
  SLINGSHOT_RETURN_IF_ERROR(GetMany(std::span<const ChunkId>(&id, 1),
                                    [&](const ChunkId&, Result<Bytes>&& r) { out = std::move(r); }));
  return out;
}

Result<wire::Message> HomeSource::Call(const wire::Message& request, wire::MessageType reply) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto replies, CallMany({Exchange{request, reply}}));
  return std::move(replies.front());
}

Result<std::vector<Result<wire::Message>>> HomeSource::CallMany(const std::vector<Exchange>& calls) {
  for (int attempt = 0;; ++attempt) {
    SLINGSHOT_ASSIGN_OR_RETURN(auto c, Acquire());
    std::vector<uint32_t> ids;
    Status st;
    for (const Exchange& x : calls) {
      ids.push_back(next_request_++);
      ++requests_;
      st = c->Send(ids.back(), x.request, options_.timeout_ms);
      if (!st.ok()) break;
    }
    std::vector<Result<wire::Message>> out;
    for (size_t i = 0; st.ok() && i < calls.size(); ++i) {
      auto m = c->Expect(ids[i], calls[i].reply, options_.timeout_ms);
      if (!m.ok() && c->broken()) st = m.status();
      else out.push_back(std::move(m));
    }
    if (st.ok()) {
      Release(std::move(c));
      return out;
    }
    // A pooled connection the home closed while idle: once more, afresh,
    // if nothing came back on it.
    if (attempt > 0 || !out.empty() || st.code() != Status::Code::kUnavailable) return st;
  }
}

Result<Bytes> HomeSource::CheckObject(Result<wire::Message> m, const ChunkId& id) {
  SLINGSHOT_RETURN_IF_ERROR(m.status());
  auto& o = std::get<wire::ObjectData>(*m);
  if (o.id != id || ChunkId::Of(o.bytes) != id) {
    ++corrupt_;
    return Status::Corruption("object " + id.Short() + " from " + Describe() + " does not match its id");
  }
  return std::move(o.bytes);
}

Result<std::vector<ChunkId>> HomeSource::CheckWorkingSet(Result<wire::Message> m, const ChunkId& table) {
  SLINGSHOT_RETURN_IF_ERROR(m.status());
  auto& ws = std::get<wire::WorkingSet>(*m);
  if (ws.table != table) return Status::Corruption(Describe() + " sent the working set of another table");
  return std::move(ws.ids);
}

Result<Bytes> HomeSource::GetObject(const ChunkId& id) {
  return CheckObject(Call(wire::GetObject{id}, wire::MessageType::kObjectData), id);
}

Result<HomeSource::Batch> HomeSource::GetObjectsAndWorkingSets(std::span<const ChunkId> objects,
                                                               std::span<const ChunkId> tables) {
  std::vector<Exchange> calls;
  for (const ChunkId& id : objects) calls.push_back({wire::GetObject{id}, wire::MessageType::kObjectData});
  for (const ChunkId& t : tables) calls.push_back({wire::GetWorkingSet{t}, wire::MessageType::kWorkingSet});
  SLINGSHOT_ASSIGN_OR_RETURN(auto replies, CallMany(calls));
  Batch b;
  for (size_t i = 0; i < objects.size(); ++i) b.objects.push_back(CheckObject(std::move(replies[i]), objects[i]));
  for (size_t i = 0; i < tables.size(); ++i) {
    b.working_sets.push_back(CheckWorkingSet(std::move(replies[objects.size() + i]), tables[i]));
  }
  return b;
}

Result<Ref> HomeSource::GetRef(const std::string& name) {
  SLINGSHOT_ASSIGN_OR_RETURN(wire::Message m, Call(wire::GetRef{name}, wire::MessageType::kRefData));
  auto& r = std::get<wire::RefData>(m);
  if (r.kind < 1 || r.kind > static_cast<uint8_t>(ObjectKind::kWorkingSet)) {
    return Status::Corruption(Describe() + " named an unknown kind for ref " + name);
  }
  return Ref{r.name, static_cast<ObjectKind>(r.kind), r.object};
}

Status HomeSource::PutWorkingSet(const ChunkId& table, std::vector<ChunkId> ids) {
  if (ids.size() > wire::kMaxWorkingSet) ids.resize(wire::kMaxWorkingSet);
  if (ids.empty()) return Status::OK();
  return Call(wire::PutWorkingSet{table, std::move(ids)}, wire::MessageType::kWorkingSet).status();
}

Result<std::vector<ChunkId>> HomeSource::GetWorkingSet(const ChunkId& table) {
  return CheckWorkingSet(Call(wire::GetWorkingSet{table}, wire::MessageType::kWorkingSet), table);
}

HomeSourceStats HomeSource::stats() const {
  HomeSourceStats s;
  s.chunks = chunks_;
  s.wire_bytes = wire_bytes_;
  s.raw_bytes = raw_bytes_;
  s.missing = missing_;
  s.corrupt = corrupt_;
  s.requests = requests_;
  s.connects = connects_;
  return s;
}

}  // namespace slingshot
