#include "control.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace slingshot::control {
namespace {
using json = nlohmann::json;

Status Refuse(const std::string& what, std::string_view line) {
  return Status::InvalidArgument("control socket: " + what + " (in " +
                                 std::string(line.substr(0, std::min<size_t>(line.size(), 200))) + ")");
}

Result<json> Parse(std::string_view line) {
  if (line.size() > kMaxLine) return Refuse("a line of " + std::to_string(line.size()) + " bytes is too long", "");
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.size() != 1) return Refuse("not one JSON object with one key", line);
  return j;
}

// Typed field access that refuses what is missing or of the wrong type.
template <typename T>
Status Get(const json& o, const char* key, T* out, std::string_view line) {
  auto it = o.find(key);
  if (it == o.end()) return Refuse(std::string("no \"") + key + "\"", line);
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return Refuse(std::string("\"") + key + "\" is not a string", line);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return Refuse(std::string("\"") + key + "\" is not true or false", line);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) return Refuse(std::string("\"") + key + "\" is not a number", line);
  } else if constexpr (std::is_unsigned_v<T>) {
    if (!it->is_number_unsigned()) return Refuse(std::string("\"") + key + "\" is not a count", line);
    if (it->get<uint64_t>() > std::numeric_limits<T>::max()) return Refuse(std::string("\"") + key + "\" is too big", line);
  } else {
    if (!it->is_number_integer()) return Refuse(std::string("\"") + key + "\" is not a whole number", line);
  }
  *out = it->get<T>();
  return Status::OK();
}

}  // namespace

std::string Encode(const Request& r) {
  json j;
  if (std::holds_alternative<StatusRequest>(r)) {
    j["status"] = json::object();
  } else if (auto* u = std::get_if<UseRequest>(&r)) {
    j["use"] = {{"host", u->host}, {"port", u->port}, {"fingerprint", u->fingerprint}, {"stick", u->stick}};
  } else if (auto* l = std::get_if<LeaveRequest>(&r)) {
    j["leave"] = {{"replica", l->replica}};
  }
  return j.dump();
}

Result<Request> DecodeRequest(std::string_view line) {
  SLINGSHOT_ASSIGN_OR_RETURN(json j, Parse(line));
  const std::string key = j.begin().key();
  const json& body = j.begin().value();
  if (!body.is_object()) return Refuse("\"" + key + "\" is not an object", line);
  if (key == "status") return Request(StatusRequest{});
  if (key == "use") {
    UseRequest u;
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "host", &u.host, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "port", &u.port, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "fingerprint", &u.fingerprint, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "stick", &u.stick, line));
    if (u.host.empty() || u.port == 0) return Refuse("use needs a host and a port", line);
    return Request(u);
  }
  if (key == "leave") {
    LeaveRequest l;
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "replica", &l.replica, line));
    return Request(l);
  }
  return Refuse("unknown request \"" + key + "\" (status, use, leave)", line);
}

std::string Encode(const Event& e) {
  json j;
  if (auto* n = std::get_if<Note>(&e)) {
    j["note"] = n->text;
  } else if (auto* p = std::get_if<Progress>(&e)) {
    j["progress"] = {{"phase", p->phase},           {"done", p->done},           {"total", p->total},
                     {"from_cache", p->from_cache}, {"from_stick", p->from_stick}, {"from_home", p->from_home},
                     {"elapsed_ms", p->elapsed_ms}};
  } else if (auto* r = std::get_if<Ready>(&e)) {
    j["ready"] = {{"replica", r->replica}, {"from_seq", r->from_seq}, {"elapsed_ms", r->elapsed_ms}};
  } else if (auto* s = std::get_if<ProxyStatus>(&e)) {
    json reps = json::array();
    for (const auto& v : s->replicas) {
      reps.push_back({{"name", v.name}, {"consumed", v.consumed}, {"live", v.live}, {"leader", v.leader},
                      {"latency_ms", v.latency_ms}});
    }
    j["status"] = {{"service", s->service},   {"last_seq", s->last_seq}, {"truncated_seq", s->truncated_seq},
                   {"vnc_port", s->vnc_port}, {"switches", s->switches}, {"replicas", reps},
                   {"stopped", s->stopped}, {"refusing", s->refusing}};
  } else if (auto* d = std::get_if<Done>(&e)) {
    if (d->status.ok()) j["ok"] = true;
    else j["error"] = {{"code", static_cast<int>(d->status.code())}, {"message", d->status.message()}};
  }
  return j.dump();
}

Result<Event> DecodeEvent(std::string_view line) {
  SLINGSHOT_ASSIGN_OR_RETURN(json j, Parse(line));
  const std::string key = j.begin().key();
  const json& body = j.begin().value();
  if (key == "note") {
    if (!body.is_string()) return Refuse("a note is text", line);
    return Event(Note{body.get<std::string>()});
  }
  if (key == "ok") return Event(Done{Status::OK()});
  if (!body.is_object()) return Refuse("\"" + key + "\" is not an object", line);
  if (key == "progress") {
    Progress p;
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "phase", &p.phase, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "done", &p.done, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "total", &p.total, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "from_cache", &p.from_cache, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "from_stick", &p.from_stick, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "from_home", &p.from_home, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "elapsed_ms", &p.elapsed_ms, line));
    return Event(p);
  }
  if (key == "ready") {
    Ready r;
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "replica", &r.replica, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "from_seq", &r.from_seq, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "elapsed_ms", &r.elapsed_ms, line));
    return Event(r);
  }
  if (key == "status") {
    ProxyStatus s;
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "service", &s.service, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "last_seq", &s.last_seq, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "truncated_seq", &s.truncated_seq, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "vnc_port", &s.vnc_port, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "switches", &s.switches, line));
    if (body.contains("stopped")) SLINGSHOT_RETURN_IF_ERROR(Get(body, "stopped", &s.stopped, line));
    if (body.contains("refusing")) SLINGSHOT_RETURN_IF_ERROR(Get(body, "refusing", &s.refusing, line));
    auto reps = body.find("replicas");
    if (reps == body.end() || !reps->is_array()) return Refuse("a status lists its replicas", line);
    for (const auto& r : *reps) {
      if (!r.is_object()) return Refuse("a replica is an object", line);
      ReplicaView v;
      SLINGSHOT_RETURN_IF_ERROR(Get(r, "name", &v.name, line));
      SLINGSHOT_RETURN_IF_ERROR(Get(r, "consumed", &v.consumed, line));
      SLINGSHOT_RETURN_IF_ERROR(Get(r, "live", &v.live, line));
      SLINGSHOT_RETURN_IF_ERROR(Get(r, "leader", &v.leader, line));
      SLINGSHOT_RETURN_IF_ERROR(Get(r, "latency_ms", &v.latency_ms, line));
      s.replicas.push_back(std::move(v));
    }
    return Event(s);
  }
  if (key == "error") {
    int code = 0;
    std::string message;
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "code", &code, line));
    SLINGSHOT_RETURN_IF_ERROR(Get(body, "message", &message, line));
    if (code <= 0 || code > static_cast<int>(Status::Code::kUnavailable)) code = static_cast<int>(Status::Code::kIOError);
    return Event(Done{Status::FromCode(static_cast<Status::Code>(code), message)});
  }
  return Refuse("unknown answer \"" + key + "\"", line);
}

std::vector<std::string> StatusLines(const ProxyStatus& s) {
  std::vector<std::string> out;
  out.push_back("service " + s.service + " vnc 127.0.0.1:" + std::to_string(s.vnc_port) + " log " +
                std::to_string(s.truncated_seq + 1) + ".." + std::to_string(s.last_seq) + " switches " +
                std::to_string(s.switches));
  if (!s.stopped.empty()) out.push_back("STOPPED, taking no input: " + s.stopped);
  if (!s.refusing.empty()) out.push_back("REFUSING INPUT, nothing typed now is kept: " + s.refusing);
  for (const auto& r : s.replicas) {
    char lat[32];
    std::snprintf(lat, sizeof(lat), "%.1f", r.latency_ms);
    out.push_back("replica " + r.name + " consumed " + std::to_string(r.consumed) + (r.live ? " live" : " replaying") +
                  (r.leader ? " leader" : "") + " latency_ms " + lat);
  }
  return out;
}

}  // namespace slingshot::control
