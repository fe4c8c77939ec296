#include "slingshot/cli/cli.h"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "slingshot/base/log.h"
#include "slingshot/base/version.h"

namespace slingshot::cli {
namespace {

void AddCommon(po::options_description& d) {
  d.add_options()
      ("help,h", "show help (for a command: its options)")
      ("version", "print the version and exit")
      ("config,c", po::value<std::string>(), "INI config file (options as key = value)")
      ("log-level", po::value<std::string>()->default_value("info"), "debug, info, warning, error");
}

void PrintCommands(const Program& p, std::ostream& os) {
  os << "Usage: " << p.name << " COMMAND [options]\n\n" << p.description << "\n\nCommands:\n";
  size_t w = 0;
  for (const auto& c : p.commands) w = std::max(w, c.words.size());
  for (const auto& c : p.commands) {
    os << "  " << c.words << std::string(w - c.words.size() + 2, ' ') << c.summary << "\n";
  }
  os << "\nRun '" << p.name << " COMMAND --help' for a command's options.\n";
}

LogLevel ParseLevel(const std::string& s) {
  if (s == "debug") return LogLevel::kDebug;
  if (s == "warning" || s == "warn") return LogLevel::kWarning;
  if (s == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

// Whether any command of p (or the options every command takes) has an
// option called name.
bool AnyCommandKnows(const Program& p, const std::string& name) {
  po::options_description every;
  AddCommon(every);
  if (p.global_options) p.global_options(every);
  for (const auto& c : p.commands) {
    po::positional_options_description pos;
    po::options_description one;
    if (c.options) c.options(one, pos);
    if (one.find_nothrow(name, /*approx=*/false)) return true;
  }
  return every.find_nothrow(name, false) != nullptr;
}

}  // namespace

void PrintFigure(const std::string& key, const std::string& value) {
  std::printf("  %-22s %s\n", key.c_str(), value.c_str());
}

int Main(const Program& p, int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // The command is the longest run of leading words that names one.
  const Command* cmd = nullptr;
  size_t cmd_words = 0;
  {
    std::vector<std::string> words;
    for (const auto& a : args) {
      if (a.empty() || a[0] == '-') break;
      words.push_back(a);
    }
    for (const auto& c : p.commands) {
      std::istringstream is(c.words);
      std::vector<std::string> cw{std::istream_iterator<std::string>(is), {}};
      if (cw.size() > cmd_words && cw.size() <= words.size() && std::equal(cw.begin(), cw.end(), words.begin())) {
        cmd = &c;
        cmd_words = cw.size();
      }
    }
  }
  if (!cmd && !args.empty() && !args[0].empty() && args[0][0] != '-') {
    std::cerr << p.name << ": unknown command '" << args[0] << (args.size() > 1 && args[1][0] != '-' ? " " + args[1] : "")
              << "'\n\n";
    PrintCommands(p, std::cerr);
    return 2;
  }
  po::options_description global("Options for every command");
  AddCommon(global);
  if (p.global_options) p.global_options(global);
  po::options_description local(cmd ? "Options of '" + cmd->words + "'" : "Command options");
  po::positional_options_description pos;
  if (cmd && cmd->options) cmd->options(local, pos);
  po::options_description all;
  all.add(global).add(local);

  std::vector<std::string> rest(args.begin() + static_cast<ptrdiff_t>(cmd_words), args.end());
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(rest).options(all).positional(pos).run(), vm);
    std::string config;
    if (vm.count("config")) {
      config = vm["config"].as<std::string>();
      if (!std::filesystem::exists(config)) {
        std::cerr << p.name << ": config file " << config << " does not exist\n";
        return 2;
      }
    } else if (!p.default_config.empty() && std::filesystem::exists(p.default_config)) {
      config = p.default_config;
    }
    if (!config.empty()) {
      // One config file serves every command of a program, so it may set
      // another command's options (`listen` for run); those are skipped
      // here. A key no command knows is an error (a typo, most likely).
      po::parsed_options parsed = po::parse_config_file<char>(config.c_str(), all, /*allow_unregistered=*/true);
      for (const auto& o : parsed.options) {
        if (o.unregistered && !AnyCommandKnows(p, o.string_key)) {
          std::cerr << p.name << ": config file " << config << ": unrecognised option '" << o.string_key
                    << "'\nRun '" << p.name << " COMMAND --help' for the options.\n";
          return 2;
        }
      }
      po::store(parsed, vm);
    }
  } catch (const po::error& e) {
    std::cerr << p.name << ": " << e.what() << "\nRun '" << p.name << (cmd ? " " + cmd->words : std::string()) << " --help'.\n";
    return 2;
  }
  if (vm.count("version")) {
    std::cout << p.name << " " << SLINGSHOT_VERSION << "\n";
    return 0;
  }
  if (vm.count("help")) {
    if (cmd) {
      std::cout << "Usage: " << p.name << " " << cmd->words << " " << cmd->usage << "\n\n" << cmd->summary << "\n\n" << local << "\n" << global;
    } else {
      PrintCommands(p, std::cout);
      std::cout << "\n" << global;
    }
    return 0;
  }
  if (!cmd) {
    PrintCommands(p, std::cerr);
    return 2;
  }
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << p.name << " " << cmd->words << ": " << e.what() << "\nUsage: " << p.name << " " << cmd->words << " "
              << cmd->usage << "\n";
    return 2;
  }
  SetLogLevel(ParseLevel(vm["log-level"].as<std::string>()));
  Status st = cmd->run(vm);
  if (!st.ok()) {
    std::cerr << p.name << " " << cmd->words << ": " << st.ToString() << "\n";
    return st.code() == Status::Code::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("\"" + s + "\" is not HOST:PORT");
  char* end = nullptr;
  long port = std::strtol(s.c_str() + colon + 1, &end, 10);
  if (port < 0 || end == s.c_str() + colon + 1 || port > 65535 || *end != '\0') return Status::InvalidArgument("\"" + s + "\" has no valid port");
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return Status::InvalidArgument("\"" + s + "\" has no host");
  return std::make_pair(host, static_cast<uint16_t>(port));
}

namespace {
sigset_t StopSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockStopSignals() {
  sigset_t set = StopSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForStopSignal() {
  sigset_t set = StopSet();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace slingshot::cli
