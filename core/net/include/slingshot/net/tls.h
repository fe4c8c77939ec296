// Certificates for Slingshot's TLS links (DESIGN.md §6): the home is a small
// certificate authority; every program presents a certificate it issued and
// trusts only certificates it issued (the CA is pinned: no system roots).
//
// Certificates are X.509 v3 with Ed25519 keys (OpenSSL). The subject's CN
// names the holder ("alice-laptop") and its OU its role ("home", "client",
// "surrogate"); a server checks the role its service requires.
//
// Files (a credentials directory):
//   ca.pem    the home CA's certificate
//   cert.pem  this holder's certificate
//   key.pem   its private key, PKCS#8, mode 0600 (Load refuses a key others can read)
// and the CA's own directory holds ca.pem and ca-key.pem (0600).
#ifndef SLINGSHOT_NET_TLS_H_
#define SLINGSHOT_NET_TLS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "slingshot/base/status.h"
#include "slingshot/net/capability.h"

namespace slingshot {

struct TlsCredentials {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;

  static Result<TlsCredentials> Load(const std::string& dir);
  // Creates dir (0700) if needed; AlreadyExists if it already holds a key.
  Status Save(const std::string& dir) const;
};

struct CertificateInfo {
  std::string common_name;
  Role role = Role::kUnknown;
  std::string role_name;   // the OU as written (for messages about unknown roles)
  std::string scope;       // a capability's or client's description (capability.h), else ""
  int64_t not_before = 0;  // unix seconds
  int64_t not_after = 0;
  std::string fingerprint;  // SHA-256 of the DER, first 16 hex digits
};
Result<CertificateInfo> InspectCertificate(const std::string& pem);

// OK if cert_pem chains to ca_pem and is valid now; PermissionDenied saying
// why (expired; not issued by that CA) otherwise. `what` names it in the
// message ("the capability").
Status VerifyCertificate(const std::string& cert_pem, const std::string& ca_pem, std::string_view what);

// The capability a certificate carries: it must be of role surrogate with a
// well-formed scope (capability.h). PermissionDenied saying what it is
// instead. Checks nothing about who issued it (VerifyCapability does).
Result<Capability> CapabilityOf(const CertificateInfo& info);
// The user a client certificate belongs to (capability.h). PermissionDenied
// if it is not a client certificate or its description names no user.
Result<std::string> UserOf(const CertificateInfo& info);
// VerifyCertificate (chains to ca_pem, not expired), then CapabilityOf.
Result<Capability> VerifyCapability(const std::string& cert_pem, const std::string& ca_pem);

// A fresh key and a self-signed certificate for it (ca_pem = cert_pem): an
// identity for a TLS session before a CA has issued one (pairing).
Result<TlsCredentials> SelfSignedCredentials(const std::string& common_name, Role role, int64_t valid_seconds);

// OK if key_pem is the private key of cert_pem's public key.
Status CheckKeyMatches(const std::string& cert_pem, const std::string& key_pem);

class CertificateAuthority {
 public:
  static Result<CertificateAuthority> Create(const std::string& name, int64_t valid_seconds);
  static Result<CertificateAuthority> Load(const std::string& dir);
  Status Save(const std::string& dir) const;

  // A fresh key and a certificate for it, valid from a few minutes ago (clock
  // skew) for valid_seconds. A negative valid_seconds issues a certificate
  // that has already expired (for tests of expiry handling).
  Result<TlsCredentials> Issue(const std::string& common_name, Role role, int64_t valid_seconds) const;
  // A capability: a surrogate certificate named after cap.client and scoped
  // to cap (its not_after and fingerprint are ignored). InvalidArgument for
  // a malformed capability.
  Result<TlsCredentials> IssueCapability(const Capability& cap, int64_t valid_seconds) const;
  // A certificate for the key in another certificate (a pairing client's
  // self-signed one, whose key never leaves the client).
  // user: a client's user (capability.h; "" = none, the CN is the user).
  Result<std::string> IssueForKeyOf(const std::string& cert_pem, const std::string& common_name, Role role,
                                    int64_t valid_seconds, const std::string& user = "") const;
  // A client device's certificate, of user (capability.h).
  Result<TlsCredentials> IssueClient(const std::string& device, const std::string& user, int64_t valid_seconds) const;
  const std::string& cert_pem() const { return cert_pem_; }

 private:
  Result<TlsCredentials> IssueScoped(const std::string& common_name, Role role, int64_t valid_seconds,
                                     const std::string& scope) const;
  std::string cert_pem_;
  std::string key_pem_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_NET_TLS_H_
