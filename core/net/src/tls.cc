#include "slingshot/net/tls.h"

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>

#include "slingshot/base/openssl_util.h"
#include "slingshot/base/chunk_id.h"
#include "slingshot/base/file_util.h"

namespace slingshot {
namespace {

struct X509Deleter { void operator()(X509* x) const { X509_free(x); } };
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

constexpr size_t kMaxPem = 64 * 1024;
constexpr int64_t kSkewSeconds = 300;  // certificates start a little in the past

Result<X509Ptr> ParseCert(const std::string& pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!x) return Status::Corruption(std::string(what) + " is not a PEM certificate (" + OpenSslError() + ")");
  return x;
}

Result<PkeyPtr> ParseKey(const std::string& pem, std::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr k(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!k) return Status::Corruption(std::string(what) + " is not a PEM private key (" + OpenSslError() + ")");
  return k;
}

Result<std::string> KeyPem(EVP_PKEY* k) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Status::IOError("encode private key: " + OpenSslError());
  }
  Bytes b = BioContents(bio.get());
  return std::string(b.begin(), b.end());
}

Result<std::string> CertPem(X509* x) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), x) != 1) return Status::IOError("encode certificate: " + OpenSslError());
  Bytes b = BioContents(bio.get());
  return std::string(b.begin(), b.end());
}

Result<PkeyPtr> NewKey() {
  PkeyPtr k(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!k) return Status::IOError("generate an Ed25519 key: " + OpenSslError());
  return k;
}

Status AddExt(X509* issuer, X509* subject, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, subject, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) return Status::IOError(std::string("certificate extension ") + value + ": " + OpenSslError());
  int ok = X509_add_ext(subject, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? Status::OK() : Status::IOError("add certificate extension: " + OpenSslError());
}

// Builds and signs a certificate for key, issued by (issuer, issuer_key), or
// self-signed when issuer is null.
Result<X509Ptr> MakeCert(EVP_PKEY* key, const std::string& cn, Role role_id, int64_t valid_seconds,
                         X509* issuer, EVP_PKEY* issuer_key, bool is_ca, const std::string& scope = "") {
  if (cn.empty() || cn.size() > 64) return Status::InvalidArgument("a certificate name must be 1 to 64 characters");
  if (scope.size() > 200) return Status::InvalidArgument("a certificate scope must be at most 200 characters");
  if (role_id == Role::kUnknown) return Status::InvalidArgument("a certificate needs a role");
  const std::string role = RoleName(role_id);
  X509Ptr x(X509_new());
  if (!x) return Status::IOError("X509_new: " + OpenSslError());
  X509_set_version(x.get(), 2);
  uint8_t serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return Status::IOError("random serial: " + OpenSslError());
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get()));
  BN_free(bn);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Slingshot"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(role.c_str()), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  if (!scope.empty()) {
    X509_NAME_add_entry_by_NID(name, NID_description, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(scope.c_str()), -1, -1, 0);
  }
  X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer) : name);
  int64_t start = -kSkewSeconds, end = valid_seconds;
  if (valid_seconds < 0) start = valid_seconds - 2 * kSkewSeconds;  // already expired
  X509_gmtime_adj(X509_getm_notBefore(x.get()), static_cast<long>(start));
  X509_gmtime_adj(X509_getm_notAfter(x.get()), static_cast<long>(end));
  if (X509_set_pubkey(x.get(), key) != 1) return Status::IOError("set certificate key: " + OpenSslError());
  X509* iss = issuer ? issuer : x.get();
  SLINGSHOT_RETURN_IF_ERROR(AddExt(iss, x.get(), NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE"));
  SLINGSHOT_RETURN_IF_ERROR(AddExt(iss, x.get(), NID_key_usage,
                                   is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature"));
  SLINGSHOT_RETURN_IF_ERROR(AddExt(iss, x.get(), NID_subject_key_identifier, "hash"));
  if (issuer) {
    SLINGSHOT_RETURN_IF_ERROR(AddExt(iss, x.get(), NID_ext_key_usage, "serverAuth,clientAuth"));
  }
  // Ed25519 signs the whole message: no digest.
  if (X509_sign(x.get(), issuer_key ? issuer_key : key, nullptr) <= 0) {
    return Status::IOError("sign certificate: " + OpenSslError());
  }
  return x;
}

std::string NameEntry(X509_NAME* name, int nid) {
  int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0) return "";
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, s);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

int64_t AsnTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

Result<std::string> ReadText(const std::string& path) {
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, ReadFileBounded(path, kMaxPem));
  return std::string(b.begin(), b.end());
}

Status WriteText(const std::string& path, const std::string& text, int mode) {
  return WriteFileAtomic(path, AsBytes(text), mode);
}

}  // namespace

Result<CertificateInfo> InspectCertificate(const std::string& pem) {
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr x, ParseCert(pem, "certificate"));
  CertificateInfo info;
  X509_NAME* subject = X509_get_subject_name(x.get());
  info.common_name = NameEntry(subject, NID_commonName);
  info.role_name = NameEntry(subject, NID_organizationalUnitName);
  info.role = ParseRole(info.role_name);
  info.scope = NameEntry(subject, NID_description);
  info.not_before = AsnTime(X509_get0_notBefore(x.get()));
  info.not_after = AsnTime(X509_get0_notAfter(x.get()));
  unsigned char md[32];
  unsigned int n = 0;
  X509_digest(x.get(), EVP_sha256(), md, &n);
  info.fingerprint = ChunkId::Of(md, n).ToHex().substr(0, 16);
  return info;
}

Result<TlsCredentials> TlsCredentials::Load(const std::string& dir) {
  TlsCredentials c;
  SLINGSHOT_ASSIGN_OR_RETURN(c.ca_pem, ReadText(dir + "/ca.pem"));
  SLINGSHOT_ASSIGN_OR_RETURN(c.cert_pem, ReadText(dir + "/cert.pem"));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes key, ReadPrivateFile(dir + "/key.pem", kMaxPem));
  c.key_pem.assign(key.begin(), key.end());
  OPENSSL_cleanse(key.data(), key.size());
  // Parse now, so a damaged file is reported by name rather than by the handshake.
  SLINGSHOT_RETURN_IF_ERROR(ParseCert(c.ca_pem, dir + "/ca.pem").status());
  SLINGSHOT_RETURN_IF_ERROR(ParseCert(c.cert_pem, dir + "/cert.pem").status());
  SLINGSHOT_RETURN_IF_ERROR(ParseKey(c.key_pem, dir + "/key.pem").status());
  return c;
}

Status TlsCredentials::Save(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("create " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  if (std::filesystem::exists(dir + "/key.pem")) {
    return Status::AlreadyExists(dir + " already holds credentials; remove it first to replace them");
  }
  SLINGSHOT_RETURN_IF_ERROR(WriteText(dir + "/key.pem", key_pem, 0600));
  SLINGSHOT_RETURN_IF_ERROR(WriteText(dir + "/cert.pem", cert_pem, 0644));
  return WriteText(dir + "/ca.pem", ca_pem, 0644);
}

Result<CertificateAuthority> CertificateAuthority::Create(const std::string& name, int64_t valid_seconds) {
  SLINGSHOT_ASSIGN_OR_RETURN(PkeyPtr key, NewKey());
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr x, MakeCert(key.get(), name, Role::kCa, valid_seconds, nullptr, nullptr, true));
  CertificateAuthority ca;
  SLINGSHOT_ASSIGN_OR_RETURN(ca.cert_pem_, CertPem(x.get()));
  SLINGSHOT_ASSIGN_OR_RETURN(ca.key_pem_, KeyPem(key.get()));
  return ca;
}

Result<CertificateAuthority> CertificateAuthority::Load(const std::string& dir) {
  CertificateAuthority ca;
  SLINGSHOT_ASSIGN_OR_RETURN(ca.cert_pem_, ReadText(dir + "/ca.pem"));
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes key, ReadPrivateFile(dir + "/ca-key.pem", kMaxPem));
  ca.key_pem_.assign(key.begin(), key.end());
  OPENSSL_cleanse(key.data(), key.size());
  SLINGSHOT_RETURN_IF_ERROR(ParseCert(ca.cert_pem_, dir + "/ca.pem").status());
  SLINGSHOT_RETURN_IF_ERROR(ParseKey(ca.key_pem_, dir + "/ca-key.pem").status());
  return ca;
}

Status CertificateAuthority::Save(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("create " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  if (std::filesystem::exists(dir + "/ca-key.pem")) {
    return Status::AlreadyExists(dir + " already holds a CA; a second one would orphan every paired client");
  }
  SLINGSHOT_RETURN_IF_ERROR(WriteText(dir + "/ca-key.pem", key_pem_, 0600));
  return WriteText(dir + "/ca.pem", cert_pem_, 0644);
}

Status VerifyCertificate(const std::string& cert_pem, const std::string& ca_pem, std::string_view what) {
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr cert, ParseCert(cert_pem, std::string(what)));
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr ca, ParseCert(ca_pem, "CA certificate"));
  X509_STORE* store = X509_STORE_new();
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  Status st;
  if (!store || !ctx || X509_STORE_add_cert(store, ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx, store, cert.get(), nullptr) != 1) {
    st = Status::IOError("cannot set up certificate verification: " + OpenSslError());
  } else if (X509_verify_cert(ctx) != 1) {
    int err = X509_STORE_CTX_get_error(ctx);
    std::string why = X509_verify_cert_error_string(err);
    if (err == X509_V_ERR_CERT_HAS_EXPIRED) {
      st = Status::PermissionDenied(std::string(what) + " has expired: ask the home for a new one");
    } else {
      st = Status::PermissionDenied(std::string(what) + " was not issued by the home's CA (" + why + ")");
    }
  }
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return st;
}

Result<TlsCredentials> SelfSignedCredentials(const std::string& common_name, Role role,
                                             int64_t valid_seconds) {
  SLINGSHOT_ASSIGN_OR_RETURN(PkeyPtr key, NewKey());
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr x, MakeCert(key.get(), common_name, role, valid_seconds, nullptr, nullptr, false));
  TlsCredentials c;
  SLINGSHOT_ASSIGN_OR_RETURN(c.cert_pem, CertPem(x.get()));
  SLINGSHOT_ASSIGN_OR_RETURN(c.key_pem, KeyPem(key.get()));
  c.ca_pem = c.cert_pem;
  return c;
}

Status CheckKeyMatches(const std::string& cert_pem, const std::string& key_pem) {
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr x, ParseCert(cert_pem, "certificate"));
  SLINGSHOT_ASSIGN_OR_RETURN(PkeyPtr key, ParseKey(key_pem, "private key"));
  if (X509_check_private_key(x.get(), key.get()) != 1) {
    ERR_clear_error();
    return Status::PermissionDenied("the certificate is not for this private key");
  }
  return Status::OK();
}

Result<std::string> CertificateAuthority::IssueForKeyOf(const std::string& cert_pem, const std::string& common_name,
                                                        Role role, int64_t valid_seconds,
                                                        const std::string& user) const {
  std::string scope;
  if (!user.empty()) {
    SLINGSHOT_ASSIGN_OR_RETURN(scope, UserScope(user));
  }
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr peer, ParseCert(cert_pem, "the peer's certificate"));
  EVP_PKEY* key = X509_get0_pubkey(peer.get());
  if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    return Status::InvalidArgument("the peer's certificate does not hold an Ed25519 key");
  }
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr ca, ParseCert(cert_pem_, "CA certificate"));
  SLINGSHOT_ASSIGN_OR_RETURN(PkeyPtr ca_key, ParseKey(key_pem_, "CA key"));
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr x,
                             MakeCert(key, common_name, role, valid_seconds, ca.get(), ca_key.get(), false, scope));
  return CertPem(x.get());
}

Result<TlsCredentials> CertificateAuthority::Issue(const std::string& common_name, Role role,
                                                   int64_t valid_seconds) const {
  return IssueScoped(common_name, role, valid_seconds, "");
}

Result<TlsCredentials> CertificateAuthority::IssueClient(const std::string& device, const std::string& user,
                                                         int64_t valid_seconds) const {
  SLINGSHOT_ASSIGN_OR_RETURN(std::string scope, UserScope(user));
  return IssueScoped(device, Role::kClient, valid_seconds, scope);
}

Result<std::string> UserOf(const CertificateInfo& info) {
  if (info.role != Role::kClient) {
    return Status::PermissionDenied("certificate \"" + info.common_name + "\" is not a client's (role \"" +
                                    info.role_name + "\"), so it belongs to no user");
  }
  return ParseUserScope(info.scope, info.common_name);
}

Result<TlsCredentials> CertificateAuthority::IssueCapability(const Capability& cap, int64_t valid_seconds) const {
  SLINGSHOT_RETURN_IF_ERROR(cap.Check());
  return IssueScoped(cap.client, Role::kSurrogate, valid_seconds, cap.Scope());
}

Result<Capability> CapabilityOf(const CertificateInfo& info) {
  if (info.role != Role::kSurrogate) {
    return Status::PermissionDenied("the certificate offered as a capability is not one (role \"" + info.role_name +
                                    "\")");
  }
  SLINGSHOT_ASSIGN_OR_RETURN(Capability cap, Capability::ParseScope(info.scope));
  cap.not_after = info.not_after;
  cap.fingerprint = info.fingerprint;
  return cap;
}

Result<Capability> VerifyCapability(const std::string& cert_pem, const std::string& ca_pem) {
  SLINGSHOT_RETURN_IF_ERROR(VerifyCertificate(cert_pem, ca_pem, "the capability"));
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(cert_pem));
  return CapabilityOf(info);
}

Result<TlsCredentials> CertificateAuthority::IssueScoped(const std::string& common_name, Role role,
                                                         int64_t valid_seconds, const std::string& scope) const {
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr ca, ParseCert(cert_pem_, "CA certificate"));
  SLINGSHOT_ASSIGN_OR_RETURN(PkeyPtr ca_key, ParseKey(key_pem_, "CA key"));
  SLINGSHOT_ASSIGN_OR_RETURN(PkeyPtr key, NewKey());
  SLINGSHOT_ASSIGN_OR_RETURN(X509Ptr x, MakeCert(key.get(), common_name, role, valid_seconds, ca.get(), ca_key.get(),
                                                 false, scope));
  TlsCredentials c;
  c.ca_pem = cert_pem_;
  SLINGSHOT_ASSIGN_OR_RETURN(c.cert_pem, CertPem(x.get()));
  SLINGSHOT_ASSIGN_OR_RETURN(c.key_pem, KeyPem(key.get()));
  return c;
}

}  // namespace slingshot
