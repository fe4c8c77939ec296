// Little-endian encoding, a bounds-checked decoder, and the sealed frame that
// wraps every small Slingshot object on disk (chunk tables, chunk lists,
// manifests, markers).
//
// Sealed frame layout (all integers little-endian):
//   magic    4 bytes   identifies the object type (e.g. "SSDT")
//   version  u16       format version of the body
//   reserved u16       zero
//   length   u32       body length, bounded by the caller's cap before use
//   body     length bytes
//   crc      u32       CRC-32C of everything above
#ifndef SLINGSHOT_BASE_CODING_H_
#define SLINGSHOT_BASE_CODING_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

inline void PutU16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void PutU32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i)); }
inline void PutU64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i)); }
inline uint16_t GetU16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
inline uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// Appends encoded values to a byte buffer.
class Encoder {
 public:
  explicit Encoder(Bytes* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(v); }
  void U16(uint16_t v) { uint8_t b[2]; PutU16(b, v); Raw(b, 2); }
  void U32(uint32_t v) { uint8_t b[4]; PutU32(b, v); Raw(b, 4); }
  void U64(uint64_t v) { uint8_t b[8]; PutU64(b, v); Raw(b, 8); }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Id(const ChunkId& id) { Raw(id.bytes.data(), id.bytes.size()); }
  // u32 length + bytes.
  void Str(std::string_view s) { U32(static_cast<uint32_t>(s.size())); Raw(s.data(), s.size()); }
  void Raw(const void* p, size_t n) {
    if (n == 0) return;
    size_t at = out_->size();
    out_->resize(at + n);
    std::memcpy(out_->data() + at, p, n);
  }

 private:
  Bytes* out_;
};

// Reads encoded values from a byte range. Every read is bounds-checked: once a
// read would pass the end, the decoder is failed, every later read returns
// zero values, and status() says what was being read. Check status() once at
// the end.
class Decoder {
 public:
  Decoder(ByteView in, std::string_view what) : in_(in), what_(what) {}
  uint8_t U8() { const uint8_t* p = Take(1); return p ? p[0] : 0; }
  uint16_t U16() { const uint8_t* p = Take(2); return p ? GetU16(p) : 0; }
  uint32_t U32() { const uint8_t* p = Take(4); return p ? GetU32(p) : 0; }
  uint64_t U64() { const uint8_t* p = Take(8); return p ? GetU64(p) : 0; }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  ChunkId Id() {
    ChunkId id;
    if (const uint8_t* p = Take(ChunkId::kSize)) std::memcpy(id.bytes.data(), p, ChunkId::kSize);
    return id;
  }
  // A u32-length string, refused if longer than max_len.
  std::string Str(size_t max_len, std::string_view field);
  ByteView Raw(size_t n) {
    const uint8_t* p = Take(n);
    return p ? ByteView(p, n) : ByteView();
  }
  // Fails the decoder with a Corruption message (for semantic checks).
  void Fail(std::string msg);
  size_t remaining() const { return failed_ ? 0 : in_.size() - pos_; }
  bool ok() const { return !failed_; }
  // OK when no read failed and, if require_end, every byte was consumed.
  Status Finish(bool require_end = true);

 private:
  const uint8_t* Take(size_t n);
  ByteView in_;
  size_t pos_ = 0;
  bool failed_ = false;
  std::string what_;
  std::string error_;
};

using Magic = std::array<char, 4>;

// Wraps body in a sealed frame (see above).
Bytes SealFrame(const Magic& magic, uint16_t version, ByteView body);

// Checks a sealed frame and returns a view of its body (into frame).
// Corruption if the magic, length or CRC is wrong, Unsupported if version >
// max_version, Corruption if the body exceeds max_body (a lying length).
// `what` names the object in messages ("chunk table /x/y").
struct OpenedFrame {
  uint16_t version;
  ByteView body;
};
Result<OpenedFrame> OpenFrame(ByteView frame, const Magic& magic, uint16_t max_version,
                              size_t max_body, std::string_view what);
constexpr size_t kFrameOverhead = 4 + 2 + 2 + 4 + 4;

std::string HumanBytes(uint64_t n);

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_CODING_H_
