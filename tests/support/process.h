// Child processes for end-to-end tests and benchmarks: a daemon started
// (optionally in a network namespace) with its output in a log file, killed
// with the test (PR_SET_PDEATHSIG) and waited for on destruction.
#ifndef SLINGSHOT_TESTS_SUPPORT_PROCESS_H_
#define SLINGSHOT_TESTS_SUPPORT_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <netinet/in.h>

#include <string>
#include <vector>

namespace slingshot::testing {

class Process {
 public:
  // Runs argv (through `ip netns exec NETNS` if netns is not empty), stdout
  // and stderr into log (replaced).
  Process(std::vector<std::string> argv, std::string log, const std::string& netns = "");
  ~Process();  // SIGKILL
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Sends sig and waits for the process to end. Idempotent.
  void Kill(int sig);
  pid_t pid() const { return pid_; }
  std::string Output() const;
  // Whether text appears in the output within timeout.
  bool WaitFor(const std::string& text, std::chrono::milliseconds timeout) const;

 private:
  pid_t pid_ = -1;
  std::string log_;
};

// Runs a shell command; its output (stdout and stderr). rc gets the exit code.
std::string Shell(const std::string& command, int* rc = nullptr);

// A socket of type (SOCK_STREAM, SOCK_DGRAM) made inside the network
// namespace ns (/run/netns/ns); sockets stay in the namespace they were made
// in, whichever thread uses them later. -1 if it cannot be made.
int SocketInNamespace(const std::string& ns, int type);
// An IPv4 socket address.
sockaddr_in Ipv4(const char* ip, uint16_t port);

}  // namespace slingshot::testing

#endif  // SLINGSHOT_TESTS_SUPPORT_PROCESS_H_
