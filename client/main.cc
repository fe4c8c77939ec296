// slingshot-client: the user's side. `proxy` is the VNC endpoint in front
// of every replica (proxy.h); `pair`, `discover`, `use`, `status` and
// `leave` drive it; `log` inspects the durable event log of every input
// since the last checkpoint; `portable` fills the user's stick with the
// chunks of their services' latest state.
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <chrono>
#include <cstdio>
#include <unordered_set>

#include "slingshot/net/chunk_service.h"
#include "slingshot/cli/cli.h"
#include "slingshot/base/coding.h"
#include "slingshot/net/discovery.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/event_log.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/net/pairing.h"
#include "slingshot/store/portable.h"
#include "slingshot/net/transport.h"
#include "slingshot/store/working_set.h"
#include "proxy.h"

namespace slingshot {
namespace {

Result<std::unique_ptr<EventLog>> OpenLog(const cli::po::variables_map& vm) {
  EventLogOptions o;
  o.create_if_missing = false;
  return EventLog::Open(vm["log"].as<std::string>(), o);
}

Status LogStats(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto log, OpenLog(vm));
  const LogRecovery& r = log->recovery();
  uint64_t bytes = 0;
  SLINGSHOT_RETURN_IF_ERROR(log->ReadFrom(0, [&](const LogRecord& rec) {
    bytes += rec.payload.size();
    return true;
  }));
  std::printf("event log %s\n", vm["log"].as<std::string>().c_str());
  cli::PrintFigure("records", std::to_string(r.records));
  cli::PrintFigure("seqs", r.records ? std::to_string(r.first_seq) + ".." + std::to_string(r.last_seq) : "-");
  cli::PrintFigure("payload bytes", HumanBytes(bytes));
  cli::PrintFigure("segments", std::to_string(r.segments));
  cli::PrintFigure("truncated up to", std::to_string(r.truncated_seq));
  if (r.torn_bytes) cli::PrintFigure("torn tail cut", HumanBytes(r.torn_bytes) + " (" + r.torn_reason + ")");
  return Status::OK();
}

Status LogShow(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto log, OpenLog(vm));
  uint64_t limit = vm["limit"].as<uint64_t>(), shown = 0;
  return log->ReadFrom(vm["from"].as<uint64_t>(), [&](const LogRecord& rec) {
    std::printf("%llu\t%lld.%09lld\ttype=%u\t%zu bytes\n", static_cast<unsigned long long>(rec.seq),
                static_cast<long long>(rec.time_ns / 1000000000), static_cast<long long>(rec.time_ns % 1000000000),
                rec.type, rec.payload.size());
    return ++shown < limit;
  });
}

// --- portable storage ---

using IdSet = std::unordered_set<ChunkId, ChunkIdHash>;

// Adds the chunks the object reaches (fetched from home, unverified until
// hashed: HomeSource::GetObject checks each against its id).
Status CollectChunks(HomeSource* home, const ChunkId& object, ObjectKind kind, IdSet* out) {
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, home->GetObject(object));
  switch (kind) {
    case ObjectKind::kDiskTable: {
      SLINGSHOT_ASSIGN_OR_RETURN(DiskTable t, DiskTable::Decode(b));
      for (const auto& id : t.ids) {
        if (!id.IsNull()) out->insert(id);
      }
      return Status::OK();
    }
    case ObjectKind::kChunkList: {
      SLINGSHOT_ASSIGN_OR_RETURN(ChunkList l, ChunkList::Decode(b));
      for (const auto& e : l.entries) out->insert(e.id);
      return Status::OK();
    }
    case ObjectKind::kManifest: {
      SLINGSHOT_ASSIGN_OR_RETURN(Manifest m, DecodeSignedManifestUnverified(b));
      for (const ChunkId* table : {&m.disk_table, &m.ram_table}) {
        if (!table->IsNull()) SLINGSHOT_RETURN_IF_ERROR(CollectChunks(home, *table, ObjectKind::kDiskTable, out));
      }
      for (const ChunkId* list : {&m.memory_list, &m.kernel, &m.initrd}) {
        if (!list->IsNull()) SLINGSHOT_RETURN_IF_ERROR(CollectChunks(home, *list, ObjectKind::kChunkList, out));
      }
      return Status::OK();
    }
    case ObjectKind::kWorkingSet: {
      SLINGSHOT_ASSIGN_OR_RETURN(WorkingSetRecord ws, WorkingSetRecord::Decode(b));
      out->insert(ws.ids.begin(), ws.ids.end());
      return Status::OK();
    }
  }
  return Status::Corruption("unknown object kind");
}

Status PortableSync(const cli::po::variables_map& vm) {
  const std::string dir = vm["dir"].as<std::string>();
  if (!vm.count("ref")) return Status::InvalidArgument("name at least one --ref (e.g. disk/notepad) to put on the stick");
  SLINGSHOT_ASSIGN_OR_RETURN(auto addr, cli::ParseHostPort(vm["home"].as<std::string>()));
  SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials creds, TlsCredentials::Load(vm["credentials"].as<std::string>()));
  auto start = std::chrono::steady_clock::now();
  SLINGSHOT_ASSIGN_OR_RETURN(auto home, HomeSource::Open(addr.first, addr.second, creds));
  IdSet want;
  for (const auto& name : vm["ref"].as<std::vector<std::string>>()) {
    SLINGSHOT_ASSIGN_OR_RETURN(Ref r, home->GetRef(name));
    SLINGSHOT_RETURN_IF_ERROR(CollectChunks(home.get(), r.object, r.kind, &want).Annotate("ref " + name));
  }
  SLINGSHOT_ASSIGN_OR_RETURN(auto writer, PortableWriter::Open(dir));
  std::vector<ChunkId> missing;
  for (const auto& id : want) {
    if (!writer->Has(id)) missing.push_back(id);
  }
  std::sort(missing.begin(), missing.end());
  Status failed;
  uint64_t absent = 0;
  Status st = home->GetMany(missing, [&](const ChunkId& id, Result<Bytes>&& r) {
    if (!failed.ok()) return;
    if (!r.ok()) {
      if (r.status().IsNotFound()) {
        ++absent;
        return;
      }
      failed = r.status();
      return;
    }
    failed = writer->Add(id, *r);
  });
  if (st.ok()) st = failed;
  // Whatever was written is kept, even when the stick filled up.
  Status committed = writer->Commit(vm.count("keep-old") ? nullptr : &want);
  SLINGSHOT_RETURN_IF_ERROR(st.Annotate("sync " + dir + " (what was written before the failure is kept)"));
  SLINGSHOT_RETURN_IF_ERROR(committed);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto& ps = writer->stats();
  cli::PrintFigure("stick", dir);
  cli::PrintFigure("wanted", std::to_string(want.size()) + " chunks");
  cli::PrintFigure("added", std::to_string(ps.added) + " chunks (" + HumanBytes(ps.added_bytes) + ")");
  cli::PrintFigure("already there", std::to_string(want.size() - missing.size()) + " chunks");
  cli::PrintFigure("dropped", std::to_string(ps.dropped) + " chunks no longer wanted");
  if (absent) cli::PrintFigure("absent at home", std::to_string(absent) + " chunks");
  char t[32];
  std::snprintf(t, sizeof(t), "%.2f s", secs);
  cli::PrintFigure("time", t);
  return Status::OK();
}

Status PortableStatus(const cli::po::variables_map& vm) {
  const std::string dir = vm["dir"].as<std::string>();
  SLINGSHOT_ASSIGN_OR_RETURN(auto p, PortableSource::Open(dir));
  cli::PrintFigure("stick", dir);
  cli::PrintFigure("chunks", std::to_string(p->size()));
  return Status::OK();
}

// --- pairing, the proxy and its control socket ---

std::string StateDir(const cli::po::variables_map& vm) {
  std::string d = vm["state-dir"].as<std::string>();
  if (!d.empty()) return d;
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/slingshot";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.local/share/slingshot";
  return "/var/lib/slingshot/client";
}

Result<std::string> ReadLine(const std::string& path) {
  SLINGSHOT_ASSIGN_OR_RETURN(Bytes b, ReadFileBounded(path, 4096));
  std::string s(b.begin(), b.end());
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Replaces this client's pairing with (creds, key, address).
Status SavePairing(const std::string& to, const TlsCredentials& creds, const PublicKey& key,
                   const std::string& address) {
  SLINGSHOT_ASSIGN_OR_RETURN(CertificateInfo info, InspectCertificate(creds.cert_pem));
  if (info.role != Role::kClient) return Status::InvalidArgument("these are " + info.role_name + " credentials, not a client's");
  // Written beside the old pairing, then swapped in: a failure leaves the old one.
  const std::string next = to + ".new";
  std::error_code ec;
  std::filesystem::remove_all(next, ec);
  SLINGSHOT_RETURN_IF_ERROR(creds.Save(next));
  SLINGSHOT_RETURN_IF_ERROR(key.Save(next + "/manifest-key.pub"));
  SLINGSHOT_RETURN_IF_ERROR(WriteFileAtomic(next + "/home-address", AsBytes(address + "\n")));
  std::filesystem::remove_all(to, ec);
  std::filesystem::rename(next, to, ec);
  if (ec) return Status::IOError("move " + next + " to " + to + ": " + ec.message());
  std::printf("paired as \"%s\" with the home at %s (manifest key %s); saved in %s\n", info.common_name.c_str(),
              address.c_str(), key.Fingerprint().c_str(), to.c_str());
  return Status::OK();
}

Status PairCmd(const cli::po::variables_map& vm) {
  const std::string home = vm["home"].as<std::string>();
  const std::string to = StateDir(vm) + "/pairing";
  if (std::filesystem::is_directory(home)) {  // the folder slingshot-home pair --out wrote
    SLINGSHOT_ASSIGN_OR_RETURN(TlsCredentials creds, TlsCredentials::Load(home));
    SLINGSHOT_ASSIGN_OR_RETURN(PublicKey key, PublicKey::Load(home + "/manifest-key.pub"));
    SLINGSHOT_ASSIGN_OR_RETURN(std::string address, ReadLine(home + "/home-address"));
    SLINGSHOT_RETURN_IF_ERROR(cli::ParseHostPort(address).status());
    return SavePairing(to, creds, key, address);
  }
  if (!vm.count("code")) {
    return Status::InvalidArgument("pairing with " + home + " over the network needs --code (slingshot-home pair "
                                   "prints it); or give the folder slingshot-home pair --out wrote");
  }
  SLINGSHOT_ASSIGN_OR_RETURN(PairingCode code, PairingCode::Parse(vm["code"].as<std::string>()));
  SLINGSHOT_ASSIGN_OR_RETURN(auto hp, cli::ParseHostPort(home.find(':') == std::string::npos ? home + ":7392" : home));
  std::string device = vm["device"].as<std::string>();
  if (device.empty()) {
    char host[256] = {};
    device = ::gethostname(host, sizeof(host) - 1) == 0 && host[0] ? host : "client";
  }
  auto p = PairWithHome(hp.first, hp.second, code, device);
  if (!p.ok()) return p.status().Annotate("pairing with " + home);
  SLINGSHOT_RETURN_IF_ERROR(cli::ParseHostPort(p->home_address).status().Annotate("the home's address"));
  return SavePairing(to, p->creds, p->manifest_key, p->home_address);
}

Status ProxyCmd(const cli::po::variables_map& vm) {
  const std::string state = StateDir(vm);
  const std::string pairing = state + "/pairing";
  ProxyOptions o;
  o.service = vm["service"].as<std::string>();
  auto creds = TlsCredentials::Load(pairing);
  if (!creds.ok()) return creds.status().Annotate("not paired with a home (run slingshot-client pair HOME --code CODE)");
  o.creds = *creds;
  SLINGSHOT_ASSIGN_OR_RETURN(o.manifest_key, PublicKey::Load(pairing + "/manifest-key.pub"));
  std::string address = vm.count("home") ? vm["home"].as<std::string>() : "";
  if (address.empty()) {
    SLINGSHOT_ASSIGN_OR_RETURN(address, ReadLine(pairing + "/home-address"));
  }
  SLINGSHOT_ASSIGN_OR_RETURN(auto home, cli::ParseHostPort(address));
  o.home_host = home.first;
  o.home_port = home.second;
  SLINGSHOT_ASSIGN_OR_RETURN(auto vnc, cli::ParseHostPort(vm["listen"].as<std::string>()));
  o.vnc_host = vnc.first;
  o.vnc_port = vnc.second;
  o.log_dir = state + "/logs/" + o.service;
  o.control_socket = state + "/proxy.sock";
  o.sync_every_input = !vm.count("no-sync");
  o.take_over = vm.count("take-over") > 0;
  // The proxy is interactive: its threads (and libvncserver's, which
  // inherit this) sleep no longer than asked. With the default 50 us of
  // timer slack, libvncserver's per-update usleep(0) alone costs ~65 us.
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  cli::BlockStopSignals();
  std::printf("proxy for %s: connecting to the home at %s\n", o.service.c_str(), address.c_str());
  std::fflush(stdout);
  SLINGSHOT_ASSIGN_OR_RETURN(auto proxy, Proxy::Start(o));
  std::printf("proxy ready: point a VNC viewer at %s:%u\n", o.vnc_host.c_str(), proxy->vnc_port());
  std::fflush(stdout);
  int sig = cli::WaitForStopSignal();
  std::printf("stopping on %s\n", strsignal(sig));
  proxy->Stop();
  return Status::OK();
}

// Sends one request to the running proxy (control.h) and hands each answer
// to fn; returns the proxy's final word.
Status Control(const cli::po::variables_map& vm, const control::Request& request,
               const std::function<void(const control::Event&)>& fn) {
  const std::string path = StateDir(vm) + "/proxy.sock";
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    int err = errno;
    close(fd);
    return Status::Unavailable("no proxy answers at " + path + " (" + strerror(err) +
                               "): start it with slingshot-client proxy SERVICE");
  }
  std::string line = control::Encode(request) + "\n";
  (void)!write(fd, line.data(), line.size());
  std::string cur;
  char c;
  Status result = Status::Unavailable("the proxy closed the connection without an answer");
  while (read(fd, &c, 1) == 1) {
    if (c != '\n') {
      if (cur.size() > control::kMaxLine) {
        result = Status::Corruption("the proxy sent a line longer than " + std::to_string(control::kMaxLine) + " bytes");
        break;
      }
      cur += c;
      continue;
    }
    auto e = control::DecodeEvent(cur);
    cur.clear();
    if (!e.ok()) {
      result = e.status();
      break;
    }
    if (auto* d = std::get_if<control::Done>(&*e)) {
      result = d->status;
      break;
    }
    fn(*e);
  }
  close(fd);
  return result;
}

Status LeaveCmd(const cli::po::variables_map& vm) {
  const std::string name = vm["replica"].as<std::string>();
  SLINGSHOT_RETURN_IF_ERROR(Control(vm, control::LeaveRequest{name}, [](const control::Event&) {}));
  std::printf("left %s: its surrogate destroys the replica\n", name.c_str());
  return Status::OK();
}

Status StatusCmd(const cli::po::variables_map& vm) {
  return Control(vm, control::StatusRequest{}, [](const control::Event& e) {
    if (auto* s = std::get_if<control::ProxyStatus>(&e)) {
      for (const auto& line : control::StatusLines(*s)) std::printf("%s\n", line.c_str());
    }
  });
}

// --- surrogates: found by DNS-SD or named by address ---

struct SurrogateAddress {
  std::string host;
  uint16_t port = 0;
  std::string fingerprint;  // to pin ("" = any)
};

// HOST:PORT as given, or a name that DNS-SD finds on this network (its
// advertised fingerprint is then pinned unless --fingerprint says otherwise).
Result<SurrogateAddress> FindSurrogate(const cli::po::variables_map& vm) {
  const std::string what = vm["surrogate"].as<std::string>();
  SurrogateAddress a;
  if (vm.count("fingerprint")) a.fingerprint = vm["fingerprint"].as<std::string>();
  if (what.find(':') != std::string::npos) {
    SLINGSHOT_ASSIGN_OR_RETURN(auto hp, cli::ParseHostPort(what));
    a.host = hp.first;
    a.port = hp.second;
    return a;
  }
  SLINGSHOT_ASSIGN_OR_RETURN(auto found, Browse(kSurrogateServiceType, vm["discover-ms"].as<int>()));
  std::string names;
  for (const auto& s : found) {
    if (s.name == what) {
      a.host = s.address;
      a.port = s.port;
      if (a.fingerprint.empty() && s.txt.count("fp")) a.fingerprint = s.txt.at("fp");
      std::printf("surrogate \"%s\" found at %s (certificate %s)\n", what.c_str(), s.Endpoint().c_str(),
                  a.fingerprint.empty() ? "not pinned" : a.fingerprint.c_str());
      std::fflush(stdout);
      return a;
    }
    names += (names.empty() ? "" : ", ") + s.name;
  }
  return Status::NotFound("no surrogate called \"" + what + "\" answers DNS-SD here" +
                          (names.empty() ? std::string(" (none does)") : " (found: " + names + ")") +
                          "; give its HOST:PORT instead");
}

Status DiscoverCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(auto found, Browse(kSurrogateServiceType, vm["timeout-ms"].as<int>()));
  if (found.empty()) {
    std::printf("no surrogates found on this network (DNS-SD, %s)\n", kSurrogateServiceType);
    return Status::OK();
  }
  std::printf("%-24s %-22s %-18s %s\n", "NAME", "ADDRESS", "CERTIFICATE", "HOST");
  for (const auto& s : found) {
    std::string fp = s.txt.count("fp") ? s.txt.at("fp") : "-";
    if (s.txt.count("v") && s.txt.at("v") != std::to_string(wire::kVersion)) fp += " (speaks v" + s.txt.at("v") + ")";
    std::printf("%-24s %-22s %-18s %s\n", s.name.c_str(), s.Endpoint().c_str(), fp.c_str(), s.host.c_str());
  }
  return Status::OK();
}

Status UseCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(SurrogateAddress sa, FindSurrogate(vm));
  control::UseRequest use{sa.host, sa.port, sa.fingerprint, ""};
  if (vm.count("stick")) use.stick = std::filesystem::absolute(vm["stick"].as<std::string>()).string();
  const bool tty = isatty(STDOUT_FILENO);
  auto st = Control(vm, use, [&](const control::Event& e) {
    if (auto* n = std::get_if<control::Note>(&e)) {
      std::printf("%s%s\n", tty ? "\r\033[K" : "", n->text.c_str());
    } else if (auto* r = std::get_if<control::Ready>(&e)) {
      std::printf("%sready replica %s from seq %llu in %lld ms\n", tty ? "\r\033[K" : "", r->replica.c_str(),
                  static_cast<unsigned long long>(r->from_seq), static_cast<long long>(r->elapsed_ms));
    } else if (auto* p = std::get_if<control::Progress>(&e)) {
      int width = 30, filled = p->total ? static_cast<int>(width * std::min(p->done, p->total) / p->total) : 0;
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(static_cast<size_t>(width), '.');
      std::string left = p->done && p->total > p->done
                             ? ", ~" + std::to_string(p->elapsed_ms * static_cast<int64_t>(p->total - p->done) /
                                                          static_cast<int64_t>(p->done) / 1000 + 1) + " s left"
                             : "";
      std::printf("%s[%s] %-8s %s/%s  cache %s  stick %s  home %s%s%s", tty ? "\r\033[K" : "", bar.c_str(),
                  p->phase.c_str(), HumanBytes(p->done).c_str(), HumanBytes(p->total).c_str(),
                  HumanBytes(p->from_cache).c_str(), HumanBytes(p->from_stick).c_str(), HumanBytes(p->from_home).c_str(),
                  left.c_str(), tty ? "" : "\n");
    }
    std::fflush(stdout);
  });
  if (tty) std::printf("\n");
  return st;
}

// Asks a surrogate's agent what it runs (any client may ask).
Status AgentStatusCmd(const cli::po::variables_map& vm) {
  SLINGSHOT_ASSIGN_OR_RETURN(SurrogateAddress addr, FindSurrogate(vm));
  auto creds = TlsCredentials::Load(StateDir(vm) + "/pairing");
  if (!creds.ok()) return creds.status().Annotate("not paired with a home (run slingshot-client pair HOME --code CODE)");
  ConnectOptions o;
  o.verify_server_ca = false;
  o.server_fingerprint = addr.fingerprint;
  o.software = "slingshot-client";
  SLINGSHOT_ASSIGN_OR_RETURN(auto c, Connection::Connect(addr.host, addr.port, *creds, o));
  SLINGSHOT_RETURN_IF_ERROR(c->Send(1, wire::GetStatus{}));
  SLINGSHOT_ASSIGN_OR_RETURN(wire::Message m, c->Expect(1, wire::MessageType::kAgentStatus));
  const auto& s = std::get<wire::AgentStatus>(m);
  std::printf("surrogate %s (certificate %s)\n", s.name.c_str(), c->peer().fingerprint.c_str());
  const wire::AgentCapacity& cap = s.capacity;
  cli::PrintFigure("replicas", std::to_string(s.replicas.size()) +
                                   (cap.max_replicas ? " of " + std::to_string(cap.max_replicas) : std::string()));
  if (cap.budget_mib) {
    cli::PrintFigure("memory", std::to_string(cap.committed_mib) + " MiB of " + std::to_string(cap.budget_mib) +
                                   " MiB for replicas taken, " +
                                   std::to_string(cap.budget_mib > cap.committed_mib ? cap.budget_mib - cap.committed_mib : 0) +
                                   " MiB free; the host has " + std::to_string(cap.host_free_mib) + " MiB free");
  }
  for (const auto& r : s.replicas) {
    std::printf("  %s for %s, consumed %llu, capability until %lld\n", r.service.c_str(), r.client.c_str(),
                static_cast<unsigned long long>(r.consumed_seq), static_cast<long long>(r.expires));
  }
  cli::PrintFigure("cache", HumanBytes(s.cache_bytes));
  cli::PrintFigure("fetched from sticks", HumanBytes(s.from_stick));
  cli::PrintFigure("fetched from homes", HumanBytes(s.from_home));
  return Status::OK();
}

}  // namespace
}  // namespace slingshot

int main(int argc, char** argv) {
  using namespace slingshot;
  using cli::po::value;
  using Opts = cli::Options;
  using Pos = cli::Positional;
  cli::Program p;
  p.name = "slingshot-client";
  p.description =
      "The Slingshot client: the proxy between your VNC viewer and the replicas of\n"
      "your service, and the durable log of your inputs.";
  p.default_config = "/etc/slingshot/client.conf";
  p.global_options = [](Opts& d) {
    d.add_options()("log", value<std::string>()->default_value("/var/lib/slingshot/client/events"),
                    "event log directory (log stats, log show)")
        ("state-dir", value<std::string>()->default_value(""),
         "pairing, event logs and the proxy's socket (default $XDG_DATA_HOME/slingshot or ~/.local/share/slingshot)");
  };
  p.commands = {
      {"pair", "pair with a home: over the network with the code slingshot-home pair printed, or from its folder",
       "HOST[:PORT] --code CODE | DIR",
       [](Opts& d, Pos& pos) {
         d.add_options()("home", value<std::string>()->required(),
                         "the home's pairing listener (HOST[:PORT], port 7392 by default), or the folder "
                         "slingshot-home pair --out wrote")
             ("code", value<std::string>(), "the one-time code slingshot-home pair printed")
             ("device", value<std::string>()->default_value(""), "how this client calls itself (default: host name)");
         pos.add("home", 1);
       },
       PairCmd},
      {"proxy", "run the proxy: a VNC endpoint for your viewer in front of every replica of SERVICE", "SERVICE",
       [](Opts& d, Pos& pos) {
         d.add_options()("service", value<std::string>()->required(), "the service at home")
             ("listen", value<std::string>()->default_value("127.0.0.1:5900"), "where VNC viewers connect")
             ("home", value<std::string>(), "the home's address (default: from pairing)")
             ("no-sync", "do not fdatasync each input (a crash of the machine may lose the last ones)")
             ("take-over", "take the service over from another device of yours that holds it: that device's "
                           "proxy sends what it has and stops, and this one goes on from the home's state");
         pos.add("service", 1);
       },
       ProxyCmd},
      {"discover", "list the surrogates that advertise themselves on this network (DNS-SD)", "[--timeout-ms MS]",
       [](Opts& d, Pos&) {
         d.add_options()("timeout-ms", value<int>()->default_value(3000), "how long to listen at most");
       },
       DiscoverCmd},
      {"use", "instantiate a replica on a surrogate, with a progress bar", "NAME|HOST:PORT [--fingerprint FP] [--stick DIR]",
       [](Opts& d, Pos& pos) {
         d.add_options()("surrogate", value<std::string>()->required(),
                         "the surrogate's agent: a name slingshot-client discover lists, or HOST:PORT")
             ("discover-ms", value<int>()->default_value(3000), "how long to look for a surrogate by name")
             ("fingerprint", value<std::string>(), "refuse an agent whose certificate has another fingerprint")
             ("stick", value<std::string>(), "portable storage plugged into the surrogate (its path there)");
         pos.add("surrogate", 1);
       },
       UseCmd},
      {"agent-status", "ask a surrogate's agent what it runs: replicas, cache use, bytes by source", "NAME|HOST:PORT",
       [](Opts& d, Pos& pos) {
         d.add_options()("surrogate", value<std::string>()->required(),
                         "the surrogate's agent: a name slingshot-client discover lists, or HOST:PORT")
             ("discover-ms", value<int>()->default_value(3000), "how long to look for a surrogate by name")
             ("fingerprint", value<std::string>(), "refuse an agent whose certificate has another fingerprint");
         pos.add("surrogate", 1);
       },
       AgentStatusCmd},
      {"status", "ask the running proxy about its replicas, leader and log", "", cli::NoOptions, StatusCmd},
      {"leave", "end a surrogate replica (its agent destroys it); typing goes on with the others", "NAME",
       [](Opts& d, Pos& pos) {
         d.add_options()("replica", value<std::string>()->required(), "the replica, as status names it");
         pos.add("replica", 1);
       },
       LeaveCmd},
      {"log stats", "recover the event log and print what it holds", "", cli::NoOptions, LogStats},
      {"log show", "list records (seq, time, type, size)", "[--from SEQ] [--limit N]",
       [](Opts& d, Pos&) {
         d.add_options()("from", value<uint64_t>()->default_value(0), "first seq to show")
             ("limit", value<uint64_t>()->default_value(UINT64_MAX), "show at most N records");
       },
       LogShow},
      {"portable sync", "put the chunks of the named refs on a stick (adds what is missing, drops the rest)",
       "DIR --home HOST:PORT --credentials DIR --ref NAME...",
       [](Opts& d, Pos& pos) {
         d.add_options()("dir", value<std::string>()->required(), "the stick's directory")
             ("home", value<std::string>()->required(), "the home's chunk service, HOST:PORT")
             ("credentials", value<std::string>()->default_value("/var/lib/slingshot/client/tls"),
              "this client's TLS credentials (ca.pem, cert.pem, key.pem)")
             ("ref", value<std::vector<std::string>>(), "a ref at home whose chunks go on the stick (repeatable)")
             ("keep-old", "keep chunks no named ref needs");
         pos.add("dir", 1);
       },
       PortableSync},
      {"portable status", "say what a stick holds", "DIR",
       [](Opts& d, Pos& pos) {
         d.add_options()("dir", value<std::string>()->required(), "the stick's directory");
         pos.add("dir", 1);
       },
       PortableStatus},
  };
  return cli::Main(p, argc, argv);
}
