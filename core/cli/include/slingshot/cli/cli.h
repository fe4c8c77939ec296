// The command-line front end shared by slingshot-home, slingshot-agent and
// slingshot-client: command words ("store init"), options from the command
// line and from an INI config file (Boost.Program_options), --help,
// --version, and one error convention.
//
// Precedence: command line, then the config file, then defaults. The config
// file is --config FILE, else the program's default path if it exists.
// Exit codes: 0 success, 1 the command failed, 2 usage error.
#ifndef SLINGSHOT_CLI_CLI_H_
#define SLINGSHOT_CLI_CLI_H_

#include <boost/program_options.hpp>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "slingshot/base/status.h"

namespace slingshot::cli {

namespace po = boost::program_options;
using Options = po::options_description;
using Positional = po::positional_options_description;
// For commands that take no options of their own.
inline void NoOptions(Options&, Positional&) {}

struct Command {
  std::string words;    // e.g. "store init"
  std::string summary;  // one line for the command list
  std::string usage;    // e.g. "IMAGE --name NAME"
  // Adds this command's options; positional names go into pos.
  std::function<void(po::options_description&, po::positional_options_description&)> options;
  // Runs the command; its Status is printed on failure.
  std::function<Status(const po::variables_map&)> run;
};

struct Program {
  std::string name;                 // "slingshot-home"
  std::string description;          // one paragraph
  std::string default_config;       // "/etc/slingshot/home.conf"
  // Options every command takes (and the config file may set).
  std::function<void(po::options_description&)> global_options;
  std::vector<Command> commands;
};

int Main(const Program& program, int argc, char** argv);

// Splits "HOST:PORT" or "[V6]:PORT" (the port is required; 0 means "pick a
// free one" where a program listens).
Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& s);

// For daemons: BlockStopSignals() before any thread starts (threads inherit
// the mask), then WaitForStopSignal() returns the SIGINT or SIGTERM that came.
void BlockStopSignals();
int WaitForStopSignal();

// Prints "key  value" lines aligned, for figures.
void PrintFigure(const std::string& key, const std::string& value);

}  // namespace slingshot::cli

#endif  // SLINGSHOT_CLI_CLI_H_
