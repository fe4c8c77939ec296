// LocalCipher: encryption for what a surrogate keeps on its own disk for a
// replica (its chunk cache, its disk overlay), under a key that exists only
// in the process's memory, made fresh at each start (DESIGN.md §6): after a
// power cut or kill -9 the files are unreadable, and the next start wipes
// them anyway. OpenSSL.
//
// - Seal/Open: AES-256-GCM, a random 96-bit nonce per value, the caller's
//   associated data (e.g. the chunk id the value is stored under):
//   nonce (12) || ciphertext || tag (16). Open refuses anything altered.
// - Xor: AES-256-CTR keyed separately, the keystream at a byte offset of a
//   file, for files read and written in place at any offset (the overlay):
//   length-preserving, confidential, not authenticated (the file never
//   leaves this process's care, and what it holds was verified on entry).
//
// Thread-safe (const methods; each call has its own OpenSSL context).
#ifndef SLINGSHOT_BASE_CIPHER_H_
#define SLINGSHOT_BASE_CIPHER_H_

#include <array>
#include <cstdint>
#include <memory>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

class LocalCipher {
 public:
  static constexpr size_t kOverhead = 12 + 16;
  // A fresh random key (and a random nonce prefix for Xor).
  static Result<std::shared_ptr<const LocalCipher>> Random();
  ~LocalCipher();

  Bytes Seal(ByteView plain, ByteView aad) const;
  // Corruption if sealed was altered, or sealed under another key or aad.
  Result<Bytes> Open(ByteView sealed, ByteView aad) const;
  // data ^= the keystream at [offset, offset + n) of a file.
  void Xor(uint64_t offset, uint8_t* data, size_t n) const;

 private:
  LocalCipher() = default;
  std::array<uint8_t, 32> seal_key_{};
  std::array<uint8_t, 32> xor_key_{};
  std::array<uint8_t, 8> xor_nonce_{};
};

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_CIPHER_H_
