#include "slingshot/service/service_adapter.h"

#include <algorithm>
#include <map>

#include "slingshot/base/mutex.h"

namespace slingshot {
namespace {

struct Registry {
  Mutex mu;
  std::map<std::string, ServiceType> types GUARDED_BY(mu);
};

Registry& TheRegistry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    ServiceType rfb = RfbServiceType();
    MutexLock l(&reg->mu);
    reg->types.emplace(rfb.name, std::move(rfb));
    return reg;
  }();
  return *r;
}

Result<ServiceType> Find(const std::string& name) {
  Registry& r = TheRegistry();
  MutexLock l(&r.mu);
  auto it = r.types.find(name);
  if (it == r.types.end()) {
    std::string known;
    for (const auto& [n, t] : r.types) known += (known.empty() ? "" : ", ") + n;
    return Status::Unsupported("service type \"" + name + "\" has no adapter in this build (known: " + known + ")");
  }
  return it->second;
}

}  // namespace

Status RegisterServiceType(ServiceType type) {
  if (type.name.empty() || !type.open || !type.check_input) {
    return Status::InvalidArgument("a service type needs a name, an open and a check_input function");
  }
  Registry& r = TheRegistry();
  MutexLock l(&r.mu);
  std::string name = type.name;
  if (!r.types.emplace(name, std::move(type)).second) {
    return Status::AlreadyExists("service type \"" + name + "\" is already registered");
  }
  return Status::OK();
}

std::vector<std::string> ServiceTypeNames() {
  Registry& r = TheRegistry();
  MutexLock l(&r.mu);
  std::vector<std::string> names;
  for (const auto& [n, t] : r.types) names.push_back(n);
  return names;
}

bool IsServiceType(const std::string& name) { return Find(name).ok(); }

Result<std::unique_ptr<ServiceAdapter>> ServiceAdapter::Open(const std::string& type, const Endpoint& ep,
                                                             uint64_t consumed_seq, ServiceCallbacks callbacks,
                                                             int timeout_ms) {
  SLINGSHOT_ASSIGN_OR_RETURN(ServiceType t, Find(type));
  return t.open(ep, consumed_seq, std::move(callbacks), timeout_ms);
}

Status ServiceAdapter::CheckInput(const std::string& type, uint16_t input_type, ByteView payload) {
  SLINGSHOT_ASSIGN_OR_RETURN(ServiceType t, Find(type));
  return t.check_input(input_type, payload);
}

}  // namespace slingshot
