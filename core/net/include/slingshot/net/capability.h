// Roles and capabilities (DESIGN.md §6).
//
// Every certificate the home's CA issues names a Role (its subject's OU).
// A Capability is the right of one paired client's surrogate to fetch one
// service's checkpoint until an expiry: a short-lived certificate of role
// surrogate whose subject description says, exactly,
//   service=SERVICE;client=CLIENT
// (both 1..64 bytes, no control characters, ';' or '='; service first). The home
// issues it (CertificateAuthority::IssueCapability), the agent checks it
// against the instantiate it came with, and the home serves its holder only
// what that service's manifest reaches.
//
// A client certificate belongs to a user: its subject description says
//   user=USER
// (same rules as the names above). Every device a user pairs is issued a
// certificate of its own (its CN names the device) with the same user, and
// a service belongs to one user. A client certificate without a
// description is its own user, named by its CN.
#ifndef SLINGSHOT_NET_CAPABILITY_H_
#define SLINGSHOT_NET_CAPABILITY_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "slingshot/base/status.h"

namespace slingshot {

enum class Role : uint8_t {
  kUnknown = 0,  // a certificate whose OU is none of these
  kHome,
  kClient,
  kSurrogate,  // a capability's holder
  kAgent,      // a surrogate agent's own (self-issued) identity
  kPairing,    // a client's self-signed identity while it pairs
  kCa,         // the home's certificate authority itself
};
// "home", "client", "surrogate", "agent", "pairing", "ca"; "unknown".
const char* RoleName(Role role);
// kUnknown for anything that is not exactly one of the names.
Role ParseRole(std::string_view name);

struct Capability {
  std::string service;
  std::string client;
  int64_t not_after = 0;    // unix seconds (from the certificate)
  std::string fingerprint;  // the certificate's (InspectCertificate)

  // The subject description: "service=S;client=C".
  std::string Scope() const;
  // Parses a description. PermissionDenied, saying what is wrong, for
  // anything but the exact form above.
  static Result<Capability> ParseScope(std::string_view scope);
  // InvalidArgument unless both names are well formed.
  Status Check() const;
};

// "user=USER"; InvalidArgument unless user is a well-formed name.
Result<std::string> UserScope(std::string_view user);
// The user a client certificate's description names (device: its CN, the
// user when the description is empty). PermissionDenied for anything else.
Result<std::string> ParseUserScope(std::string_view scope, std::string_view device);

}  // namespace slingshot

#endif  // SLINGSHOT_NET_CAPABILITY_H_
