// Endpoint: where a TCP service is reached (a host name or address, and a
// port). The hypervisor reports one per guest service port; transports and
// adapters connect to one.
#ifndef SLINGSHOT_BASE_ENDPOINT_H_
#define SLINGSHOT_BASE_ENDPOINT_H_

#include <cstdint>
#include <string>

namespace slingshot {

struct Endpoint {
  std::string host;
  uint16_t port = 0;

  std::string ToString() const { return host + ":" + std::to_string(port); }
  bool operator==(const Endpoint&) const = default;
};

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_ENDPOINT_H_
