#include "process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "slingshot/base/file_util.h"

namespace slingshot::testing {

Process::Process(std::vector<std::string> argv, std::string log, const std::string& netns) : log_(std::move(log)) {
  if (!netns.empty()) argv.insert(argv.begin(), {"ip", "netns", "exec", netns});
  ::unlink(log_.c_str());  // WaitFor must never see a previous run's words
  pid_ = fork();
  if (pid_ == 0) {
    setsid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
}

Process::~Process() { Kill(SIGKILL); }

void Process::Kill(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  int st;
  waitpid(pid_, &st, 0);
  pid_ = -1;
}

std::string Process::Output() const {
  auto b = ReadFileBounded(log_, 64 << 20);
  return b.ok() ? std::string(b->begin(), b->end()) : "";
}

bool Process::WaitFor(const std::string& text, std::chrono::milliseconds timeout) const {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (Output().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string Shell(const std::string& command, int* rc) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) {
    if (rc) *rc = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  if (rc) *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

int SocketInNamespace(const std::string& ns, int type) {
  int fd = -1;
  std::thread([&] {
    int nsfd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) {
      if (nsfd >= 0) ::close(nsfd);
      return;
    }
    ::close(nsfd);
    fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  }).join();
  return fd;
}

sockaddr_in Ipv4(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

}  // namespace slingshot::testing
