#include "slingshot/base/chunk_id.h"

#include <openssl/evp.h>

#include <cstdlib>

namespace slingshot {
namespace {

const EVP_MD* Sha256Md() {
  // Fetch once: EVP_MD_fetch avoids the implicit per-call lookup of EVP_sha256().
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md != nullptr ? md : EVP_sha256();
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

ChunkId ChunkId::Of(ByteView data) {
  ChunkId id;
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), id.bytes.data(), &len, Sha256Md(), nullptr) != 1 ||
      len != kSize) {
    std::abort();  // only on OpenSSL misconfiguration; never on data
  }
  return id;
}

Result<ChunkId> ChunkId::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kSize) {
    return Status::InvalidArgument("chunk id must be 64 hex digits, got " +
                                   std::to_string(hex.size()) + " characters");
  }
  ChunkId id;
  for (size_t i = 0; i < kSize; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("chunk id has a non-hex digit: " + std::string(hex));
    id.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

Result<ChunkId> ChunkId::FromBytes(ByteView raw) {
  if (raw.size() != kSize) {
    return Status::InvalidArgument("chunk id must be 32 bytes, got " + std::to_string(raw.size()));
  }
  ChunkId id;
  std::memcpy(id.bytes.data(), raw.data(), kSize);
  return id;
}

std::string ChunkId::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * kSize, '0');
  for (size_t i = 0; i < kSize; ++i) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return s;
}

bool ChunkId::IsNull() const { return IsAllZero(bytes); }

struct Sha256::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  if (impl_->ctx == nullptr || EVP_DigestInit_ex(impl_->ctx, Sha256Md(), nullptr) != 1) std::abort();
}
Sha256::~Sha256() = default;

void Sha256::Update(ByteView data) {
  if (EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) != 1) std::abort();
}

ChunkId Sha256::Finish() {
  ChunkId id;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx, id.bytes.data(), &len) != 1) std::abort();
  return id;
}

bool IsAllZero(ByteView data) {
  const uint8_t* p = data.data();
  size_t n = data.size();
  uint64_t acc = 0;
  while (n >= 32) {
    uint64_t w[4];
    std::memcpy(w, p, 32);
    acc |= w[0] | w[1] | w[2] | w[3];
    if (acc) return false;
    p += 32;
    n -= 32;
  }
  while (n--) acc |= *p++;
  return acc == 0;
}

}  // namespace slingshot
