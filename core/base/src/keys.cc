#include "slingshot/base/keys.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

#include "slingshot/base/file_util.h"
#include "slingshot/base/openssl_util.h"

namespace slingshot {
namespace {

constexpr size_t kMaxKeyFile = 16 * 1024;

}  // namespace

Result<PublicKey> PublicKey::FromRaw(ByteView raw) {
  if (raw.size() != kRawSize) return Status::InvalidArgument("an Ed25519 public key is 32 bytes, got " + std::to_string(raw.size()));
  PublicKey k;
  std::memcpy(k.raw_.data(), raw.data(), kRawSize);
  return k;
}

Result<PublicKey> PublicKey::Load(const std::string& path) {
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes pem, ReadFileBounded(path, kMaxKeyFile));
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Status::Corruption(path + ": not a PEM public key (" + OpenSslError() + ")");
  if (EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) return Status::InvalidArgument(path + ": not an Ed25519 key");
  PublicKey k;
  size_t len = kRawSize;
  if (EVP_PKEY_get_raw_public_key(key.get(), k.raw_.data(), &len) != 1 || len != kRawSize) {
    return Status::Corruption(path + ": cannot read the raw public key");
  }
  return k;
}

Status PublicKey::Save(const std::string& path) const {
  PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw_.data(), kRawSize));
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!key || !bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) {
    return Status::IOError("encode public key: " + OpenSslError());
  }
  return WriteFileAtomic(path, BioContents(bio.get()), 0644);
}

std::string PublicKey::Fingerprint() const { return ChunkId::Of(raw_).ToHex().substr(0, 16); }

Status PublicKey::Verify(ByteView message, ByteView signature) const {
  if (signature.size() != kSignatureSize) return Status::Corruption("signature is " + std::to_string(signature.size()) + " bytes, not 64");
  PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw_.data(), kRawSize));
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!key || !ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1) {
    return Status::IOError("signature check setup: " + OpenSslError());
  }
  int r = EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(), message.size());
  ERR_clear_error();
  if (r != 1) return Status::Corruption("signature does not verify with key " + Fingerprint());
  return Status::OK();
}

struct SigningKey::Impl {
  PkeyPtr key;
};

SigningKey::SigningKey() : impl_(std::make_unique<Impl>()) {}
SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

namespace {
Status FillPublic(EVP_PKEY* key, PublicKey* out) {
  std::array<uint8_t, PublicKey::kRawSize> raw;
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key, raw.data(), &len) != 1 || len != raw.size()) {
    return Status::Corruption("cannot derive the public key: " + OpenSslError());
  }
  SLINGSHOT_ASSIGN_OR_RETURN(*out, PublicKey::FromRaw(raw));
  return Status::OK();
}
}  // namespace

Result<SigningKey> SigningKey::Generate() {
  SigningKey k;
  k.impl_->key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!k.impl_->key) return Status::IOError("generate Ed25519 key: " + OpenSslError());
  SLINGSHOT_RETURN_IF_ERROR(FillPublic(k.impl_->key.get(), &k.public_));
  return k;
}

Result<SigningKey> SigningKey::Load(const std::string& path) {
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes pem, ReadPrivateFile(path, kMaxKeyFile));
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  SigningKey k;
  k.impl_->key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  OPENSSL_cleanse(pem.data(), pem.size());
  if (!k.impl_->key) return Status::Corruption(path + ": not a PEM private key (" + OpenSslError() + ")");
  if (EVP_PKEY_id(k.impl_->key.get()) != EVP_PKEY_ED25519) return Status::InvalidArgument(path + ": not an Ed25519 key");
  SLINGSHOT_RETURN_IF_ERROR(FillPublic(k.impl_->key.get(), &k.public_));
  return k;
}

Status SigningKey::Save(const std::string& path) const {
  struct stat sb;
  if (::stat(path.c_str(), &sb) == 0) return Status::AlreadyExists(path + " exists; refusing to overwrite a key");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), impl_->key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Status::IOError("encode private key: " + OpenSslError());
  }
  Bytes pem = BioContents(bio.get());
  Status st = WriteFileAtomic(path, pem, 0600);
  OPENSSL_cleanse(pem.data(), pem.size());
  return st;
}

Bytes SigningKey::Sign(ByteView message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  Bytes sig(PublicKey::kSignatureSize);
  size_t len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, impl_->key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) != 1 || len != sig.size()) {
    std::abort();  // Ed25519 signing cannot fail with a valid key
  }
  return sig;
}

}  // namespace slingshot
