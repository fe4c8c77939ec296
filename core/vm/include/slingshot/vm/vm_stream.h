// VM streams: the envelope around a hypervisor's save stream.
//
// Layout (integers little-endian):
//   header   sealed frame (coding.h), magic "SSVS", version 1, body ≤ 1 MiB:
//              backend      string (u32 length + bytes): "qemu" or "xen"
//              memory_mib   u32
//              vcpus        u32
//              config       string: the backend's machine/domain config
//                           (JSON), which the backend's own stream lacks
//   blocks   repeated: length u32 (1..kMaxVmStreamBlock), crc32c u32 of the
//            data, data. The writer cuts blocks at fixed payload offsets
//            (every kVmStreamBlock bytes), so two checkpoints of a VM whose
//            memory barely changed give nearly identical streams and share
//            nearly all their FastCDC chunks.
//   end      length u32 = 0, then
//            total u64 (payload bytes), sha256 32 bytes (of the payload),
//            crc32c u32 of the 40 bytes before it
//
// The reader is push-driven (Feed any split of the bytes) so it can sit
// between a chunk fetcher and a hypervisor; it hands a block on only after
// its CRC checked out and reports truncation if the end is missing.
#ifndef SLINGSHOT_VM_VM_STREAM_H_
#define SLINGSHOT_VM_VM_STREAM_H_

#include <cstdint>
#include <functional>
#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/vm/hypervisor.h"
#include "slingshot/base/status.h"

namespace slingshot {

constexpr size_t kMaxVmStreamBlock = 1 << 20;
constexpr size_t kVmStreamBlock = 1 << 20;
constexpr size_t kMaxVmStreamHeader = 1 << 20;

struct VmStreamHeader {
  std::string backend;
  uint32_t memory_mib = 0;
  uint32_t vcpus = 0;
  std::string config;
};

// Not thread-safe.
class VmStreamWriter {
 public:
  explicit VmStreamWriter(ByteSink sink);
  VmStreamWriter(const VmStreamWriter&) = delete;
  VmStreamWriter& operator=(const VmStreamWriter&) = delete;
  ~VmStreamWriter();

  Status Begin(const VmStreamHeader& header);
  Status Write(ByteView payload);
  Status Finish();
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  Status Emit(ByteView b);
  Status EmitBlock(ByteView block);
  ByteSink sink_;
  Bytes pending_;  // payload not yet cut into a block (< kVmStreamBlock)
  Sha256 sha_;
  uint64_t payload_bytes_ = 0;
  uint64_t bytes_written_ = 0;
};

// Not thread-safe.
class VmStreamReader {
 public:
  // on_header is called once, before any payload; an error from it (e.g. a
  // wrong backend) stops the stream.
  VmStreamReader(std::function<Status(const VmStreamHeader&)> on_header, ByteSink on_payload);
  VmStreamReader(const VmStreamReader&) = delete;
  VmStreamReader& operator=(const VmStreamReader&) = delete;
  ~VmStreamReader();

  Status Feed(ByteView data);
  // Corruption unless the end and a matching trailer have been read.
  Status Finish();
  bool complete() const { return phase_ == Phase::kDone; }
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  enum class Phase { kHeaderPrefix, kHeader, kBlockHead, kBlockData, kTrailer, kDone, kFailed };
  Status Step();
  std::function<Status(const VmStreamHeader&)> on_header_;
  ByteSink on_payload_;
  Phase phase_ = Phase::kHeaderPrefix;
  Bytes buf_;
  size_t need_ = 12;
  uint32_t block_crc_ = 0;
  Sha256 sha_;
  uint64_t payload_bytes_ = 0;
  uint64_t bytes_read_ = 0;
};

}  // namespace slingshot

#endif  // SLINGSHOT_VM_VM_STREAM_H_
