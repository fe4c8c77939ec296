#include "slingshot/base/coding.h"

#include <cstdio>

#include "slingshot/base/crc32c.h"

namespace slingshot {

const uint8_t* Decoder::Take(size_t n) {
  if (failed_) return nullptr;
  if (n > in_.size() - pos_) {
    Fail("truncated: needs " + std::to_string(n) + " more bytes at offset " +
         std::to_string(pos_) + " but only " + std::to_string(in_.size() - pos_) + " remain");
    return nullptr;
  }
  const uint8_t* p = in_.data() + pos_;
  pos_ += n;
  return p;
}

std::string Decoder::Str(size_t max_len, std::string_view field) {
  uint32_t n = U32();
  if (failed_) return {};
  if (n > max_len) {
    Fail(std::string(field) + " length " + std::to_string(n) + " exceeds the limit of " +
         std::to_string(max_len));
    return {};
  }
  const uint8_t* p = Take(n);
  return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
}

void Decoder::Fail(std::string msg) {
  if (failed_) return;
  failed_ = true;
  error_ = std::move(msg);
}

Status Decoder::Finish(bool require_end) {
  if (!failed_ && require_end && pos_ != in_.size()) {
    Fail(std::to_string(in_.size() - pos_) + " unexpected trailing bytes");
  }
  if (failed_) return Status::Corruption(what_ + ": " + error_);
  return Status::OK();
}

Bytes SealFrame(const Magic& magic, uint16_t version, ByteView body) {
  Bytes out;
  out.reserve(body.size() + kFrameOverhead);
  Encoder e(&out);
  e.Raw(magic.data(), 4);
  e.U16(version);
  e.U16(0);
  e.U32(static_cast<uint32_t>(body.size()));
  e.Raw(body.data(), body.size());
  e.U32(crc32c::Value(out.data(), out.size()));
  return out;
}

Result<OpenedFrame> OpenFrame(ByteView frame, const Magic& magic, uint16_t max_version,
                              size_t max_body, std::string_view what) {
  std::string w(what);
  if (frame.size() < kFrameOverhead) {
    return Status::Corruption(w + ": " + std::to_string(frame.size()) +
                              " bytes is too short to be one (truncated?)");
  }
  if (std::memcmp(frame.data(), magic.data(), 4) != 0) {
    return Status::Corruption(w + ": bad magic (not a " + std::string(magic.data(), 4) +
                              " object, or damaged)");
  }
  uint16_t version = GetU16(frame.data() + 4);
  uint32_t len = GetU32(frame.data() + 8);
  if (len > max_body) {
    return Status::Corruption(w + ": body length " + std::to_string(len) +
                              " exceeds the limit of " + std::to_string(max_body));
  }
  if (len != frame.size() - kFrameOverhead) {
    return Status::Corruption(w + ": body length field says " + std::to_string(len) +
                              " but the object holds " +
                              std::to_string(frame.size() - kFrameOverhead));
  }
  uint32_t want = GetU32(frame.data() + frame.size() - 4);
  if (crc32c::Value(frame.data(), frame.size() - 4) != want) {
    return Status::Corruption(w + ": checksum mismatch (the bytes were damaged)");
  }
  if (version == 0 || version > max_version) {
    return Status::Unsupported(w + ": format version " + std::to_string(version) +
                               " is not supported by this build (max " +
                               std::to_string(max_version) + "); upgrade slingshot");
  }
  return OpenedFrame{version, frame.subspan(12, len)};
}

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) { v /= 1024; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace slingshot
