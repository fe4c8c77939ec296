// slingshot-client: the user's side. This build inspects the durable event
// log that the proxy keeps of every input since the last checkpoint.
#include <cstdio>

#include "slingshot/cli.h"
#include "slingshot/coding.h"
#include "slingshot/event_log.h"

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
  };
  return cli::Main(p, argc, argv);
}
