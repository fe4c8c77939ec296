#include "notepad_client.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <thread>

#include "slingshot/base/file_util.h"

namespace slingshot::testing {
namespace {

using Clock = std::chrono::steady_clock;

void Quiet(const char*, ...) {}

}  // namespace

std::string GuestDir() {
  // The nested suite runs the tests inside a Xen dom0, where the image sits
  // elsewhere than in the build tree.
  const char* env = getenv("SLINGSHOT_GUEST_DIR");
  return env && *env ? env : SLINGSHOT_GUEST_DIR;
}

VmSpec NotepadSpec(const std::string& name, const std::string& run_dir) {
  VmSpec s;
  s.name = name;
  s.kernel = GuestDir() + "/vmlinuz";
  s.initrd = GuestDir() + "/initrd.img";
  s.cmdline = "quiet panic=1";
  s.memory_mib = 128;
  s.vcpus = 1;
  s.service_ports = {kRfbPort, kControlPort};
  s.run_dir = run_dir;
  return s;
}

Result<std::string> Control(const Endpoint& ep, const std::string& command) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(ep.port);
  inet_pton(AF_INET, ep.host.c_str(), &a.sin_addr);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return Status::FromErrno("connecting to the notepad's control port", errno);
  }
  std::string line = command + "\n";
  if (send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    return Status::IOError("sending to the control port");
  }
  std::string out;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0 || poll(&p, 1, left) <= 0) return Status::IOError("control port: no answer");
    char buf[4096];
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) return Status::FromErrno("control port", errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  // Slirp accepts a connection before the guest does; an empty answer means
  // nothing was listening yet.
  if (out.empty()) return Status::IOError("control port closed without answering");
  return out;
}

Result<std::string> DocumentText(const Endpoint& ep) {
  SLINGSHOT_ASSIGN_OR_RETURN(std::string r, Control(ep, "text"));
  size_t nl = r.find('\n');
  if (r.rfind("text ", 0) != 0 || nl == std::string::npos) {
    return Status::Corruption("unexpected answer to text: " + r.substr(0, 80));
  }
  size_t len = std::stoul(r.substr(5, nl - 5));
  std::string text = r.substr(nl + 1);
  if (text.size() != len) return Status::Corruption("text answer is short");
  return text;
}

Status WaitForNotepad(const Endpoint& ep, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  Status last;
  while (Clock::now() < deadline) {
    auto r = Control(ep, "doc");
    if (r.ok() && r->rfind("doc ", 0) == 0) return Status::OK();
    last = r.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::IOError("notepad did not answer within " + std::to_string(timeout.count()) +
                         " ms: " + last.ToString());
}

Status WaitForText(const Endpoint& ep, const std::string& want, std::chrono::milliseconds timeout,
                   RfbSession* rfb) {
  auto deadline = Clock::now() + timeout;
  std::string seen = "(nothing)";
  while (Clock::now() < deadline) {
    auto r = DocumentText(ep);
    if (r.ok()) {
      if (*r == want) return Status::OK();
      seen = "'" + *r + "'";
    }
    if (rfb) {
      SLINGSHOT_RETURN_IF_ERROR(rfb->Pump(50));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return Status::IOError("document is " + seen + ", expected '" + want + "'");
}

Result<std::unique_ptr<RfbSession>> RfbSession::Connect(const Endpoint& ep) {
  rfbClientLog = Quiet;
  rfbClientErr = Quiet;
  rfbClient* c = rfbGetClient(8, 3, 4);
  // Ask for 0x00RRGGBB pixels: what notepad::Render draws.
  c->format.redShift = 16;
  c->format.greenShift = 8;
  c->format.blueShift = 0;
  free(c->serverHost);  // rfbGetClient's own empty string
  c->serverHost = strdup(ep.host.c_str());
  c->serverPort = ep.port;
  c->appData.encodingsString = "raw";
  if (!rfbInitClient(c, nullptr, nullptr)) {  // frees c on failure
    return Status::IOError("RFB handshake with " + ep.host + ":" + std::to_string(ep.port) +
                           " failed");
  }
  std::unique_ptr<RfbSession> s(new RfbSession(c));
  rfbClientSetClientData(c, reinterpret_cast<void*>(&OnUpdateDone), s.get());
  c->FinishedFrameBufferUpdate = OnUpdateDone;
  return s;
}

void RfbSession::OnUpdateDone(rfbClient* c) {
  auto* s = static_cast<RfbSession*>(rfbClientGetClientData(c, reinterpret_cast<void*>(&OnUpdateDone)));
  if (s) ++s->updates_;
}

Result<double> RfbSession::KeyToScreenMs(uint32_t keysym, int timeout_ms, uint32_t modifier) {
  const uint64_t before = updates_;
  auto start = Clock::now();
  if ((modifier != 0 && !SendKeyEvent(client_, modifier, TRUE)) || !SendKeyEvent(client_, keysym, TRUE) ||
      !SendKeyEvent(client_, keysym, FALSE) || (modifier != 0 && !SendKeyEvent(client_, modifier, FALSE))) {
    return Status::IOError("RFB: sending a key event failed");
  }
  auto deadline = start + std::chrono::milliseconds(timeout_ms);
  while (updates_ == before) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()).count());
    if (left <= 0) return Status::Unavailable("no screen update within " + std::to_string(timeout_ms) + " ms of the key");
    int r = WaitForMessage(client_, static_cast<unsigned>(left));
    if (r < 0) return Status::IOError("RFB connection failed");
    if (r > 0 && !HandleRFBServerMessage(client_)) return Status::IOError("RFB: bad server message");
  }
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

Result<double> RfbSession::KeyUntilScreenMs(uint32_t keysym, const std::vector<uint32_t>& want, int timeout_ms) {
  if (client_->width != notepad::kWidth || client_->height != notepad::kHeight ||
      want.size() != size_t(notepad::kWidth) * notepad::kHeight) {
    return Status::InvalidArgument("the framebuffer is " + std::to_string(client_->width) + "x" +
                                   std::to_string(client_->height) + ", not the notepad's");
  }
  auto start = Clock::now();
  if (!SendKeyEvent(client_, keysym, TRUE) || !SendKeyEvent(client_, keysym, FALSE)) {
    return Status::IOError("RFB: sending a key event failed");
  }
  auto deadline = start + std::chrono::milliseconds(timeout_ms);
  size_t differing = 0;
  uint64_t checked = updates_;
  for (;;) {
    if (updates_ != checked) {  // judge whole updates only, never a half-drawn screen
      checked = updates_;
      if (ScreenEquals(want, &differing)) break;
    }
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()).count());
    if (left <= 0) {
      return Status::Unavailable("the screen did not show the key's effect within " + std::to_string(timeout_ms) +
                                 " ms (" + std::to_string(differing) + " pixels differ)");
    }
    int r = WaitForMessage(client_, static_cast<unsigned>(left));
    if (r < 0) return Status::IOError("RFB connection failed");
    if (r > 0 && !HandleRFBServerMessage(client_)) return Status::IOError("RFB: bad server message");
  }
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

bool RfbSession::ScreenEquals(const std::vector<uint32_t>& want, size_t* differing) const {
  const uint32_t* fb = reinterpret_cast<const uint32_t*>(client_->frameBuffer);
  size_t n = 0;
  for (size_t i = 0; i < want.size(); ++i) n += (fb[i] & 0xffffff) != want[i];
  if (differing) *differing = n;
  return n == 0;
}

Status RfbSession::SavePpm(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << "P6\n" << client_->width << ' ' << client_->height << "\n255\n";
  const uint32_t* fb = reinterpret_cast<const uint32_t*>(client_->frameBuffer);
  for (int i = 0; i < client_->width * client_->height; ++i) {
    char rgb[3] = {char(fb[i] >> 16), char(fb[i] >> 8), char(fb[i])};
    out.write(rgb, 3);
  }
  out.close();
  return out ? Status::OK() : Status::IOError("cannot write " + path);
}

Status RfbSession::Drain(int quiet_ms) {
  for (;;) {
    int r = WaitForMessage(client_, static_cast<unsigned>(quiet_ms) * 1000);
    if (r < 0) return Status::IOError("RFB connection failed");
    if (r == 0) return Status::OK();
    if (!HandleRFBServerMessage(client_)) return Status::IOError("RFB: bad server message");
  }
}

RfbSession::~RfbSession() {
  // rfbClientCleanup leaves the framebuffer (the application's, by
  // libvncclient's contract) to us.
  free(client_->frameBuffer);
  client_->frameBuffer = nullptr;
  rfbClientCleanup(client_);
}

Status RfbSession::Type(const std::string& text) {
  for (char ch : text) {
    uint32_t key = ch == '\n' ? 0xff0d : static_cast<unsigned char>(ch);
    if (!SendKeyEvent(client_, key, TRUE) || !SendKeyEvent(client_, key, FALSE)) {
      return Status::IOError("RFB: sending a key event failed");
    }
    SLINGSHOT_RETURN_IF_ERROR(Pump(0));
  }
  return Status::OK();
}

Status RfbSession::SendRaw(const uint8_t* data, size_t n) {
  if (!WriteToRFBServer(client_, reinterpret_cast<const char*>(data), static_cast<unsigned int>(n))) {
    return Status::IOError("RFB: writing to the server failed");
  }
  return Status::OK();
}

Status RfbSession::Pump(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  do {
    int r = WaitForMessage(client_, timeout_ms > 0 ? 10000 : 0);
    if (r < 0) return Status::IOError("RFB connection failed");
    if (r > 0 && !HandleRFBServerMessage(client_)) return Status::IOError("RFB: bad server message");
    if (r == 0 && timeout_ms == 0) break;
  } while (Clock::now() < deadline);
  return Status::OK();
}

Status RfbSession::WaitForScreen(const notepad::Font& font, const std::string& text,
                                 std::chrono::milliseconds timeout, notepad::Mode mode) {
  if (client_->width != notepad::kWidth || client_->height != notepad::kHeight) {
    return Status::Corruption("framebuffer is " + std::to_string(client_->width) + "x" +
                              std::to_string(client_->height));
  }
  std::vector<uint32_t> want(size_t(notepad::kWidth) * notepad::kHeight);
  notepad::Render(font, text, want.data(), mode);
  auto deadline = Clock::now() + timeout;
  size_t differing = 0;
  while (Clock::now() < deadline) {
    SendFramebufferUpdateRequest(client_, 0, 0, notepad::kWidth, notepad::kHeight, FALSE);
    auto until = Clock::now() + std::chrono::milliseconds(200);
    while (Clock::now() < until) SLINGSHOT_RETURN_IF_ERROR(Pump(50));
    if (ScreenEquals(want, &differing)) return Status::OK();
  }
  return Status::IOError("screen differs from the rendering of '" + text + "' in " +
                         std::to_string(differing) + " pixels");
}

std::vector<int> ProcessesMatching(const std::string& needle) {
  std::vector<int> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    int pid = atoi(e->d_name);
    if (pid <= 0 || pid == getpid()) continue;
    std::ifstream in("/proc/" + std::string(e->d_name) + "/cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Arguments are NUL-separated: match against them joined by spaces, so
    // a needle may span two ("-name replica-").
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    // A zombie has an empty command line; it is gone for our purposes.
    if (cmd.find(needle) != std::string::npos) out.push_back(pid);
  }
  closedir(d);
  return out;
}

}  // namespace slingshot::testing
