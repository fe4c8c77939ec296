#include "qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace slingshot {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxMessage = 16 << 20;

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& path, int timeout_ms,
                                                      const std::function<bool()>& alive) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("QMP socket path is too long for a unix socket: " + path +
                                   " (use a shorter run directory)");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  UniqueFd fd;
  for (;;) {
    fd.Reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Status::FromErrno("socket", errno);
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    int err = errno;
    if (!alive()) return Status::IOError("QEMU exited before its QMP socket came up");
    if (Clock::now() >= deadline) {
      return Status::FromErrno("connecting to QMP socket " + path + " (timed out)", err);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::unique_ptr<QmpClient> c(new QmpClient(std::move(fd)));
  SLINGSHOT_ASSIGN_OR_RETURN(nlohmann::json greeting, c->ReadMessage(RemainingMs(deadline) + 1000));
  if (!greeting.contains("QMP")) {
    return Status::IOError("QMP socket " + path + " did not greet with QMP: " + greeting.dump());
  }
  SLINGSHOT_RETURN_IF_ERROR(c->Execute("qmp_capabilities").status());
  return c;
}

Status QmpClient::Send(const std::string& line, int pass_fd) {
  iovec iov{const_cast<char*>(line.data()), line.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (pass_fd >= 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
  }
  ssize_t n = sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
  if (n < 0) return Status::FromErrno("writing to QMP", errno);
  size_t off = static_cast<size_t>(n);
  while (off < line.size()) {  // the descriptor went with the first byte
    n = send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0) return Status::FromErrno("writing to QMP", errno);
    off += static_cast<size_t>(n);
  }
  return Status::OK();
}

Result<nlohmann::json> QmpClient::ReadMessage(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        return Status::Corruption("QMP sent a line that is not a JSON object: " +
                                  line.substr(0, 200));
      }
      return j;
    }
    if (buffer_.size() > kMaxMessage) {
      return Status::Corruption("QMP message longer than 16 MiB");
    }
    pollfd p{fd_.get(), POLLIN, 0};
    int r = poll(&p, 1, RemainingMs(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return Status::IOError("QMP: no answer within " + std::to_string(timeout_ms) + " ms");
    char buf[65536];
    ssize_t n = recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("reading from QMP", errno);
    if (n == 0) return Status::IOError("QMP connection closed (QEMU exited)");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Result<nlohmann::json> QmpClient::Execute(const std::string& command,
                                          const nlohmann::json& arguments, int fd,
                                          int timeout_ms) {
  nlohmann::json req = {{"execute", command}};
  if (!arguments.empty()) req["arguments"] = arguments;
  SLINGSHOT_RETURN_IF_ERROR(Send(req.dump() + "\n", fd));
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    SLINGSHOT_ASSIGN_OR_RETURN(nlohmann::json m, ReadMessage(RemainingMs(deadline)));
    if (m.contains("event")) {
      if (events_.size() < 1000) events_.push_back(std::move(m));
      continue;
    }
    if (m.contains("return")) return m["return"];
    if (m.contains("error")) {
      const nlohmann::json& e = m["error"];
      return Status::IOError("QEMU refused " + command + ": " + e.value("class", "?") + ": " +
                             e.value("desc", "?"));
    }
    return Status::Corruption("QMP answered " + command + " with neither return nor error: " +
                              m.dump().substr(0, 200));
  }
}

std::vector<nlohmann::json> QmpClient::TakeEvents() {
  std::vector<nlohmann::json> out;
  out.swap(events_);
  return out;
}

}  // namespace slingshot
