// Small helpers shared by the OpenSSL users in core (keys, certificates,
// TLS): owning pointers and the error queue as text. For core/ only.
#ifndef SLINGSHOT_BASE_OPENSSL_UTIL_H_
#define SLINGSHOT_BASE_OPENSSL_UTIL_H_

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <memory>
#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot {

// The oldest queued OpenSSL error as text (and clears the queue).
inline std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

struct PkeyDeleter { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
struct BioDeleter { void operator()(BIO* b) const { BIO_free(b); } };
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
struct MdCtxDeleter { void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); } };
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

inline Bytes BioContents(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return Bytes(p, p + n);
}

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_OPENSSL_UTIL_H_
