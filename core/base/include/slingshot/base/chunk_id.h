// ChunkId: the SHA-256 of a chunk's uncompressed bytes (DESIGN.md §4).
//
// Content addressing makes every chunk self-verifying: whoever holds the id
// can check bytes from any source, trusted or not. Hashing goes through
// OpenSSL EVP (SHA-NI on CPUs that have it).
#ifndef SLINGSHOT_BASE_CHUNK_ID_H_
#define SLINGSHOT_BASE_CHUNK_ID_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slingshot/base/status.h"

namespace slingshot {

// Largest chunk any format accepts. Bounds every chunk length we read.
constexpr size_t kMaxChunkSize = 16u << 20;

using Bytes = std::vector<uint8_t>;
using ByteView = std::span<const uint8_t>;

inline ByteView AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

struct ChunkId {
  static constexpr size_t kSize = 32;
  std::array<uint8_t, kSize> bytes{};

  // The SHA-256 of data.
  static ChunkId Of(ByteView data);
  static ChunkId Of(const void* data, size_t n) {
    return Of(ByteView(static_cast<const uint8_t*>(data), n));
  }
  // Parses 64 lowercase or uppercase hex digits.
  static Result<ChunkId> FromHex(std::string_view hex);
  // Takes exactly 32 raw bytes; InvalidArgument otherwise.
  static Result<ChunkId> FromBytes(ByteView raw);

  std::string ToHex() const;
  // The first 12 hex digits, for messages.
  std::string Short() const { return ToHex().substr(0, 12); }
  bool IsNull() const;  // all 32 bytes zero: "no chunk" (e.g. an all-zero disk chunk)

  friend bool operator==(const ChunkId&, const ChunkId&) = default;
  friend auto operator<=>(const ChunkId&, const ChunkId&) = default;
};

struct ChunkIdHash {
  size_t operator()(const ChunkId& id) const {
    size_t h;
    std::memcpy(&h, id.bytes.data(), sizeof(h));  // already uniformly distributed
    return h;
  }
};

// Incremental SHA-256 (for streams). Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(ByteView data);
  ChunkId Finish();  // may be called once

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True when every byte of data is zero (fast: compares words).
bool IsAllZero(ByteView data);

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_CHUNK_ID_H_
