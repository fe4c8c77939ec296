#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <rfb/rfb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <list>
#include <set>
#include <thread>

#include "slingshot/store/event_log.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/service/rfb.h"
#include "slingshot/net/transport.h"

namespace slingshot {
using Clock = std::chrono::steady_clock;

namespace {
constexpr size_t kMaxSentTimes = 8192;
constexpr size_t kMaxHeldInputs = 64;     // inputs that share one fdatasync, at most
constexpr double kSwitchRatio = 0.8;      // a rival must be 20% faster to take over
constexpr int kLagSwitchMs = 300;         // a leader behind this long loses the lead
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

uint16_t FreePort(const std::string& host) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  socklen_t n = sizeof(a);
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}
}  // namespace

struct Link {
  std::string name;
  bool is_home = false;
  std::unique_ptr<Connection> conn;
  // Guarded by Proxy::Impl::mu.
  bool attached = false, live = false, dead = false;
  uint64_t consumed = 0;
  double ewma_ms = -1;
  uint64_t pin = 0;
  bool pinned = false;
  bool leaving = false;  // the user asked to leave it
};

struct Proxy::Impl {
  ProxyOptions options;
  std::unique_ptr<EventLog> log;

  mutable Mutex mu;
  CondVar cv;
  bool stopping GUARDED_BY(mu) = false;
  std::list<std::shared_ptr<Link>> links GUARDED_BY(mu);
  std::shared_ptr<Link> leader GUARDED_BY(mu);
  Clock::time_point leader_behind_since GUARDED_BY(mu);
  bool leader_behind GUARDED_BY(mu) = false;
  uint64_t switches GUARDED_BY(mu) = 0;
  std::deque<std::pair<uint64_t, Clock::time_point>> sent_times GUARDED_BY(mu);
  uint64_t posted_seq GUARDED_BY(mu) = 0;  // every input <= this went to the live replicas
  std::multiset<uint64_t> pins GUARDED_BY(mu);
  int running_links GUARDED_BY(mu) = 0;
  uint16_t width GUARDED_BY(mu) = 0, height GUARDED_BY(mu) = 0;

  // The viewer-facing server (created once the screen size is known).
  rfbScreenInfoPtr screen = nullptr;
  std::vector<uint32_t> fb;
  uint16_t vnc_port = 0;

  std::thread home_thread, control_thread;
  int control_fd = -1;
  std::list<std::thread> control_workers;
  Mutex workers_mu;

  // --- inputs ---

  // Inputs are appended to the log in arrival order, and each is sent only
  // once it is durable. An input followed by a key event the viewer has
  // already sent (a key's press and release, keys typed as a burst) is
  // appended without a sync and held: the next one's fdatasync covers both,
  // and both go out together. input_mu orders appends and sends.
  Mutex input_mu ACQUIRED_BEFORE(mu);
  std::vector<wire::Input> held GUARDED_BY(input_mu);

  void Input(uint16_t type, Bytes payload, bool another_waiting) EXCLUDES(input_mu, mu) {
    MutexLock in(&input_mu);
    {
      MutexLock l(&mu);
      if (stopping) return;
    }
    // Without a sync per input (--no-sync) there is nothing to share.
    const bool hold = options.sync_every_input && another_waiting && held.size() + 1 < kMaxHeldInputs;
    auto seq = log->Append(type, payload, options.sync_every_input && !hold);
    if (!seq.ok()) {
      LogError("input dropped: the event log refused it: " + seq.status().message());
      SendHeldLocked(/*sync=*/true);
      return;
    }
    held.push_back(wire::Input{*seq, type, std::move(payload)});
    if (!hold) SendHeldLocked(/*sync=*/false);
  }

  // Makes the held inputs durable (if sync) and sends them to every live
  // replica, in seq order.
  void SendHeldLocked(bool sync) REQUIRES(input_mu) EXCLUDES(mu) {
    if (held.empty()) return;
    if (sync && options.sync_every_input) {
      Status st = log->Sync();
      if (!st.ok()) {
        LogError("inputs " + std::to_string(held.front().seq) + ".." + std::to_string(held.back().seq) +
                 " not sent: the event log could not make them durable: " + st.message() +
                 ". Restart the proxy: the log recovers them and they are replayed");
        held.clear();
        return;
      }
    }
    MutexLock l(&mu);
    const auto now = Clock::now();
    for (auto& in : held) {
      sent_times.emplace_back(in.seq, now);
      for (auto& k : links) {
        if (k->live && !k->dead) k->conn->Post(in);
      }
      posted_seq = in.seq;
    }
    while (sent_times.size() > kMaxSentTimes) sent_times.pop_front();
    held.clear();
    ChooseLeader();
  }

  // A viewer that left while an input of its was held.
  void SendHeld() EXCLUDES(input_mu, mu) {
    MutexLock in(&input_mu);
    SendHeldLocked(/*sync=*/true);
  }

  static Impl* From(rfbClientPtr cl) { return static_cast<Impl*>(cl->screen->screenData); }
  // Whether the viewer has already sent a key event (its first byte is in
  // the socket; libvncserver reads plain sockets unbuffered). Only keys:
  // libvncserver hands every key of a viewer that is not view-only to
  // OnKey, but drops a viewer's pointer events while another holds a
  // button, and may take cut text through its extended-clipboard path. An
  // input must never be held for an event that does not come.
  static bool AnotherKeyWaiting(rfbClientPtr cl) {
    uint8_t type = 0;
    return ::recv(cl->sock, &type, 1, MSG_PEEK | MSG_DONTWAIT) == 1 && type == rfbKeyEvent;
  }
  static void OnKey(rfbBool down, rfbKeySym key, rfbClientPtr cl) {
    From(cl)->Input(rfb::kKey, rfb::KeyEvent(down, static_cast<uint32_t>(key)), AnotherKeyWaiting(cl));
  }
  static void OnPointer(int mask, int x, int y, rfbClientPtr cl) {
    From(cl)->Input(rfb::kPointer,
                    rfb::PointerEvent(static_cast<uint8_t>(mask), static_cast<uint16_t>(x), static_cast<uint16_t>(y)),
                    AnotherKeyWaiting(cl));
  }
  static void OnCutText(char* text, int len, rfbClientPtr cl) {
    From(cl)->Input(rfb::kCutText, rfb::CutText(std::string_view(text, static_cast<size_t>(len))),
                    AnotherKeyWaiting(cl));
  }
  // A viewer that dies after the first byte of a key event leaves the
  // input before it held: it goes out when the viewer is gone.
  static void OnViewerGone(rfbClientPtr cl) { From(cl)->SendHeld(); }
  static rfbNewClientAction OnNewViewer(rfbClientPtr cl) {
    cl->clientGoneHook = OnViewerGone;
    return RFB_CLIENT_ACCEPT;
  }

  // --- leader ---

  void ChooseLeader() REQUIRES(mu) {
    const uint64_t last = posted_seq;
    auto caught_up = [&](const std::shared_ptr<Link>& k) { return k->live && !k->dead && k->consumed >= last; };
    auto speed = [](const std::shared_ptr<Link>& k) { return k->ewma_ms < 0 ? 1e9 : k->ewma_ms; };
    std::shared_ptr<Link> best;
    for (auto& k : links) {
      if (caught_up(k) && (!best || speed(k) < speed(best))) best = k;
    }
    std::shared_ptr<Link> next = leader;
    if (leader && (leader->dead || !leader->live)) next = nullptr;
    if (next && !caught_up(next)) {
      if (!leader_behind) {
        leader_behind = true;
        leader_behind_since = Clock::now();
      }
      if (best && Ms(Clock::now() - leader_behind_since) > kLagSwitchMs) next = best;
    } else {
      leader_behind = false;
      if (next && best && best != next && speed(best) < speed(next) * kSwitchRatio) next = best;
    }
    if (!next) {
      next = best;
      if (!next) {  // nobody is current: show the one furthest along
        for (auto& k : links) {
          if (k->live && !k->dead && (!next || k->consumed > next->consumed)) next = k;
        }
      }
    }
    if (next != leader) {
      LogInfo("leader: " + (leader ? leader->name : std::string("none")) + " -> " +
              (next ? next->name : std::string("none")));
      leader = next;
      leader_behind = false;
      ++switches;
      if (next) next->conn->Post(wire::Repaint{});
    }
  }

  // --- screens ---

  void ApplyScreen(const wire::Screen& s) REQUIRES(mu) {
    if (!screen) return;
    Bytes px;
    for (const auto& r : s.rects) {
      if (uint32_t(r.x) + r.w > width || uint32_t(r.y) + r.h > height) {
        LogWarning("a screen rectangle outside the screen was dropped");
        continue;
      }
      const uint8_t* src = r.data.data();
      if (r.codec == 1) {
        px.resize(size_t(r.w) * r.h * 4);
        size_t n = ZSTD_decompress(px.data(), px.size(), r.data.data(), r.data.size());
        if (ZSTD_isError(n) || n != px.size()) {
          LogWarning("a compressed screen rectangle did not decompress; dropped");
          continue;
        }
        src = px.data();
      }
      for (uint16_t row = 0; row < r.h; ++row) {
        std::memcpy(&fb[size_t(r.y + row) * width + r.x], src + size_t(row) * r.w * 4, size_t(r.w) * 4);
      }
      rfbMarkRectAsModified(screen, r.x, r.y, r.x + r.w, r.y + r.h);
    }
  }

  Status StartVnc(uint16_t w, uint16_t h) {
    fb.assign(size_t(w) * h, 0);
    rfbLogEnable(0);
    screen = rfbGetScreen(nullptr, nullptr, w, h, 8, 3, 4);
    if (!screen) return Status::IOError("libvncserver could not make a screen");
    screen->serverFormat.redShift = 16;
    screen->serverFormat.greenShift = 8;
    screen->serverFormat.blueShift = 0;
    screen->frameBuffer = reinterpret_cast<char*>(fb.data());
    screen->desktopName = "slingshot";
    uint16_t port = options.vnc_port ? options.vnc_port : FreePort(options.vnc_host);
    screen->port = port;
    screen->ipv6port = 0;
    in_addr_t addr = inet_addr(options.vnc_host.c_str());
    screen->listenInterface = addr;
    screen->alwaysShared = TRUE;
    screen->deferUpdateTime = 0;
    screen->cursor = nullptr;
    screen->screenData = this;
    screen->kbdAddEvent = OnKey;
    screen->ptrAddEvent = OnPointer;
    screen->setXCutText = OnCutText;
    screen->newClientHook = OnNewViewer;
    rfbInitServer(screen);
    if (screen->listenSock < 0) {
      return Status::IOError("cannot listen for VNC viewers on " + options.vnc_host + ":" + std::to_string(port) +
                             " (is another proxy or VNC server using it?)");
    }
    vnc_port = port;
    rfbRunEventLoop(screen, -1, TRUE);
    return Status::OK();
  }

  // --- links to replicas ---

  // Handles the replica's Attached: replays the log from its seq.
  Status OnAttached(const std::shared_ptr<Link>& k, const wire::Attached& a) {
    {
      MutexLock l(&mu);
      k->attached = true;
      k->consumed = a.consumed_seq;
      k->name = a.replica;
      if (width == 0) {
        width = a.width;
        height = a.height;
        cv.SignalAll();
      } else if (a.width != width || a.height != height) {
        return Status::InvalidArgument("replica " + a.replica + " has a " + std::to_string(a.width) + "x" +
                                       std::to_string(a.height) + " screen; the others have " +
                                       std::to_string(width) + "x" + std::to_string(height));
      }
    }
    if (a.consumed_seq < log->truncated_seq()) {
      return Status::Corruption("replica " + a.replica + " holds inputs up to " + std::to_string(a.consumed_seq) +
                                " but the log starts after " + std::to_string(log->truncated_seq()) +
                                ": it was made from a checkpoint older than the home acknowledged");
    }
    if (a.consumed_seq > log->last_seq()) {
      return Status::Corruption("replica " + a.replica + " has consumed input " + std::to_string(a.consumed_seq) +
                                " but this log ends at " + std::to_string(log->last_seq()) +
                                ": the log was lost or belongs to another service");
    }
    uint64_t next = a.consumed_seq + 1, replayed = 0;
    for (;;) {
      uint64_t upto;  // held inputs are not durable yet: they are sent when they are
      {
        MutexLock l(&mu);
        upto = posted_seq;
      }
      Status st = log->ReadFrom(next, [&](const LogRecord& rec) {
        if (rec.seq > upto) return false;
        k->conn->Post(wire::Input{rec.seq, rec.type, rec.payload});
        next = rec.seq + 1;
        ++replayed;
        return true;
      });
      SLINGSHOT_RETURN_IF_ERROR(st);
      MutexLock l(&mu);
      if (posted_seq < next) {  // nothing new was sent meanwhile: live from here
        k->live = true;
        if (k->pinned) {
          pins.erase(pins.find(k->pin));
          k->pinned = false;
        }
        ChooseLeader();
        break;
      }
    }
    LogInfo("replica " + a.replica + " attached at seq " + std::to_string(a.consumed_seq) + "; replayed " +
            std::to_string(replayed) + " inputs");
    return Status::OK();
  }

  Status OnFrame(const std::shared_ptr<Link>& k, Frame&& f) {
    if (auto* a = std::get_if<wire::Attached>(&f.message)) return OnAttached(k, *a);
    if (auto* c = std::get_if<wire::Consumed>(&f.message)) {
      MutexLock l(&mu);
      if (c->seq > k->consumed) {
        k->consumed = c->seq;
        for (auto it = sent_times.rbegin(); it != sent_times.rend(); ++it) {
          if (it->first == c->seq) {
            double sample = Ms(Clock::now() - it->second);
            k->ewma_ms = k->ewma_ms < 0 ? sample : 0.8 * k->ewma_ms + 0.2 * sample;
            break;
          }
          if (it->first < c->seq) break;
        }
      }
      ChooseLeader();
      return Status::OK();
    }
    if (auto* s = std::get_if<wire::Screen>(&f.message)) {
      MutexLock l(&mu);
      if (k == leader) ApplyScreen(*s);
      return Status::OK();
    }
    if (auto* c = std::get_if<wire::Checkpointed>(&f.message)) {
      uint64_t upto = c->seq;
      {
        MutexLock l(&mu);
        if (!pins.empty()) upto = std::min(upto, *pins.begin());
      }
      if (upto > log->truncated_seq()) {
        Status st = log->TruncateUpTo(upto);
        if (!st.ok()) LogWarning("could not truncate the log: " + st.message());
        else LogInfo("home checkpoint epoch " + std::to_string(c->epoch) + " covers seq " + std::to_string(c->seq) +
                     "; log truncated up to " + std::to_string(upto));
      }
      return Status::OK();
    }
    if (auto* e = std::get_if<wire::Error>(&f.message)) return e->ToStatus(k->name);
    return Status::InvalidArgument(std::string("replica ") + k->name + " sent " +
                                   wire::MessageTypeName(wire::TypeOf(f.message)));
  }

  // Runs k's session until it ends; k->conn is connected and has sent (or
  // been sent) its Attach. first: an Attached already received, if any.
  void RunLink(const std::shared_ptr<Link>& k, const wire::Attached* first) {
    {
      MutexLock l(&mu);
      links.push_back(k);
    }
    Status end;
    if (first) end = OnAttached(k, *first);
    if (end.ok()) {
      std::function<Status(Frame&&)> on_frame = [&](Frame&& f) { return OnFrame(k, std::move(f)); };
      end = k->conn->Duplex(on_frame, options.silent_ms);
    }
    MutexLock l(&mu);
    k->dead = true;
    if (k->pinned) {
      pins.erase(pins.find(k->pin));
      k->pinned = false;
    }
    links.remove(k);
    if (k->leaving) {
      LogInfo("replica " + k->name + " left at the user's request");
    } else {
      LogWarning("replica " + k->name + " dropped: " + end.message());
    }
    ChooseLeader();
  }

  void HomeLoop() {
    int backoff = 500;
    for (;;) {
      {
        MutexLock l(&mu);
        if (stopping) return;
      }
      ConnectOptions co;
      co.expected_role = Role::kHome;
      co.software = "slingshot-client";
      auto c = Connection::Connect(options.home_host, options.home_port, options.creds, co);
      if (c.ok()) {
        auto k = std::make_shared<Link>();
        k->name = "home";
        k->is_home = true;
        k->conn = std::move(*c);
        if (k->conn->Send(0, wire::Attach{options.service}).ok()) {
          RunLink(k, nullptr);
          backoff = 500;
        }
      } else {
        LogWarning("home unreachable: " + c.status().message());
      }
      MutexLock l(&mu);
      if (stopping) return;
      cv.WaitFor(&mu, std::chrono::milliseconds(backoff));
      backoff = std::min(backoff * 2, 5000);
    }
  }

  // --- control socket ---

  void ControlLoop(Proxy* self) {
    for (;;) {
      {
        MutexLock l(&mu);
        if (stopping) return;
      }
      pollfd p{control_fd, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      int fd = accept4(control_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      MutexLock w(&workers_mu);
      control_workers.emplace_back([this, self, fd] { ServeControl(self, fd); });
    }
  }

  static void WriteLine(int fd, const std::string& line) {
    std::string s = line + "\n";
    (void)!::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
  }

  void ServeControl(Proxy* self, int fd) {
    std::string line;
    char c;
    while (line.size() < 4096 && ::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
    std::vector<std::string> w;
    size_t at = 0;
    while (at < line.size()) {
      size_t sp = line.find(' ', at);
      if (sp == std::string::npos) sp = line.size();
      if (sp > at) w.push_back(line.substr(at, sp - at));
      at = sp + 1;
    }
    if (!w.empty() && w[0] == "status") {
      ProxyStatus s = self->status();
      WriteLine(fd, "service " + s.service + " vnc 127.0.0.1:" + std::to_string(s.vnc_port) + " log " +
                        std::to_string(s.truncated_seq + 1) + ".." + std::to_string(s.last_seq) + " switches " +
                        std::to_string(s.switches));
      for (const auto& r : s.replicas) {
        char lat[32];
        std::snprintf(lat, sizeof(lat), "%.1f", r.latency_ms);
        WriteLine(fd, "replica " + r.name + " consumed " + std::to_string(r.consumed) + (r.live ? " live" : " replaying") +
                          (r.leader ? " leader" : "") + " latency_ms " + lat);
      }
      WriteLine(fd, "ok");
    } else if (w.size() == 5 && w[0] == "use") {
      int port = std::atoi(w[2].c_str());
      Status st = self->Use(w[1], static_cast<uint16_t>(port), w[3] == "-" ? "" : w[3], w[4] == "-" ? "" : w[4],
                            [&](const std::string& s) { WriteLine(fd, s); });
      WriteLine(fd, st.ok() ? "ok" : "error " + st.message());
    } else if (w.size() == 2 && w[0] == "leave") {
      Status st = self->Leave(w[1]);
      WriteLine(fd, st.ok() ? "ok" : "error " + st.message());
    } else {
      WriteLine(fd, "error unknown command \"" + line + "\" (status | use HOST PORT FP|- STICK|- | leave NAME)");
    }
    ::close(fd);
  }

  Status StartControl() {
    const std::string& path = options.control_socket;
    if (path.size() >= sizeof(sockaddr_un::sun_path)) return Status::InvalidArgument("control socket path too long: " + path);
    ::unlink(path.c_str());
    control_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    mode_t old = umask(077);
    int rc = bind(control_fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    umask(old);
    if (rc != 0 || listen(control_fd, 8) != 0) return Status::FromErrno("control socket " + path, errno);
    return Status::OK();
  }
};

Proxy::Proxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Proxy::~Proxy() { Stop(); }

Result<std::unique_ptr<Proxy>> Proxy::Start(ProxyOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  SLINGSHOT_ASSIGN_OR_RETURN(impl->log, EventLog::Open(impl->options.log_dir));
  {
    MutexLock l(&impl->mu);
    impl->posted_seq = impl->log->last_seq();  // recovered records are durable (EventLog::Open)
  }
  const LogRecovery& rec = impl->log->recovery();
  LogInfo("event log " + impl->options.log_dir + ": inputs " + std::to_string(rec.truncated_seq + 1) + ".." +
          std::to_string(rec.last_seq) + (rec.torn_bytes ? ", a torn tail of " + std::to_string(rec.torn_bytes) +
                                                               " bytes cut (" + rec.torn_reason + ")"
                                                         : std::string()));
  SLINGSHOT_RETURN_IF_ERROR(impl->StartControl());
  Impl* raw = impl.get();
  std::unique_ptr<Proxy> proxy(new Proxy(std::move(impl)));
  raw->home_thread = std::thread([raw] { raw->HomeLoop(); });
  raw->control_thread = std::thread([raw, p = proxy.get()] { raw->ControlLoop(p); });
  // The viewer's screen takes the size of the first replica that attaches.
  uint16_t w, h;
  {
    MutexLock l(&raw->mu);
    auto deadline = Clock::now() + std::chrono::seconds(300);
    while (raw->width == 0 && Clock::now() < deadline) raw->cv.WaitFor(&raw->mu, std::chrono::milliseconds(200));
    w = raw->width;
    h = raw->height;
  }
  if (w == 0) return Status::Unavailable("no replica of " + raw->options.service + " attached within 300 s: is the home reachable?");
  SLINGSHOT_RETURN_IF_ERROR(raw->StartVnc(w, h));
  {
    // The first leader was chosen before the screen existed: repaint.
    MutexLock l(&raw->mu);
    if (raw->leader) raw->leader->conn->Post(wire::Repaint{});
  }
  return proxy;
}

void Proxy::Stop() {
  Impl& i = *impl_;
  {
    MutexLock l(&i.mu);
    if (i.stopping) return;
    i.stopping = true;
    for (auto& k : i.links) k->conn->Close();
    i.cv.SignalAll();
  }
  if (i.home_thread.joinable()) i.home_thread.join();
  if (i.control_thread.joinable()) i.control_thread.join();
  {
    MutexLock w(&i.workers_mu);
    for (auto& t : i.control_workers) t.join();
    i.control_workers.clear();
  }
  for (;;) {
    MutexLock l(&i.mu);
    if (i.running_links == 0) break;
    for (auto& k : i.links) k->conn->Close();
    i.cv.WaitFor(&i.mu, std::chrono::milliseconds(50));
  }
  if (i.control_fd >= 0) ::close(i.control_fd);
  ::unlink(i.options.control_socket.c_str());
  if (i.screen) {
    // Closes the viewers' connections. The screen itself is not freed:
    // libvncserver's threaded mode frees client state under its client
    // threads in rfbScreenCleanup, and the proxy stops only to exit.
    rfbShutdownServer(i.screen, TRUE);
  }
}

uint16_t Proxy::vnc_port() const { return impl_->vnc_port; }

Status Proxy::Leave(const std::string& name) {
  Impl& i = *impl_;
  std::shared_ptr<Link> k;
  {
    MutexLock l(&i.mu);
    for (const auto& c : i.links) {
      if (c->name == name && !c->dead) k = c;
    }
    if (!k) return Status::NotFound("no replica called \"" + name + "\" (slingshot-client status lists them)");
    if (k->is_home) return Status::InvalidArgument("home holds the primary replica: it cannot be left");
    k->leaving = true;
  }
  // Ends the session: the agent destroys the replica, and RunLink drops it
  // (choosing another leader if it led).
  k->conn->Close();
  return Status::OK();
}

ProxyStatus Proxy::status() const {
  Impl& i = *impl_;
  ProxyStatus s;
  s.service = i.options.service;
  s.last_seq = i.log->last_seq();
  s.truncated_seq = i.log->truncated_seq();
  s.vnc_port = i.vnc_port;
  MutexLock l(&i.mu);
  s.switches = i.switches;
  for (auto& k : i.links) {
    s.replicas.push_back(ReplicaView{k->name, k->consumed, k->live, k == i.leader, k->ewma_ms < 0 ? 0 : k->ewma_ms});
  }
  return s;
}

Status Proxy::Use(const std::string& host, uint16_t port, const std::string& fingerprint, const std::string& stick_dir,
                  const std::function<void(const std::string&)>& report) {
  Impl& i = *impl_;
  auto start = Clock::now();
  // A capability from home, for this service and this client.
  ConnectOptions home_opts;
  home_opts.expected_role = Role::kHome;
  home_opts.software = "slingshot-client";
  SLINGSHOT_ASSIGN_OR_RETURN(auto home, Connection::Connect(i.options.home_host, i.options.home_port, i.options.creds, home_opts));
  SLINGSHOT_RETURN_IF_ERROR(home->Send(1, wire::GetCapability{i.options.service, 600}));
  SLINGSHOT_ASSIGN_OR_RETURN(wire::Message cm, home->Expect(1, wire::MessageType::kCapability));
  const auto& cap = std::get<wire::Capability>(cm);
  home.reset();
  report("capability for " + cap.service + " valid until " + std::to_string(cap.not_after));

  auto k = std::make_shared<Link>();
  k->name = host + ":" + std::to_string(port);
  {
    // The log must keep what the new replica will need until it has it.
    MutexLock l(&i.mu);
    k->pin = i.log->truncated_seq();
    k->pinned = true;
    i.pins.insert(k->pin);
  }
  auto unpin = [&] {
    MutexLock l(&i.mu);
    if (k->pinned) {
      i.pins.erase(i.pins.find(k->pin));
      k->pinned = false;
    }
  };
  ConnectOptions ao;
  ao.verify_server_ca = false;
  ao.server_fingerprint = fingerprint;
  ao.software = "slingshot-client";
  auto agent = Connection::Connect(host, port, i.options.creds, ao);
  if (!agent.ok()) {
    unpin();
    return agent.status();
  }
  k->conn = std::move(*agent);
  wire::Instantiate in;
  in.service = i.options.service;
  in.home_host = i.options.home_host;
  in.home_port = i.options.home_port;
  in.ca_pem = i.options.creds.ca_pem;
  in.manifest_key.assign(i.options.manifest_key.raw().begin(), i.options.manifest_key.raw().end());
  in.cert_pem = cap.cert_pem;
  in.key_pem = cap.key_pem;
  in.stick_dir = stick_dir;
  Status sent = k->conn->Send(1, in);
  if (!sent.ok()) {
    unpin();
    return sent;
  }
  wire::Attached attached;
  for (;;) {
    auto f = k->conn->Receive(600000);
    if (!f.ok()) {
      unpin();
      return f.status();
    }
    if (auto* p = std::get_if<wire::Progress>(&f->message)) {
      report("progress " + p->phase + " " + std::to_string(p->done) + " " + std::to_string(p->total) + " stick " +
             std::to_string(p->from_stick) + " home " + std::to_string(p->from_home) + " elapsed_ms " +
             std::to_string(static_cast<int64_t>(Ms(Clock::now() - start))));
      continue;
    }
    if (auto* e = std::get_if<wire::Error>(&f->message)) {
      unpin();
      return e->ToStatus(k->conn->peer().Describe());
    }
    if (auto* a = std::get_if<wire::Attached>(&f->message)) {
      attached = *a;
      break;
    }
    unpin();
    return Status::Corruption(std::string("the agent sent ") + wire::MessageTypeName(wire::TypeOf(f->message)) +
                              " during instantiation");
  }
  {
    MutexLock l(&i.mu);
    ++i.running_links;
  }
  std::thread([&i, k, attached] {
    i.RunLink(k, &attached);
    MutexLock l(&i.mu);
    --i.running_links;
    i.cv.SignalAll();
  }).detach();
  // Wait until it has been sent the whole log (or died).
  for (;;) {
    MutexLock l(&i.mu);
    if (k->live || k->dead || i.stopping) break;
    i.cv.WaitFor(&i.mu, std::chrono::milliseconds(50));
  }
  MutexLock l(&i.mu);
  if (!k->live) return Status::Unavailable("replica " + attached.replica + " was lost while catching up");
  report("ready replica " + attached.replica + " from seq " + std::to_string(attached.consumed_seq) + " in " +
         std::to_string(static_cast<int64_t>(Ms(Clock::now() - start))) + " ms");
  return Status::OK();
}

}  // namespace slingshot
