#include "slingshot/net/capability.h"

#include <array>
#include <utility>

namespace slingshot {
namespace {

constexpr std::array<std::pair<Role, const char*>, 6> kRoles = {{
    {Role::kHome, "home"},
    {Role::kClient, "client"},
    {Role::kSurrogate, "surrogate"},
    {Role::kAgent, "agent"},
    {Role::kPairing, "pairing"},
    {Role::kCa, "ca"},
}};

bool GoodName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f || c == ';' || c == '=') return false;
  }
  return true;
}

}  // namespace

const char* RoleName(Role role) {
  for (const auto& [r, n] : kRoles) {
    if (r == role) return n;
  }
  return "unknown";
}

Role ParseRole(std::string_view name) {
  for (const auto& [r, n] : kRoles) {
    if (name == n) return r;
  }
  return Role::kUnknown;
}

std::string Capability::Scope() const { return "service=" + service + ";client=" + client; }

Status Capability::Check() const {
  if (!GoodName(service)) return Status::InvalidArgument("capability service \"" + service + "\" is not a service name");
  if (!GoodName(client)) return Status::InvalidArgument("capability client \"" + client + "\" is not a client name");
  return Status::OK();
}

Result<Capability> Capability::ParseScope(std::string_view scope) {
  auto refuse = [&](const std::string& why) {
    return Status::PermissionDenied("the certificate's scope \"" + std::string(scope.substr(0, 100)) +
                                    "\" is not a capability: " + why);
  };
  constexpr std::string_view kService = "service=", kClient = ";client=";
  if (scope.substr(0, kService.size()) != kService) return refuse("it must start with service=");
  size_t sep = scope.find(kClient);
  if (sep == std::string_view::npos) return refuse("it names no client");
  Capability c;
  c.service = std::string(scope.substr(kService.size(), sep - kService.size()));
  c.client = std::string(scope.substr(sep + kClient.size()));
  Status st = c.Check();
  if (!st.ok()) return refuse(st.message());
  return c;
}

Result<std::string> UserScope(std::string_view user) {
  if (!GoodName(user)) {
    return Status::InvalidArgument("user name \"" + std::string(user.substr(0, 100)) +
                                   "\" must be 1 to 64 characters without control characters, ';' or '='");
  }
  return "user=" + std::string(user);
}

Result<std::string> ParseUserScope(std::string_view scope, std::string_view device) {
  if (scope.empty()) return std::string(device);
  constexpr std::string_view kUser = "user=";
  std::string_view user = scope.substr(0, kUser.size()) == kUser ? scope.substr(kUser.size()) : std::string_view();
  if (!GoodName(user)) {
    return Status::PermissionDenied("the client certificate's description \"" + std::string(scope.substr(0, 100)) +
                                    "\" does not name a user (user=NAME)");
  }
  return std::string(user);
}

}  // namespace slingshot
