#include "slingshot/vm/vm_stream.h"

#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"

namespace slingshot {
namespace {

constexpr Magic kMagic = {'S', 'S', 'V', 'S'};
constexpr uint16_t kVersion = 1;
constexpr size_t kTrailerSize = 8 + ChunkId::kSize + 4;

}  // namespace

VmStreamWriter::VmStreamWriter(ByteSink sink) : sink_(std::move(sink)) {}
VmStreamWriter::~VmStreamWriter() = default;

Status VmStreamWriter::Emit(ByteView b) {
  bytes_written_ += b.size();
  return sink_(b);
}

Status VmStreamWriter::Begin(const VmStreamHeader& h) {
  Bytes body;
  Encoder e(&body);
  e.Str(h.backend);
  e.U32(h.memory_mib);
  e.U32(h.vcpus);
  e.Str(h.config);
  if (body.size() > kMaxVmStreamHeader) {
    return Status::InvalidArgument("VM stream header is larger than 1 MiB");
  }
  Bytes frame = SealFrame(kMagic, kVersion, body);
  return Emit(frame);
}

Status VmStreamWriter::EmitBlock(ByteView block) {
  uint8_t head[8];
  PutU32(head, static_cast<uint32_t>(block.size()));
  PutU32(head + 4, crc32c::Value(block));
  SLINGSHOT_RETURN_IF_ERROR(Emit(ByteView(head, sizeof head)));
  SLINGSHOT_RETURN_IF_ERROR(Emit(block));
  sha_.Update(block);
  payload_bytes_ += block.size();
  return Status::OK();
}

Status VmStreamWriter::Write(ByteView payload) {
  while (!payload.empty()) {
    if (pending_.empty() && payload.size() >= kVmStreamBlock) {
      SLINGSHOT_RETURN_IF_ERROR(EmitBlock(payload.subspan(0, kVmStreamBlock)));
      payload = payload.subspan(kVmStreamBlock);
      continue;
    }
    size_t take = std::min(payload.size(), kVmStreamBlock - pending_.size());
    pending_.insert(pending_.end(), payload.begin(), payload.begin() + take);
    payload = payload.subspan(take);
    if (pending_.size() == kVmStreamBlock) {
      SLINGSHOT_RETURN_IF_ERROR(EmitBlock(pending_));
      pending_.clear();
    }
  }
  return Status::OK();
}

Status VmStreamWriter::Finish() {
  if (!pending_.empty()) {
    SLINGSHOT_RETURN_IF_ERROR(EmitBlock(pending_));
    pending_.clear();
  }
  uint8_t end[4 + kTrailerSize];
  PutU32(end, 0);
  PutU64(end + 4, payload_bytes_);
  ChunkId digest = sha_.Finish();
  std::memcpy(end + 12, digest.bytes.data(), ChunkId::kSize);
  PutU32(end + 4 + 40, crc32c::Value(end + 4, 40));
  return Emit(ByteView(end, sizeof end));
}

VmStreamReader::VmStreamReader(std::function<Status(const VmStreamHeader&)> on_header,
                               ByteSink on_payload)
    : on_header_(std::move(on_header)), on_payload_(std::move(on_payload)) {}
VmStreamReader::~VmStreamReader() = default;

Status VmStreamReader::Feed(ByteView data) {
  if (phase_ == Phase::kFailed) return Status::Corruption("VM stream: already failed");
  bytes_read_ += data.size();
  while (!data.empty()) {
    if (phase_ == Phase::kDone) {
      phase_ = Phase::kFailed;
      return Status::Corruption("VM stream: unexpected bytes after the trailer");
    }
    size_t take = std::min(data.size(), need_ - buf_.size());
    buf_.insert(buf_.end(), data.begin(), data.begin() + take);
    data = data.subspan(take);
    if (buf_.size() == need_) {
      Status s = Step();
      if (!s.ok()) {
        phase_ = Phase::kFailed;
        return s;
      }
    }
  }
  return Status::OK();
}

// Consumes buf_ (exactly need_ bytes) and sets the next need_.
Status VmStreamReader::Step() {
  switch (phase_) {
    case Phase::kHeaderPrefix: {
      if (std::memcmp(buf_.data(), kMagic.data(), 4) != 0) {
        return Status::Corruption("not a Slingshot VM stream (bad magic)");
      }
      uint32_t len = GetU32(buf_.data() + 8);
      if (len > kMaxVmStreamHeader) {
        return Status::Corruption("VM stream header claims " + std::to_string(len) +
                                  " bytes (limit 1 MiB)");
      }
      need_ = kFrameOverhead + len;
      phase_ = Phase::kHeader;
      return Status::OK();  // keep buf_: the frame is checked whole
    }
    case Phase::kHeader: {
      SLINGSHOT_ASSIGN_OR_RETURN(OpenedFrame f, OpenFrame(buf_, kMagic, kVersion,
                                                          kMaxVmStreamHeader, "VM stream header"));
      Decoder d(f.body, "VM stream header");
      VmStreamHeader h;
      h.backend = d.Str(64, "backend");
      h.memory_mib = d.U32();
      h.vcpus = d.U32();
      h.config = d.Str(kMaxVmStreamHeader, "config");
      SLINGSHOT_RETURN_IF_ERROR(d.Finish());
      SLINGSHOT_RETURN_IF_ERROR(on_header_(h));
      phase_ = Phase::kBlockHead;
      need_ = 8;
      break;
    }
    case Phase::kBlockHead: {
      uint32_t len = GetU32(buf_.data());
      block_crc_ = GetU32(buf_.data() + 4);
      if (len == 0) {
        // End marker: its second word is the trailer's first.
        phase_ = Phase::kTrailer;
        Bytes rest(buf_.begin() + 4, buf_.end());
        buf_ = std::move(rest);
        need_ = kTrailerSize;
        return Status::OK();
      }
      if (len > kMaxVmStreamBlock) {
        return Status::Corruption("VM stream block claims " + std::to_string(len) +
                                  " bytes (limit 1 MiB) at payload offset " +
                                  std::to_string(payload_bytes_));
      }
      phase_ = Phase::kBlockData;
      need_ = len;
      break;
    }
    case Phase::kBlockData: {
      if (crc32c::Value(buf_) != block_crc_) {
        return Status::Corruption("VM stream block at payload offset " +
                                  std::to_string(payload_bytes_) +
                                  " fails its checksum; the checkpoint is damaged");
      }
      sha_.Update(buf_);
      payload_bytes_ += buf_.size();
      SLINGSHOT_RETURN_IF_ERROR(on_payload_(buf_));
      phase_ = Phase::kBlockHead;
      need_ = 8;
      break;
    }
    case Phase::kTrailer: {
      if (crc32c::Value(buf_.data(), 40) != GetU32(buf_.data() + 40)) {
        return Status::Corruption("VM stream trailer fails its checksum");
      }
      uint64_t total = GetU64(buf_.data());
      ChunkId want;
      std::memcpy(want.bytes.data(), buf_.data() + 8, ChunkId::kSize);
      if (total != payload_bytes_ || !(sha_.Finish() == want)) {
        return Status::Corruption("VM stream does not match its trailer (" +
                                  std::to_string(payload_bytes_) + " bytes read, " +
                                  std::to_string(total) + " recorded)");
      }
      phase_ = Phase::kDone;
      need_ = 0;
      break;
    }
    case Phase::kDone:
    case Phase::kFailed:
      return Status::Corruption("VM stream: internal state error");
  }
  buf_.clear();
  return Status::OK();
}

Status VmStreamReader::Finish() {
  if (phase_ == Phase::kDone) return Status::OK();
  if (phase_ == Phase::kFailed) return Status::Corruption("VM stream failed earlier");
  phase_ = Phase::kFailed;
  return Status::Corruption("VM stream is truncated after " + std::to_string(bytes_read_) +
                            " bytes (" + std::to_string(payload_bytes_) +
                            " payload bytes); the checkpoint is incomplete");
}

}  // namespace slingshot
