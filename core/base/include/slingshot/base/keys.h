// Ed25519 keys (OpenSSL) for signing checkpoint manifests.
//
// Files: the private key is PKCS#8 PEM, created with mode 0600 and never
// overwritten; Load refuses a private key file that group or others can
// read. The public key is SubjectPublicKeyInfo PEM.
//
// Thread-safety: const methods may be called concurrently.
#ifndef SLINGSHOT_BASE_KEYS_H_
#define SLINGSHOT_BASE_KEYS_H_

#include <memory>
#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

class PublicKey {
 public:
  static constexpr size_t kRawSize = 32;
  static constexpr size_t kSignatureSize = 64;

  static Result<PublicKey> FromRaw(ByteView raw);
  static Result<PublicKey> Load(const std::string& path);
  Status Save(const std::string& path) const;

  const std::array<uint8_t, kRawSize>& raw() const { return raw_; }
  // Hex SHA-256 of the raw key, shortened: how a key is named in messages.
  std::string Fingerprint() const;
  // OK if sig is message's valid signature by this key, else Corruption.
  Status Verify(ByteView message, ByteView signature) const;

  friend bool operator==(const PublicKey& a, const PublicKey& b) { return a.raw_ == b.raw_; }

 private:
  std::array<uint8_t, kRawSize> raw_{};
};

class SigningKey {
 public:
  static Result<SigningKey> Generate();
  // InvalidArgument if the file's permissions let others read it.
  static Result<SigningKey> Load(const std::string& path);
  // Writes the private key (0600) to path; AlreadyExists if path exists.
  Status Save(const std::string& path) const;

  const PublicKey& public_key() const { return public_; }
  Bytes Sign(ByteView message) const;

  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  ~SigningKey();

 private:
  SigningKey();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  PublicKey public_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_KEYS_H_
