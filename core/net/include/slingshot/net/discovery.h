// Finding surrogates on the hotspot's network: DNS-SD over multicast DNS,
// through the system's avahi-daemon (libavahi-client over D-Bus).
//
// A surrogate's agent advertises itself as a "_slingshot._tcp" service named
// after the agent, on its listening port, with TXT records
//   v=1          the wire protocol version it speaks
//   fp=HEX16     its TLS certificate's fingerprint (what `use` then pins)
// A client browses for that type and resolves each to an address and port.
// None of this is trusted: the network could lie, so a client still checks
// the agent's certificate against the advertised fingerprint, and a
// surrogate gets nothing of a user's state without a capability from home.
//
// avahi-daemon must be running (Debian: the avahi-daemon package). An
// Advertiser that finds no daemon keeps trying every few seconds and
// re-registers after the daemon restarts, logging each change of state
// once ("advertised as \"cafe #2\"" after a name collision); Browse says
// plainly that there is no daemon to ask.
#ifndef SLINGSHOT_NET_DISCOVERY_H_
#define SLINGSHOT_NET_DISCOVERY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "slingshot/base/status.h"

namespace slingshot {

constexpr char kSurrogateServiceType[] = "_slingshot._tcp";

struct ServiceAdvert {
  std::string type = kSurrogateServiceType;
  std::string name;  // 1..63 bytes (a DNS label)
  uint16_t port = 0;
  std::map<std::string, std::string> txt;
};

class Advertiser {
 public:
  // Starts advertising in the background; returns at once.
  static Result<std::unique_ptr<Advertiser>> Start(const ServiceAdvert& advert);
  ~Advertiser();  // withdraws the advert

  struct Impl;

 private:
  explicit Advertiser(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct DiscoveredService {
  std::string name;
  std::string host;     // its mDNS host name ("hotspot.local")
  std::string address;  // IPv4, dotted
  uint16_t port = 0;
  std::map<std::string, std::string> txt;
  std::string Endpoint() const { return address + ":" + std::to_string(port); }
};

// Browses the local network for services of type for up to timeout_ms:
// returns early once the daemon has nothing more to report and every found
// service is resolved. Sorted by name. Unavailable if no avahi-daemon runs.
Result<std::vector<DiscoveredService>> Browse(const std::string& type, int timeout_ms);

}  // namespace slingshot

#endif  // SLINGSHOT_NET_DISCOVERY_H_
