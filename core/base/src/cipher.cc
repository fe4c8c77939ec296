#include "slingshot/base/cipher.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>

namespace slingshot {
namespace {
struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;
constexpr size_t kNonce = 12, kTag = 16;
}  // namespace

Result<std::shared_ptr<const LocalCipher>> LocalCipher::Random() {
  std::shared_ptr<LocalCipher> c(new LocalCipher());
  if (RAND_bytes(c->seal_key_.data(), static_cast<int>(c->seal_key_.size())) != 1 ||
      RAND_bytes(c->xor_key_.data(), static_cast<int>(c->xor_key_.size())) != 1 ||
      RAND_bytes(c->xor_nonce_.data(), static_cast<int>(c->xor_nonce_.size())) != 1) {
    return Status::IOError("no random bytes for a local key (OpenSSL RAND_bytes failed)");
  }
  return std::shared_ptr<const LocalCipher>(std::move(c));
}

LocalCipher::~LocalCipher() {
  OPENSSL_cleanse(seal_key_.data(), seal_key_.size());
  OPENSSL_cleanse(xor_key_.data(), xor_key_.size());
}

Bytes LocalCipher::Seal(ByteView plain, ByteView aad) const {
  Bytes out(kNonce + plain.size() + kTag);
  // RAND_bytes fails only when the process has no entropy source at all;
  // the key came from it at Random(), so a nonce does too.
  (void)RAND_bytes(out.data(), static_cast<int>(kNonce));
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, seal_key_.data(), out.data());
  if (!aad.empty()) EVP_EncryptUpdate(ctx.get(), nullptr, &n, aad.data(), static_cast<int>(aad.size()));
  EVP_EncryptUpdate(ctx.get(), out.data() + kNonce, &n, plain.data(), static_cast<int>(plain.size()));
  EVP_EncryptFinal_ex(ctx.get(), out.data() + kNonce + n, &n);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTag), out.data() + kNonce + plain.size());
  return out;
}

Result<Bytes> LocalCipher::Open(ByteView sealed, ByteView aad) const {
  if (sealed.size() < kOverhead) return Status::Corruption("a sealed value is shorter than its nonce and tag");
  const size_t len = sealed.size() - kOverhead;
  Bytes out(len);
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, seal_key_.data(), sealed.data());
  if (!aad.empty()) EVP_DecryptUpdate(ctx.get(), nullptr, &n, aad.data(), static_cast<int>(aad.size()));
  EVP_DecryptUpdate(ctx.get(), out.data(), &n, sealed.data() + kNonce, static_cast<int>(len));
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTag),
                      const_cast<uint8_t*>(sealed.data() + kNonce + len));
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + n, &n) != 1) {
    return Status::Corruption("a sealed value does not open under this process's key: it was altered, or sealed by "
                              "an earlier run");
  }
  return out;
}

void LocalCipher::Xor(uint64_t offset, uint8_t* data, size_t n) const {
  if (n == 0) return;
  uint8_t iv[16];
  std::memcpy(iv, xor_nonce_.data(), 8);
  const uint64_t block = offset / 16;
  for (int i = 0; i < 8; ++i) iv[8 + i] = static_cast<uint8_t>(block >> (56 - 8 * i));
  Ctx ctx(EVP_CIPHER_CTX_new());
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ctr(), nullptr, xor_key_.data(), iv);
  int m = 0;
  uint8_t skip[16] = {};
  if (const size_t lead = offset % 16) EVP_EncryptUpdate(ctx.get(), skip, &m, skip, static_cast<int>(lead));
  // In place, in pieces that fit an int.
  for (size_t done = 0; done < n;) {
    const int piece = static_cast<int>(std::min<size_t>(n - done, 1u << 30));
    EVP_EncryptUpdate(ctx.get(), data + done, &m, data + done, piece);
    done += static_cast<size_t>(piece);
  }
}

}  // namespace slingshot
