// The chunk service (DESIGN.md §3, §5): the home serves chunks, objects,
// refs and working sets over the transport; HomeSource is the surrogate's
// ChunkSource for it.
//
// Chunks cross the wire as their stored values (compressed when that saved
// space) and the receiver verifies each against its id, so the network and
// the home's disk are never trusted. Requests are batched (up to
// wire::kMaxBatch ids) and pipelined (several batches in flight per
// connection) so a cold fetch keeps the link full instead of waiting a round
// trip per chunk.
//
// But not fuller than that: what a bulk fetch has asked for and not yet
// received waits in the link's queue, and a single read (a page fault, a
// disk read) waits behind it. So the chunks in flight of a HomeSource's
// bulk fetches together are kept to what the link carries in its round
// trip plus a queue of queue_target (BulkPacer): the delivery rate and the
// shortest round trip are measured as chunks arrive. A single read is never
// held back.
//
// Only peers with a certificate from the home's CA reach the service at all
// (transport.h); the role a server requires is set in its ServerOptions.
#ifndef SLINGSHOT_NET_CHUNK_SERVICE_H_
#define SLINGSHOT_NET_CHUNK_SERVICE_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "slingshot/store/chunk_source.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/base/mutex.h"
#include "slingshot/net/transport.h"

namespace slingshot {

// Home side: answers GetChunks, GetObject, GetRef and GetWorkingSet from a
// store, and stores a PutWorkingSet whose ids are all chunks of its table
// (keeping the longest per table). Whether the peer may name that table at
// all is the caller's to check. Thread-safe (one server thread per
// connection calls it).
class ChunkService final : public RequestHandler {
 public:
  explicit ChunkService(ChunkStore* store) : store_(store) {}
  Status Handle(Connection& c, uint32_t request, wire::Message&& m) override;

  struct Stats {
    uint64_t chunks_sent = 0;
    uint64_t chunks_missing = 0;
    uint64_t bytes_sent = 0;  // chunk values
  };
  Stats stats() const;

  // PutWorkingSet's work, for callers that checked the peer's scope.
  Status StoreWorkingSet(const ChunkId& table, std::vector<ChunkId> ids);

 private:
  ChunkStore* store_;
  std::atomic<uint64_t> chunks_sent_{0}, chunks_missing_{0}, bytes_sent_{0};
  Mutex put_mu_;  // one working-set update at a time
};

// The window of a HomeSource's bulk fetches, in chunks: rate x (shortest
// round trip + queue_target) / mean chunk size, between min_ids and
// max_ids; initial_ids until the first rate is measured. Thread-safe.
class BulkPacer {
 public:
  using Clock = std::chrono::steady_clock;
  BulkPacer(size_t max_ids, size_t initial_ids, size_t min_ids, std::chrono::milliseconds queue_target);
  size_t window() const;
  // Up to want ids may go out now (0: wait for some to arrive); a caller
  // with nothing in flight gets at least one.
  size_t Reserve(size_t want, bool have_in_flight);
  // A chunk of wire_bytes arrived (reserved: it was counted by Reserve).
  void Arrived(size_t wire_bytes, bool reserved, Clock::time_point now);
  void Unreserve(size_t n);  // reserved ids that will not arrive
  void RoundTrip(Clock::duration rtt);  // request sent -> its first chunk

 private:
  size_t WindowLocked() const REQUIRES(mu_);
  const size_t max_ids_, initial_ids_, min_ids_;
  const double queue_target_s_;
  mutable Mutex mu_;
  size_t in_flight_ GUARDED_BY(mu_) = 0;
  double rate_ GUARDED_BY(mu_) = 0;          // bytes/s, 0 until measured
  double min_rtt_s_ GUARDED_BY(mu_) = 0;     // 0 until measured
  double mean_bytes_ GUARDED_BY(mu_) = 0;
  Clock::time_point sample_start_ GUARDED_BY(mu_);
  size_t sample_bytes_ GUARDED_BY(mu_) = 0;
};

struct HomeSourceOptions {
  uint32_t batch = 32;       // ids per request
  uint32_t window = 16;      // requests in flight per connection, at most
  // The queue a bulk fetch may build in the link (BulkPacer).
  std::chrono::milliseconds queue_target{100};
  size_t max_idle_connections = 4;
  int timeout_ms = 30000;    // per reply
  ConnectOptions connect;    // expected_role defaults to "home"
};

struct HomeSourceStats {
  uint64_t chunks = 0;       // verified chunks received
  uint64_t wire_bytes = 0;   // their encoded sizes
  uint64_t raw_bytes = 0;
  uint64_t missing = 0;      // the home did not have them
  uint64_t corrupt = 0;      // failed verification
  uint64_t requests = 0;
  uint64_t connects = 0;
};

class HomeSource final : public ChunkSource {
 public:
  // Connects once to check the address and credentials (with
  // options.connect.await_hello off, only the address and the home's
  // certificate: a refusal of ours shows at the first request).
  static Result<std::unique_ptr<HomeSource>> Open(const std::string& host, uint16_t port,
                                                  const TlsCredentials& creds,
                                                  HomeSourceOptions options = {});
  ~HomeSource() override;

  Result<Bytes> Get(const ChunkId& id) override;
  Status GetMany(std::span<const ChunkId> ids, const Sink& sink) override;
  // The values are the home's stored ones, verified against their ids.
  Status GetManyWithValues(std::span<const ChunkId> ids, const ValueSink& sink) override;
  std::string Describe() const override;

  // An object, verified against its id.
  Result<Bytes> GetObject(const ChunkId& id);
  Result<Ref> GetRef(const std::string& name);
  // The recorded working set of a disk table (empty if none was recorded).
  Result<std::vector<ChunkId>> GetWorkingSet(const ChunkId& table);
  // Objects and working sets asked for together: every request is sent
  // before the first reply is read, so they all cost one round trip. Each
  // answer is verified as GetObject's and GetWorkingSet's are, and has its
  // own result, in the order asked; the call fails only if the connection
  // does.
  struct Batch {
    std::vector<Result<Bytes>> objects;
    std::vector<Result<std::vector<ChunkId>>> working_sets;
  };
  Result<Batch> GetObjectsAndWorkingSets(std::span<const ChunkId> objects, std::span<const ChunkId> tables);
  // Records the order a replica first read table's chunks (at most
  // wire::kMaxWorkingSet; nothing is sent for none). The home keeps the
  // longest record it was given per table.
  Status PutWorkingSet(const ChunkId& table, std::vector<ChunkId> ids);

  HomeSourceStats stats() const;
  // The bulk fetches' window now, in chunks.
  size_t bulk_window() const { return pacer_.window(); }

 private:
  HomeSource(std::string host, uint16_t port, TlsCredentials creds, HomeSourceOptions options);
  Result<std::unique_ptr<Connection>> Acquire();
  void Release(std::unique_ptr<Connection> c);
  // One request-reply exchange on a pooled connection.
  Result<wire::Message> Call(const wire::Message& request, wire::MessageType reply);
  // Several, pipelined on one pooled connection: a result per request, in
  // order (an Error reply is that request's status). A pooled connection the
  // home closed while idle is replaced once.
  struct Exchange {
    wire::Message request;
    wire::MessageType reply;
  };
  Result<std::vector<Result<wire::Message>>> CallMany(const std::vector<Exchange>& calls);
  Result<Bytes> CheckObject(Result<wire::Message> m, const ChunkId& id);
  Result<std::vector<ChunkId>> CheckWorkingSet(Result<wire::Message> m, const ChunkId& table);
  Result<Bytes> Verify(const wire::ChunkData& d, const ChunkId& want);

  const std::string host_;
  const uint16_t port_;
  const TlsCredentials creds_;
  const HomeSourceOptions options_;
  Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ GUARDED_BY(mu_);
  BulkPacer pacer_;
  std::atomic<uint32_t> next_request_{1};
  std::atomic<uint64_t> chunks_{0}, wire_bytes_{0}, raw_bytes_{0}, missing_{0}, corrupt_{0}, requests_{0},
      connects_{0};
};

}  // namespace slingshot

#endif  // SLINGSHOT_NET_CHUNK_SERVICE_H_
