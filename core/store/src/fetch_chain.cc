#include "slingshot/store/fetch_chain.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <numeric>
#include <unordered_map>

#include "slingshot/base/log.h"

namespace slingshot {
namespace {
constexpr int kCacheCompressionLevel = 1;  // the cache is local: speed over size

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

FetchChain::FetchChain(ChunkStore* cache, std::vector<ChunkSource*> sources, FetchChainOptions options)
    : cache_(cache), sources_(std::move(sources)), options_(options) {
  MutexLock lock(&mu_);
  for (auto* s : sources_) stats_.sources.push_back(SourceCounters{s->Describe()});
  mean_us_.assign(sources_.size(), 0.0);
}

FetchChain::~FetchChain() = default;

std::string FetchChain::Describe() const {
  std::string s = cache_ ? "cache" : "";
  for (auto* src : sources_) s += (s.empty() ? "" : " → ") + src->Describe();
  return s;
}

FetchChainStats FetchChain::stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

FetchChain::Claimed FetchChain::Claim(const ChunkId& id, bool bulk) {
  MutexLock lock(&mu_);
  auto [it, fresh] = in_flight_.emplace(id, bulk);
  if (fresh) return Claimed::kMine;
  return it->second ? Claimed::kByBulk : Claimed::kBySingle;
}

void FetchChain::Release(const ChunkId& id) {
  MutexLock lock(&mu_);
  in_flight_.erase(id);
  cv_.SignalAll();
}

void FetchChain::WaitFor(const ChunkId& id) {
  MutexLock lock(&mu_);
  while (in_flight_.count(id)) cv_.Wait(&mu_);
}

void FetchChain::Record(size_t source, const ChunkId& id, const Result<Bytes>& r, int64_t micros) {
  MutexLock lock(&mu_);
  SourceCounters& c = stats_.sources[source];
  if (r.ok()) {
    c.chunks++;
    c.bytes += r->size();
    double& m = mean_us_[source];
    m = m == 0 ? double(micros) : m * 0.875 + double(micros) * 0.125;
  } else if (r.status().IsNotFound()) {
    c.misses++;
  } else if (r.status().IsCorruption()) {
    c.corrupt++;
    // Said as it happens, with the source and chunk: a damaged stick or
    // cache is the user's to know about. The next source is asked.
    LogWarning("chunk " + id.Short() + " from " + sources_[source]->Describe() + " is damaged (" +
               r.status().message() + "); fetching it from the next source" +
               (source + 1 < sources_.size() ? " (" + sources_.back()->Describe() + " at the latest)" : ""));
  } else {
    c.errors++;
  }
}

void FetchChain::Keep(const ChunkId& id, ByteView raw, Bytes&& value) {
  if (!cache_) return;
  // The source verified raw (and value) against id, so neither is hashed
  // again here. A full or failing cache costs speed, not correctness: the
  // chunk was served.
  EncodedChunk c{id, value.empty() ? ChunkStore::EncodeValue(raw, kCacheCompressionLevel) : std::move(value)};
  (void)cache_->PutEncoded(std::span<const EncodedChunk>(&c, 1));
}

Result<Bytes> FetchChain::FromSources(const ChunkId& id, Bytes* value) {
  std::vector<size_t> order;
  for (size_t i = 0; i < sources_.size(); ++i) {
    if (sources_[i]->MayHave(id)) order.push_back(i);
  }
  // Prefer the source whose recent reads were faster; unmeasured sources
  // keep their place (nearest first) so they get measured.
  std::vector<double> mean;
  {
    MutexLock lock(&mu_);
    mean = mean_us_;
  }
  if (std::all_of(order.begin(), order.end(), [&](size_t i) { return mean[i] > 0; })) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return mean[a] < mean[b]; });
  }
  Status last = Status::NotFound("");
  for (size_t i : order) {
    int64_t start = NowMicros();
    Result<Bytes> r = Status::IOError("no reply");
    Status called = sources_[i]->GetManyWithValues(std::span<const ChunkId>(&id, 1),
                                                   [&](const ChunkId&, Result<Bytes>&& chunk, Bytes&& v) {
                                                     r = std::move(chunk);
                                                     *value = std::move(v);
                                                   });
    if (!called.ok()) r = called;
    Record(i, id, r, NowMicros() - start);
    if (r.ok()) return r;
    if (!r.status().IsNotFound() || last.IsNotFound()) last = r.status();
  }
  if (last.IsNotFound()) {
    MutexLock lock(&mu_);
    stats_.not_found++;
    return Status::NotFound("chunk " + id.ToHex() + " is in none of: " + Describe());
  }
  return last;
}

Result<Bytes> FetchChain::Get(const ChunkId& id) {
  for (;;) {
    if (cache_) {
      auto r = cache_->Get(id);
      if (r.ok()) {
        MutexLock lock(&mu_);
        stats_.cache_hits++;
        stats_.cache_bytes += r->size();
        return r;
      }
      if (r.status().IsCorruption()) {
        {
          MutexLock lock(&mu_);
          stats_.cache_corrupt++;
        }
        (void)cache_->Delete(std::span<const ChunkId>(&id, 1));
      }
    }
    Claimed c = Claim(id, false);
    if (c == Claimed::kMine) break;
    if (c == Claimed::kByBulk) {
      // A prefetch has it queued, maybe behind hundreds of chunks: a reader
      // waiting on it would wait for all of those. Fetch it now (the
      // prefetch's copy, when it comes, is a no-op in the cache).
      Bytes value;
      auto r = FromSources(id, &value);
      if (r.ok()) Keep(id, *r, std::move(value));
      return r;
    }
    WaitFor(id);  // another reader is fetching it: then it is (likely) cached
    if (!cache_ && Claim(id, false) == Claimed::kMine) break;
  }
  Bytes value;
  auto r = FromSources(id, &value);
  if (r.ok()) Keep(id, *r, std::move(value));
  Release(id);
  return r;
}

// The shared state of one Fetch: per near source a queue of the ids it has,
// and the last source's queue.
struct FetchChain::Bulk {
  Mutex mu;
  CondVar cv;
  std::vector<std::deque<ChunkId>> near GUARDED_BY(mu);  // one per source but the last
  std::deque<ChunkId> last GUARDED_BY(mu);
  size_t near_busy GUARDED_BY(mu) = 0;
};

Status FetchChain::Fetch(std::span<const ChunkId> ids, const Sink& sink) {
  if (sources_.empty()) return Status::InvalidArgument("a fetch chain needs at least one source");
  Mutex sink_mu;  // the sink sees one chunk at a time
  auto deliver = [&](const ChunkId& id, Result<Bytes>&& r) {
    if (!sink) return;
    MutexLock lock(&sink_mu);
    sink(id, std::move(r));
  };
  // Cached ids are done; ids someone else is fetching are waited for at the end.
  std::unordered_set<ChunkId, ChunkIdHash> seen;
  std::vector<ChunkId> mine, others;
  for (const auto& id : ids) {
    if (id.IsNull() || !seen.insert(id).second) continue;
    if (cache_) {
      // With a sink the cached bytes are needed: one read; without, a
      // presence check is enough (a prefetch skips what is cached).
      bool hit = false;
      uint64_t bytes = 0;
      if (sink) {
        auto r = cache_->Get(id);
        if ((hit = r.ok())) {
          bytes = r->size();
          deliver(id, std::move(r));
        }
      } else {
        auto has = cache_->Contains(id);
        hit = has.ok() && *has;
      }
      if (hit) {
        MutexLock lock(&mu_);
        stats_.cache_hits++;
        stats_.cache_bytes += bytes;
        continue;
      }
    }
    (Claim(id, true) == Claimed::kMine ? mine : others).push_back(id);
  }

  const size_t nnear = sources_.size() - 1;
  ChunkSource* last = sources_.back();
  Bulk bulk;
  {
    MutexLock lock(&bulk.mu);
    bulk.near.resize(nnear);
    for (const auto& id : mine) {
      size_t q = nnear;
      for (size_t i = 0; i < nnear; ++i) {
        if (sources_[i]->MayHave(id)) {
          q = i;
          break;
        }
      }
      if (q < nnear) bulk.near[q].push_back(id);
      else bulk.last.push_back(id);
    }
    bulk.near_busy = nnear;
  }

  auto finish = [&](const ChunkId& id, Result<Bytes>&& r, Bytes&& value) {
    if (r.ok()) Keep(id, *r, std::move(value));
    Release(id);
    deliver(id, std::move(r));
  };

  // One thread per near source: its own queue from the front; what it fails
  // to supply goes to the last source.
  std::vector<std::thread> workers;
  for (size_t i = 0; i < nnear; ++i) {
    workers.emplace_back([&, i] {
      for (;;) {
        ChunkId id;
        {
          MutexLock lock(&bulk.mu);
          if (bulk.near[i].empty()) {
            bulk.near_busy--;
            bulk.cv.SignalAll();
            return;
          }
          id = bulk.near[i].front();
          bulk.near[i].pop_front();
        }
        int64_t start = NowMicros();
        auto r = sources_[i]->Get(id);
        Record(i, id, r, NowMicros() - start);
        if (r.ok()) {
          finish(id, std::move(r), Bytes());
        } else {
          MutexLock lock(&bulk.mu);
          bulk.last.push_front(id);
          bulk.cv.SignalAll();
        }
      }
    });
  }

  // How many of a near source's q queued chunks the last source should take
  // from the back: its share if both are to finish together, by their
  // measured times per chunk; one, to measure, while either is unmeasured.
  // Over a slow WAN with a fast stick that is none: every chunk the home
  // sent would cost the link time the stick does not need.
  auto steal_share = [&](size_t near, size_t q) -> size_t {
    double t_near, t_last;
    {
      MutexLock lock(&mu_);
      t_near = mean_us_[near];
      t_last = mean_us_.back();
    }
    if (t_near <= 0 || t_last <= 0) return 1;
    return static_cast<size_t>(double(q) * t_near / (t_near + t_last));
  };

  // The last source on this thread: its own queue, then the near queues' backs.
  Status failed;
  for (;;) {
    std::vector<ChunkId> batch;
    {
      MutexLock lock(&bulk.mu);
      for (;;) {
        while (!bulk.last.empty() && batch.size() < options_.home_claim) {
          batch.push_back(bulk.last.front());
          bulk.last.pop_front();
        }
        if (!batch.empty()) break;
        // Steal from the back of the longest near queue.
        size_t longest = nnear;
        for (size_t i = 0; i < nnear; ++i) {
          if (!bulk.near[i].empty() && (longest == nnear || bulk.near[i].size() > bulk.near[longest].size())) longest = i;
        }
        if (longest < nnear) {
          auto& q = bulk.near[longest];
          // Leave the near source a head start of what it is reading now.
          size_t n = std::min(options_.steal_claim, q.size() > 1 ? q.size() - 1 : size_t(0));
          n = std::min(n, steal_share(longest, q.size()));
          for (size_t k = 0; k < n; ++k) {
            batch.push_back(q.back());
            q.pop_back();
          }
          if (!batch.empty()) break;
        }
        if (bulk.near_busy == 0 && bulk.last.empty()) break;
        bulk.cv.Wait(&bulk.mu);
      }
    }
    if (batch.empty()) break;
    size_t delivered = 0;
    int64_t start = NowMicros();
    Status st = last->GetManyWithValues(batch, [&](const ChunkId& id, Result<Bytes>&& r, Bytes&& value) {
      int64_t now = NowMicros();
      Record(sources_.size() - 1, id, r, now - start);
      start = now;
      ++delivered;
      if (!r.ok() && r.status().IsNotFound()) {
        MutexLock lock(&mu_);
        stats_.not_found++;
        r = Status::NotFound("chunk " + id.ToHex() + " is in none of: " + Describe());
      }
      finish(id, std::move(r), std::move(value));
    });
    if (!st.ok()) {
      // The last source failed: the rest of the batch gets its error.
      for (size_t k = delivered; k < batch.size(); ++k) {
        Record(sources_.size() - 1, batch[k], st, 0);
        finish(batch[k], Status(st), Bytes());
      }
      failed = st;
    }
  }
  for (auto& w : workers) w.join();
  for (const auto& id : others) {
    WaitFor(id);
    if (sink) deliver(id, Get(id));
  }
  return failed;
}

Status FetchChain::GetMany(std::span<const ChunkId> ids, const Sink& sink) {
  for (size_t from = 0; from < ids.size(); from += options_.window) {
    auto window = ids.subspan(from, std::min(options_.window, ids.size() - from));
    std::unordered_map<ChunkId, Result<Bytes>, ChunkIdHash> got;
    Status st = Fetch(window, [&](const ChunkId& id, Result<Bytes>&& r) { got.emplace(id, std::move(r)); });
    for (const auto& id : window) {
      auto it = got.find(id);
      if (it != got.end()) {
        sink(id, std::move(it->second));
        got.erase(it);
      } else {
        sink(id, Get(id));  // a repeat in the window, or a null id
      }
    }
    (void)st;  // per-chunk errors already reached the sink
  }
  return Status::OK();
}

// --- Prefetcher ---

Prefetcher::Prefetcher(FetchChain* chain, std::vector<ChunkId> order, size_t step, ChunkSource::Sink sink)
    : chain_(chain), order_(std::move(order)), step_(std::max<size_t>(step, 1)), sink_(std::move(sink)) {
  thread_ = std::thread([this] { Run(); });
}

Prefetcher::~Prefetcher() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void Prefetcher::Stop() { stop_ = true; }

Status Prefetcher::Wait() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

void Prefetcher::Run() {
  for (size_t from = 0; from < order_.size() && !stop_; from += step_) {
    size_t n = std::min(step_, order_.size() - from);
    Status st = chain_->Fetch(std::span<const ChunkId>(order_).subspan(from, n), sink_);
    if (!st.ok()) {
      result_ = st.Annotate("prefetch");
      return;
    }
    done_ += n;
  }
  if (stop_ && done_ < order_.size()) result_ = Status::Unavailable("prefetch stopped");
}

}  // namespace slingshot
