#include "slingshot/net/discovery.h"

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/simple-watch.h>
#include <avahi-common/thread-watch.h>
#include <avahi-common/timeval.h>

#include <algorithm>
#include <chrono>

#include "slingshot/base/log.h"

namespace slingshot {
namespace {

constexpr unsigned kRetryMs = 3000;  // between attempts to reach the daemon

std::string AvahiError(int err) { return avahi_strerror(err); }

struct StringList {
  AvahiStringList* l = nullptr;
  ~StringList() { avahi_string_list_free(l); }
};

std::map<std::string, std::string> TxtOf(AvahiStringList* l) {
  std::map<std::string, std::string> out;
  for (; l; l = avahi_string_list_get_next(l)) {
    char* key = nullptr;
    char* value = nullptr;
    if (avahi_string_list_get_pair(l, &key, &value, nullptr) == 0 && key) out[key] = value ? value : "";
    avahi_free(key);
    avahi_free(value);
  }
  return out;
}

}  // namespace

// --- advertising ---
//
// Everything below runs on the threaded poll's thread (the callbacks), or
// with the poll stopped (Start before it starts, the destructor after it
// stops), so it needs no lock.
struct Advertiser::Impl {
  ServiceAdvert advert;
  std::string name;  // the name asked for, or the alternative after a collision
  AvahiThreadedPoll* poll = nullptr;
  AvahiClient* client = nullptr;
  AvahiEntryGroup* group = nullptr;
  AvahiTimeout* retry = nullptr;
  std::string last_logged;

  // Logs a change of state once, not at every retry.
  void SetState(const std::string& s, bool up) {
    if (s != last_logged) {
      (up ? LogInfo : LogWarning)("DNS-SD: " + s);
      last_logged = s;
    }
  }

  const AvahiPoll* api() { return avahi_threaded_poll_get(poll); }

  // (Re)connects to the daemon; on failure, tries again later.
  void Connect() {
    if (client) {
      group = nullptr;  // freed with its client
      avahi_client_free(client);
      client = nullptr;
    }
    int err = 0;
    AvahiClient* c = avahi_client_new(api(), AvahiClientFlags(0), &Impl::OnClient, this, &err);
    if (!c) {
      SetState("waiting for avahi-daemon (" + AvahiError(err) + "); not advertised yet", false);
      ScheduleRetry();
      return;
    }
    client = c;
  }

  void ScheduleRetry() {
    struct timeval tv;
    avahi_elapse_time(&tv, kRetryMs, 0);
    if (retry) {
      api()->timeout_update(retry, &tv);
    } else {
      retry = api()->timeout_new(api(), &tv, &Impl::OnRetry, this);
    }
  }

  static void OnRetry(AvahiTimeout* t, void* self) {
    auto* impl = static_cast<Impl*>(self);
    impl->api()->timeout_update(t, nullptr);  // disarm until needed again
    impl->Connect();
  }

  static void OnClient(AvahiClient* c, AvahiClientState s, void* self) {
    auto* impl = static_cast<Impl*>(self);
    switch (s) {
      case AVAHI_CLIENT_S_RUNNING:
        impl->Register(c);
        break;
      case AVAHI_CLIENT_S_COLLISION:
      case AVAHI_CLIENT_S_REGISTERING:
        // The host's own name is being (re)negotiated: withdraw until it settles.
        if (impl->group) avahi_entry_group_reset(impl->group);
        impl->SetState("avahi-daemon is renaming this host; advert withdrawn for now", false);
        break;
      case AVAHI_CLIENT_FAILURE:
        // Typically the daemon went away. The client cannot be freed from
        // its own callback: reconnect from a timer.
        impl->SetState("lost avahi-daemon (" + AvahiError(avahi_client_errno(c)) + "); retrying", false);
        impl->ScheduleRetry();
        break;
      case AVAHI_CLIENT_CONNECTING:
        break;
    }
  }

  void Register(AvahiClient* c) {
    if (!group) {
      group = avahi_entry_group_new(c, &Impl::OnGroup, this);
      if (!group) {
        SetState("cannot create an entry group: " + AvahiError(avahi_client_errno(c)), false);
        return;
      }
    }
    if (!avahi_entry_group_is_empty(group)) return;  // already added; the group callback reports
    StringList txt;
    for (const auto& [k, v] : advert.txt) txt.l = avahi_string_list_add_pair(txt.l, k.c_str(), v.c_str());
    int r = avahi_entry_group_add_service_strlst(group, AVAHI_IF_UNSPEC, AVAHI_PROTO_INET, AvahiPublishFlags(0),
                                                 name.c_str(), advert.type.c_str(), nullptr, nullptr, advert.port,
                                                 txt.l);
    if (r == AVAHI_ERR_COLLISION) return Rename(c);
    if (r < 0 || (r = avahi_entry_group_commit(group)) < 0) {
      SetState("cannot advertise " + name + ": " + AvahiError(r), false);
      return;
    }
  }

  void Rename(AvahiClient* c) {
    char* alt = avahi_alternative_service_name(name.c_str());
    LogWarning("DNS-SD: the name \"" + name + "\" is taken on this network; advertising as \"" + alt + "\"");
    name = alt;
    avahi_free(alt);
    if (group) avahi_entry_group_reset(group);
    Register(c);
  }

  static void OnGroup(AvahiEntryGroup* g, AvahiEntryGroupState s, void* self) {
    auto* impl = static_cast<Impl*>(self);
    switch (s) {
      case AVAHI_ENTRY_GROUP_ESTABLISHED:
        impl->SetState("advertised as \"" + impl->name + "\" (" + impl->advert.type + ", port " +
                           std::to_string(impl->advert.port) + ")",
                       true);
        break;
      case AVAHI_ENTRY_GROUP_COLLISION:
        impl->Rename(avahi_entry_group_get_client(g));
        break;
      case AVAHI_ENTRY_GROUP_FAILURE:
        impl->SetState("advert failed: " + AvahiError(avahi_client_errno(avahi_entry_group_get_client(g))), false);
        break;
      case AVAHI_ENTRY_GROUP_UNCOMMITED:
      case AVAHI_ENTRY_GROUP_REGISTERING:
        break;
    }
  }
};

Advertiser::Advertiser(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Advertiser::~Advertiser() {
  avahi_threaded_poll_stop(impl_->poll);  // joins the poll thread
  if (impl_->client) avahi_client_free(impl_->client);  // withdraws the advert (and frees the group)
  if (impl_->retry) impl_->api()->timeout_free(impl_->retry);
  avahi_threaded_poll_free(impl_->poll);
}

Result<std::unique_ptr<Advertiser>> Advertiser::Start(const ServiceAdvert& advert) {
  if (advert.name.empty() || advert.name.size() > 63) {
    return Status::InvalidArgument("a DNS-SD service name must be 1 to 63 bytes, not \"" + advert.name + "\"");
  }
  if (advert.port == 0) return Status::InvalidArgument("a DNS-SD advert needs the port it is for");
  for (const auto& [k, v] : advert.txt) {
    if (k.empty() || k.size() + v.size() + 1 > 255 || k.find('=') != std::string::npos) {
      return Status::InvalidArgument("DNS-SD TXT record \"" + k + "=" + v + "\" is malformed or over 255 bytes");
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->advert = advert;
  impl->name = advert.name;
  impl->poll = avahi_threaded_poll_new();
  if (!impl->poll) return Status::IOError("avahi_threaded_poll_new failed");
  impl->Connect();  // the poll is not running yet: no lock needed
  if (avahi_threaded_poll_start(impl->poll) < 0) {
    if (impl->client) avahi_client_free(impl->client);
    if (impl->retry) impl->api()->timeout_free(impl->retry);
    avahi_threaded_poll_free(impl->poll);
    return Status::IOError("cannot start the DNS-SD thread");
  }
  return std::unique_ptr<Advertiser>(new Advertiser(std::move(impl)));
}

// --- browsing ---

namespace {

struct BrowseState {
  AvahiClient* client = nullptr;
  std::map<std::string, DiscoveredService> found;  // by name
  int resolving = 0;
  bool all_for_now = false;
  Status failure;
};

void OnResolved(AvahiServiceResolver* r, AvahiIfIndex, AvahiProtocol, AvahiResolverEvent event, const char* name,
                const char*, const char*, const char* host, const AvahiAddress* a, uint16_t port,
                AvahiStringList* txt, AvahiLookupResultFlags, void* self) {
  auto* st = static_cast<BrowseState*>(self);
  if (event == AVAHI_RESOLVER_FOUND && a) {
    DiscoveredService s;
    s.name = name;
    s.host = host ? host : "";
    char addr[AVAHI_ADDRESS_STR_MAX];
    avahi_address_snprint(addr, sizeof(addr), a);
    s.address = addr;
    s.port = port;
    s.txt = TxtOf(txt);
    st->found[s.name] = std::move(s);
  } else {
    LogWarning(std::string("DNS-SD: cannot resolve \"") + name + "\": " +
               AvahiError(avahi_client_errno(avahi_service_resolver_get_client(r))));
  }
  avahi_service_resolver_free(r);
  --st->resolving;
}

void OnBrowse(AvahiServiceBrowser* b, AvahiIfIndex iface, AvahiProtocol proto, AvahiBrowserEvent event,
              const char* name, const char* type, const char* domain, AvahiLookupResultFlags, void* self) {
  auto* st = static_cast<BrowseState*>(self);
  switch (event) {
    case AVAHI_BROWSER_NEW:
      if (avahi_service_resolver_new(st->client, iface, proto, name, type, domain, AVAHI_PROTO_INET,
                                     AvahiLookupFlags(0), &OnResolved, st)) {
        ++st->resolving;
      } else {
        LogWarning(std::string("DNS-SD: cannot resolve \"") + name + "\": " +
                   AvahiError(avahi_client_errno(st->client)));
      }
      break;
    case AVAHI_BROWSER_REMOVE:
      st->found.erase(name);
      break;
    case AVAHI_BROWSER_ALL_FOR_NOW:
      st->all_for_now = true;
      break;
    case AVAHI_BROWSER_FAILURE:
      st->failure = Status::Unavailable("DNS-SD browse failed: " +
                                        AvahiError(avahi_client_errno(avahi_service_browser_get_client(b))));
      break;
    case AVAHI_BROWSER_CACHE_EXHAUSTED:
      break;
  }
}

}  // namespace

Result<std::vector<DiscoveredService>> Browse(const std::string& type, int timeout_ms) {
  std::unique_ptr<AvahiSimplePoll, void (*)(AvahiSimplePoll*)> poll(avahi_simple_poll_new(), avahi_simple_poll_free);
  if (!poll) return Status::IOError("avahi_simple_poll_new failed");
  BrowseState st;
  int err = 0;
  st.client = avahi_client_new(avahi_simple_poll_get(poll.get()), AvahiClientFlags(0), nullptr, nullptr, &err);
  if (!st.client) {
    return Status::Unavailable("cannot reach avahi-daemon for DNS-SD (" + AvahiError(err) +
                               "): start it (apt-get install avahi-daemon), or give the surrogate's address");
  }
  std::unique_ptr<AvahiClient, void (*)(AvahiClient*)> client(st.client, avahi_client_free);
  AvahiServiceBrowser* b = avahi_service_browser_new(st.client, AVAHI_IF_UNSPEC, AVAHI_PROTO_INET, type.c_str(),
                                                     nullptr, AvahiLookupFlags(0), &OnBrowse, &st);
  if (!b) return Status::Unavailable("cannot browse for " + type + ": " + AvahiError(avahi_client_errno(st.client)));
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (st.failure.ok() && !(st.all_for_now && st.resolving == 0)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    if (avahi_simple_poll_iterate(poll.get(), static_cast<int>(std::min<int64_t>(left, 100))) != 0) break;
  }
  avahi_service_browser_free(b);  // and, with the client, any resolver still running
  if (!st.failure.ok()) return st.failure;
  std::vector<DiscoveredService> out;
  for (auto& [name, s] : st.found) out.push_back(std::move(s));
  return out;
}

}  // namespace slingshot
