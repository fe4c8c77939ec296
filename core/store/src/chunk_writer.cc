#include "slingshot/store/chunk_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>
#include <unordered_set>

#include "slingshot/store/chunk_source.h"
#include "slingshot/base/mutex.h"
#include "slingshot/base/worker_pool.h"

namespace slingshot {
namespace {

struct Batch {
  // The chunks, back to back. Not a vector: growing one zero-fills, and the
  // bytes are about to be overwritten by a read anyway.
  std::unique_ptr<uint8_t[]> data;
  size_t size = 0, capacity = 0;
  std::vector<size_t> offsets;   // start of chunk i in data; offsets.back() == size
  std::vector<ChunkId> ids;
  std::vector<uint8_t> state;    // per chunk: kZero, kDup, kNew
  std::vector<EncodedChunk> encoded;
  size_t first_index = 0;        // index of chunk 0 in the stream
  ByteView chunk(size_t i) const { return {data.get() + offsets[i], offsets[i + 1] - offsets[i]}; }
  size_t count() const { return offsets.size() - 1; }
};

enum : uint8_t { kZero = 0, kDup = 1, kNew = 2 };
// Batches hashed ahead of the disk. When the disk is the bottleneck they
// queue up, and the writer then commits them together: one pack write, one
// fsync, one index transaction for all of them.
constexpr size_t kMaxBatchesInFlight = 4;

}  // namespace

struct ChunkWriter::Impl {
  ChunkStore* store;
  ChunkWriterOptions options;
  WorkerPool pool;
  std::unique_ptr<Batch> current;
  std::vector<ChunkId> ids;                            // producer thread only
  std::unordered_set<ChunkId, ChunkIdHash> seen;       // producer thread only
  IngestStats stats;                                   // producer thread only

  Mutex mu;
  CondVar cv;
  std::deque<std::unique_ptr<Batch>> queue GUARDED_BY(mu);
  Status error GUARDED_BY(mu);
  bool closing GUARDED_BY(mu) = false;
  bool writing GUARDED_BY(mu) = false;
  std::thread writer;

  Impl(ChunkStore* s, const ChunkWriterOptions& o) : store(s), options(o), pool(o.threads) {
    writer = std::thread([this] { WriterLoop(); });
    NewBatch();
  }

  ~Impl() {
    {
      MutexLock l(&mu);
      closing = true;
    }
    cv.SignalAll();
    writer.join();
  }

  void NewBatch() {
    current = std::make_unique<Batch>();
    current->capacity = options.batch_bytes + kMaxChunkSize;
    current->data.reset(new uint8_t[current->capacity]);
    current->offsets.push_back(0);
    current->first_index = ids.size();
  }

  // Takes every queued batch, so the producer can queue more while these
  // are written and synced.
  void WriterLoop() EXCLUDES(mu) {
    std::vector<EncodedChunk> merged;
    for (;;) {
      bool failed;
      {
        MutexLock l(&mu);
        while (!closing && queue.empty()) cv.Wait(&mu);
        if (queue.empty()) return;
        failed = !error.ok();
        merged.clear();
        for (auto& b : queue) {
          for (auto& c : b->encoded) merged.push_back(std::move(c));
        }
        queue.clear();
        writing = true;
      }
      cv.SignalAll();
      Status st = failed ? Status::OK() : store->PutEncoded(merged);
      {
        MutexLock l(&mu);
        writing = false;
        if (!st.ok() && error.ok()) error = st;
      }
      cv.SignalAll();
    }
  }

  Status CurrentError() EXCLUDES(mu) {
    MutexLock l(&mu);
    return error;
  }

  // Hashes, deduplicates and compresses the current batch, then queues it.
  Status Submit() EXCLUDES(mu) {
    Batch& b = *current;
    const size_t n = b.count();
    if (n == 0) return Status::OK();
    b.ids.resize(n);
    b.state.assign(n, kNew);
    pool.ParallelFor(n, [&](size_t i) {
      ByteView c = b.chunk(i);
      if (IsAllZero(c)) {
        b.state[i] = kZero;
      } else {
        b.ids[i] = ChunkId::Of(c);
      }
    });
    std::vector<size_t> fresh;
    for (size_t i = 0; i < n; ++i) {
      size_t len = b.offsets[i + 1] - b.offsets[i];
      if (b.state[i] == kZero) {
        ++stats.zero_chunks;
        stats.zero_bytes += len;
      } else if (!seen.insert(b.ids[i]).second) {
        b.state[i] = kDup;
        ++stats.dup_chunks;
        stats.dup_bytes += len;
      } else {
        fresh.push_back(i);
      }
    }
    std::vector<EncodedChunk> enc(fresh.size());
    std::vector<uint8_t> present(fresh.size(), 0);
    Mutex err_mu;
    Status lookup_error;  // guarded by err_mu
    pool.ParallelFor(fresh.size(), [&](size_t k) {
      size_t i = fresh[k];
      auto has = store->Contains(b.ids[i]);
      if (!has.ok()) {
        MutexLock l(&err_mu);
        if (lookup_error.ok()) lookup_error = has.status();
        return;
      }
      if (*has) {
        present[k] = 1;
        return;
      }
      enc[k].id = b.ids[i];
      enc[k].value = ChunkStore::EncodeValue(b.chunk(i), options.compression_level);
    });
    {
      MutexLock l(&err_mu);
      SLINGSHOT_RETURN_IF_ERROR(lookup_error);
    }
    for (size_t k = 0; k < fresh.size(); ++k) {
      size_t i = fresh[k];
      size_t len = b.offsets[i + 1] - b.offsets[i];
      if (present[k]) {
        b.state[i] = kDup;
        ++stats.dup_chunks;
        stats.dup_bytes += len;
      } else {
        ++stats.new_chunks;
        stats.new_bytes += len;
        stats.stored_bytes += enc[k].value.size();
        b.encoded.push_back(std::move(enc[k]));
      }
    }
    ids.insert(ids.end(), b.ids.begin(), b.ids.end());
    b.data.reset();  // the raw bytes are no longer needed
    {
      MutexLock l(&mu);
      while (queue.size() >= kMaxBatchesInFlight && error.ok()) cv.Wait(&mu);
      if (!error.ok()) return error;
      queue.push_back(std::move(current));
    }
    cv.SignalAll();
    NewBatch();
    return Status::OK();
  }
};

ChunkWriter::ChunkWriter(ChunkStore* store, const ChunkWriterOptions& options)
    : impl_(std::make_unique<Impl>(store, options)) {}
ChunkWriter::~ChunkWriter() = default;

Status ChunkWriter::Add(ByteView chunk) {
  if (chunk.size() > kMaxChunkSize) {
    return Status::InvalidArgument("chunk of " + std::to_string(chunk.size()) + " bytes exceeds the limit");
  }
  SLINGSHOT_RETURN_IF_ERROR(impl_->CurrentError());
  Batch& b = *impl_->current;
  std::memcpy(b.data.get() + b.size, chunk.data(), chunk.size());  // capacity: batch_bytes + one max chunk
  b.size += chunk.size();
  b.offsets.push_back(b.size);
  ++impl_->stats.chunks;
  impl_->stats.logical_bytes += chunk.size();
  if (b.size >= impl_->options.batch_bytes) return impl_->Submit();
  return Status::OK();
}

Result<size_t> ChunkWriter::AddFromFile(int fd, uint64_t offset, uint32_t chunk_size, const std::string& what) {
  if (chunk_size == 0 || chunk_size > kMaxChunkSize) return Status::InvalidArgument("bad chunk size");
  SLINGSHOT_RETURN_IF_ERROR(impl_->CurrentError());
  Batch& b = *impl_->current;
  // Whole chunks that fit below batch_bytes (at least one).
  size_t room = impl_->options.batch_bytes > b.size ? impl_->options.batch_bytes - b.size : 0;
  size_t want = std::max<size_t>(1, room / chunk_size) * chunk_size;
  size_t got = 0;
  while (got < want) {
    ssize_t r = ::pread(fd, b.data.get() + b.size + got, want - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno("read " + what, errno);
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  for (size_t p = 0; p < got; p += chunk_size) {
    b.offsets.push_back(b.size + std::min<size_t>(got, p + chunk_size));
    ++impl_->stats.chunks;
  }
  b.size += got;
  impl_->stats.logical_bytes += got;
  if (b.size >= impl_->options.batch_bytes) SLINGSHOT_RETURN_IF_ERROR(impl_->Submit());
  return got;
}

Result<std::vector<ChunkId>> ChunkWriter::Finish() {
  SLINGSHOT_RETURN_IF_ERROR(impl_->Submit());
  {
    MutexLock l(&impl_->mu);
    while (!impl_->queue.empty() || impl_->writing) impl_->cv.Wait(&impl_->mu);
    if (!impl_->error.ok()) return impl_->error;
  }
  return std::move(impl_->ids);
}

const IngestStats& ChunkWriter::stats() const { return impl_->stats; }

}  // namespace slingshot
