// slingshot-client: the user's side. This build inspects the durable event
// log that the proxy keeps of every input since the last checkpoint, and
// fills the user's portable storage (a stick) with the chunks of their
// services' latest state.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unordered_set>

#include "slingshot/chunk_service.h"
#include "slingshot/cli.h"
#include "slingshot/coding.h"
#include "slingshot/disk_table.h"
#include "slingshot/event_log.h"
#include "slingshot/manifest.h"
#include "slingshot/memory_image.h"
#include "slingshot/portable.h"
#include "slingshot/working_set.h"

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
      if (!m.disk_table.IsNull()) SLINGSHOT_RETURN_IF_ERROR(CollectChunks(home, m.disk_table, ObjectKind::kDiskTable, out));
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
                    "event log directory");
  };
  p.commands = {
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
