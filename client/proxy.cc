#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <rfb/rfb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <list>
#include <thread>

#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/net/transport.h"
#include "slingshot/replica/input_sequencer.h"
#include "slingshot/replica/replica_set.h"
#include "slingshot/service/framebuffer.h"
#include "slingshot/service/rfb.h"
#include "slingshot/store/event_log.h"

namespace slingshot {
using Clock = std::chrono::steady_clock;

namespace {
constexpr size_t kMaxHeldInputs = 64;     // inputs that share one fdatasync, at most
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

// One replica's session: its connection, and its membership of the set.
struct Link final : public ReplicaChannel {
  std::string name;
  bool is_home = false;
  // A surrogate's agent, to attach to it again.
  std::string host;
  uint16_t port = 0;
  std::string fingerprint;
  std::unique_ptr<Connection> conn;
  ReplicaSet::Handle member;
  std::atomic<bool> leaving{false};  // the user asked to leave it
  void Post(wire::Message m) override { conn->Post(std::move(m)); }
};

struct Proxy::Impl {
  ProxyOptions options;
  std::unique_ptr<EventLog> log;
  std::unique_ptr<ReplicaSet> set;
  std::unique_ptr<InputSequencer> inputs;

  mutable Mutex mu;
  CondVar cv;
  bool stopping GUARDED_BY(mu) = false;
  std::list<std::shared_ptr<Link>> links GUARDED_BY(mu);  // sessions running
  int running_links GUARDED_BY(mu) = 0;
  // Why this proxy takes no more input (proxy.h); "" while it does.
  std::string stopped GUARDED_BY(mu);
  std::string refusing GUARDED_BY(mu);  // why the event log refused the last input
  bool take_over_pending GUARDED_BY(mu) = false;
  std::atomic<bool> handing_over{false};  // the home asked us to hand over

  // The viewer-facing server (created once the screen size is known).
  Mutex screen_mu;
  std::unique_ptr<Framebuffer> fb GUARDED_BY(screen_mu);
  rfbScreenInfoPtr screen = nullptr;
  uint16_t vnc_port = 0;
  std::string title GUARDED_BY(screen_mu) = "slingshot";  // the desktop's name viewers see

  std::thread home_thread, control_thread, warm_thread;
  // The connection capabilities are asked for on: made once the home has
  // answered and kept between uses, since a new one costs two WAN round
  // trips before the request.
  Mutex ask_mu;
  std::unique_ptr<Connection> ask GUARDED_BY(ask_mu);
  int control_fd = -1;
  std::list<std::thread> control_workers;
  Mutex workers_mu;

  // A connection to home. Without await_hello, a request may follow our
  // Hello at once (transport.h).
  Result<std::unique_ptr<Connection>> ConnectHome(bool await_hello) {
    ConnectOptions o;
    o.expected_role = Role::kHome;
    o.software = "slingshot-client";
    o.await_hello = await_hello;
    return Connection::Connect(options.home_host, options.home_port, options.creds, o);
  }

  // A capability for this service and this client, from home.
  Result<wire::Capability> AskCapability() {
    MutexLock l(&ask_mu);
    for (int attempt = 0;; ++attempt) {
      const bool kept = ask != nullptr;
      if (!ask) {
        SLINGSHOT_ASSIGN_OR_RETURN(ask, ConnectHome(/*await_hello=*/false));
      }
      Status sent = ask->Send(1, wire::GetCapability{options.service, 600});
      Result<wire::Message> m = sent.ok() ? ask->Expect(1, wire::MessageType::kCapability) : Result<wire::Message>(sent);
      if (m.ok()) return std::get<wire::Capability>(std::move(*m));
      if (ask->broken()) ask.reset();
      // A kept connection the home closed while idle: once more, afresh.
      if (!kept || attempt > 0 || m.status().code() != Status::Code::kUnavailable) return m.status();
    }
  }

  // Makes the connection capabilities are asked on ahead of the first use.
  void WarmAsk() {
    auto c = ConnectHome(/*await_hello=*/false);
    MutexLock l(&ask_mu);
    if (c.ok() && !ask) ask = std::move(*c);
  }

  // --- inputs ---

  bool Stopping() const {
    MutexLock l(&mu);
    return stopping;
  }
  bool Halted() const {
    MutexLock l(&mu);
    return !stopped.empty();
  }
  // Takes no more input, for good (proxy.h): nothing the viewer sends from
  // now on is logged or acknowledged.
  void Halt(const Status& why) {
    {
      MutexLock l(&mu);
      if (!stopped.empty()) return;
      stopped = why.message();
      cv.SignalAll();
    }
    LogError("service " + options.service + ": this proxy takes no more input: " + why.message());
    MutexLock l(&screen_mu);
    title = "slingshot: STOPPED, no input is taken here: " + why.message();
    if (!screen) return;
    screen->desktopName = title.c_str();
    // Viewers are cut off; when they connect again they are view-only and
    // see the reason in the desktop's name.
    rfbClientIteratorPtr it = rfbGetClientIterator(screen);
    while (rfbClientPtr cl = rfbClientIteratorNext(it)) {
      cl->viewOnly = TRUE;
      rfbCloseClient(cl);
    }
    rfbReleaseClientIterator(it);
  }

  void Input(uint16_t type, Bytes payload, bool another_waiting) {
    if (Stopping() || Halted()) return;
    // A refusal is logged there; status shows it until an input is taken.
    Status st = inputs->Input(type, std::move(payload), another_waiting);
    MutexLock l(&mu);
    refusing = st.ok() ? "" : st.message() + ". Free space for " + options.log_dir + " and type again";
  }
  // A viewer that left while an input of its was held.
  void SendHeld() { (void)inputs->Flush(); }

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
    if (From(cl)->Halted()) cl->viewOnly = TRUE;
    return RFB_CLIENT_ACCEPT;
  }

  // --- screens ---

  void ApplyScreen(const wire::Screen& s) {
    MutexLock l(&screen_mu);
    if (!fb || !screen) return;
    size_t dropped = fb->Apply(s, [&](int x, int y, int w, int h) { rfbMarkRectAsModified(screen, x, y, x + w, y + h); });
    if (dropped) LogWarning(std::to_string(dropped) + " malformed screen rectangles from the leader were dropped");
  }

  Status StartVnc(uint16_t w, uint16_t h) {
    MutexLock l(&screen_mu);
    fb = std::make_unique<Framebuffer>(w, h);
    rfbLogEnable(0);
    screen = rfbGetScreen(nullptr, nullptr, w, h, 8, 3, 4);
    if (!screen) return Status::IOError("libvncserver could not make a screen");
    screen->serverFormat.redShift = 16;
    screen->serverFormat.greenShift = 8;
    screen->serverFormat.blueShift = 0;
    screen->frameBuffer = reinterpret_cast<char*>(fb->pixels());
    screen->desktopName = title.c_str();
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

  Status Attach(const std::shared_ptr<Link>& k, const wire::Attached& a) {
    bool restart = false;
    {
      MutexLock l(&mu);
      k->name = a.replica;
      if (k->is_home) restart = std::exchange(take_over_pending, false);
    }
    if (restart) {
      // Taken over: the home checkpointed at a.consumed_seq, and the log
      // goes on from there.
      auto dropped = set->RestartLog(a.consumed_seq);
      if (!dropped.ok()) {
        Halt(dropped.status().Annotate("could not start the log after the take-over"));
        return dropped.status();
      }
      LogInfo("took " + options.service + " over at seq " + std::to_string(a.consumed_seq) +
              "; the log goes on from there");
      if (*dropped) {
        LogWarning(std::to_string(*dropped) + " inputs in this device's log were never applied at home (the service "
                   "was taken from this device before it sent them); they are dropped");
      }
    }
    Status st = set->Attached(k->member, a);
    if (!st.ok() && k->is_home) {
      Halt(st.Annotate("the home's replica does not match this log (another device used the service, or the log "
                       "was lost): run `slingshot-client proxy " + options.service +
                       " --take-over` to go on from the home's state"));
    }
    return st;
  }

  Status OnFrame(const std::shared_ptr<Link>& k, Frame&& f) {
    if (auto* a = std::get_if<wire::Attached>(&f.message)) return Attach(k, *a);
    if (auto* c = std::get_if<wire::Consumed>(&f.message)) {
      set->Consumed(k->member, c->seq);
      if (k->is_home && handing_over && c->seq >= log->last_seq()) {
        return Status::AlreadyExists("handed the service over: the home has every input of this log");
      }
      return Status::OK();
    }
    if (auto* h = std::get_if<wire::HandOver>(&f.message)) {
      if (!k->is_home) return Status::InvalidArgument("replica " + k->name + " sent HandOver");
      Halt(Status::AlreadyExists("device " + h->device + " took " + options.service +
                                 " over; run `slingshot-client proxy " + options.service +
                                 " --take-over` here to take it back"));
      (void)inputs->Flush();  // what was held goes out before we leave
      handing_over = true;
      return Status::OK();  // leaves once the home has consumed all of it
    }
    if (auto* s = std::get_if<wire::Screen>(&f.message)) {
      if (set->IsLeader(k->member)) ApplyScreen(*s);
      return Status::OK();
    }
    if (auto* c = std::get_if<wire::Checkpointed>(&f.message)) {
      uint64_t before = log->truncated_seq();
      auto upto = set->Checkpointed(c->seq);
      if (!upto.ok()) LogWarning("could not truncate the log: " + upto.status().message());
      else if (*upto > before) {
        LogInfo("home checkpoint epoch " + std::to_string(c->epoch) + " covers seq " + std::to_string(c->seq) +
                "; log truncated up to " + std::to_string(*upto));
      }
      return Status::OK();
    }
    if (auto* e = std::get_if<wire::Error>(&f.message)) return e->ToStatus(k->name);
    return Status::InvalidArgument(std::string("replica ") + k->name + " sent " +
                                   wire::MessageTypeName(wire::TypeOf(f.message)));
  }

  // Runs k's session until it ends, and returns why; k->conn is connected
  // and has sent (or been sent) its Attach, and k->member is in the set.
  // first: an Attached already received, if any.
  Status RunLink(const std::shared_ptr<Link>& k, const wire::Attached* first) {
    {
      MutexLock l(&mu);
      links.push_back(k);
    }
    Status end;
    if (first) end = Attach(k, *first);
    if (end.ok()) {
      std::function<Status(Frame&&)> on_frame = [&](Frame&& f) { return OnFrame(k, std::move(f)); };
      end = k->conn->Duplex(on_frame, options.silent_ms);
    }
    set->Remove(k->member);
    // The home refused or replaced this session: attaching again would only
    // take turns with whoever holds it now.
    if (k->is_home && (end.code() == Status::Code::kAlreadyExists || end.code() == Status::Code::kPermissionDenied)) {
      Halt(end);
    }
    MutexLock l(&mu);
    links.remove(k);
    if (k->leaving) {
      LogInfo("replica " + k->name + " left at the user's request");
    } else {
      LogWarning("replica " + k->name + " dropped: " + end.message());
    }
    return end;
  }

  // A surrogate's sessions: the first (k, which sent first), then, each
  // time one breaks, another on a new connection to the same replica.
  void RunSurrogate(std::shared_ptr<Link> k, wire::Attached first) {
    Status end = RunLink(k, &first);
    // Only a broken or silent link is tried again: an agent that refused or
    // replaced the session, or a replica the log cannot catch up, is not.
    while (end.code() == Status::Code::kUnavailable && !k->leaving && !Stopping() && !Halted()) {
      auto next = Reattach(*k, &first);
      if (!next) return;
      k = std::move(next);
      end = RunLink(k, &first);  // Reattach left its Attached in first
    }
  }

  // A session with the replica k was on, on a new connection; null if it
  // is gone or reattach_ms ran out. *attached: what it sent.
  std::shared_ptr<Link> Reattach(const Link& k, wire::Attached* attached) {
    auto n = std::make_shared<Link>();
    n->name = k.name;
    n->host = k.host;
    n->port = k.port;
    n->fingerprint = k.fingerprint;
    const std::string where = n->host + ":" + std::to_string(n->port);
    // Its pin keeps what the replica will be replayed while we try.
    n->member = set->Add(n->name, false, n.get(), /*pin=*/true);
    const auto deadline = Clock::now() + std::chrono::milliseconds(options.reattach_ms);
    int backoff = 250;
    LogInfo("attaching to replica " + n->name + " at " + where + " again");
    for (;;) {
      ConnectOptions ao;
      ao.verify_server_ca = false;
      ao.server_fingerprint = n->fingerprint;
      ao.software = "slingshot-client";
      ao.timeout_ms = 5000;
      ao.refused_is_not_found = true;  // its agent is gone, and the replica with it
      Status why;
      auto c = Connection::Connect(n->host, n->port, options.creds, ao);
      if (c.ok()) {
        n->conn = std::move(*c);
        why = n->conn->Send(0, wire::Attach{options.service, false}, 5000);
        if (why.ok()) {
          auto f = n->conn->Receive(10000);
          if (!f.ok()) {
            why = f.status();
          } else if (auto* a = std::get_if<wire::Attached>(&f->message)) {
            *attached = *a;
            LogInfo("replica " + n->name + " attached again at seq " + std::to_string(a->consumed_seq));
            return n;
          } else if (auto* e = std::get_if<wire::Error>(&f->message)) {
            why = e->ToStatus(where);
          } else {
            why = Status::Corruption(where + " sent " + wire::MessageTypeName(wire::TypeOf(f->message)) +
                                     " in answer to Attach");
          }
        }
        n->conn.reset();
      } else {
        why = c.status();
      }
      // Unavailable: not reachable yet; anything else is an answer (the
      // replica is gone, or this agent does not keep replicas).
      const bool again = why.code() == Status::Code::kUnavailable;
      if (!again || Clock::now() >= deadline || Stopping() || Halted()) {
        set->Remove(n->member);
        LogWarning("replica " + n->name + " is lost: " + why.message() +
                   (again ? " (gave up after " + std::to_string(options.reattach_ms / 1000) + " s)" : ""));
        return nullptr;
      }
      MutexLock l(&mu);
      if (!stopping) cv.WaitFor(&mu, std::chrono::milliseconds(backoff));
      backoff = std::min(backoff * 2, 4000);
    }
  }

  void HomeLoop() {
    int backoff = 500;
    for (;;) {
      bool take_over;
      {
        MutexLock l(&mu);
        while (!stopping && !stopped.empty()) cv.Wait(&mu);  // halted: never again
        if (stopping) return;
        take_over = take_over_pending;
      }
      auto c = ConnectHome(/*await_hello=*/true);
      if (c.ok()) {
        auto k = std::make_shared<Link>();
        k->name = "home";
        k->is_home = true;
        k->conn = std::move(*c);
        if (k->conn->Send(0, wire::Attach{options.service, take_over}).ok()) {
          k->member = set->Add(k->name, true, k.get(), /*pin=*/false);
          (void)RunLink(k, nullptr);  // it is tried again below, whatever ended it
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

  static void Answer(int fd, const control::Event& e) {
    std::string s = control::Encode(e) + "\n";
    (void)!::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
  }

  void ServeControl(Proxy* self, int fd) {
    std::string line;
    char c;
    while (line.size() <= control::kMaxLine && ::recv(fd, &c, 1, 0) == 1 && c != '\n') line += c;
    auto req = control::DecodeRequest(line);
    Status st;
    if (!req.ok()) {
      st = req.status();
    } else if (std::holds_alternative<control::StatusRequest>(*req)) {
      Answer(fd, self->status());
    } else if (auto* u = std::get_if<control::UseRequest>(&*req)) {
      st = self->Use(*u, [&](const control::Event& e) { Answer(fd, e); });
    } else if (auto* l = std::get_if<control::LeaveRequest>(&*req)) {
      st = self->Leave(l->replica);
    }
    Answer(fd, control::Done{st});
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
  {
    MutexLock l(&impl->mu);
    impl->take_over_pending = impl->options.take_over;
  }
  SLINGSHOT_ASSIGN_OR_RETURN(impl->log, EventLog::Open(impl->options.log_dir));
  impl->set = std::make_unique<ReplicaSet>(impl->log.get());
  InputSequencerOptions so;
  so.sync_every_input = impl->options.sync_every_input;
  so.max_held = kMaxHeldInputs;
  ReplicaSet* set = impl->set.get();
  impl->inputs = std::make_unique<InputSequencer>(impl->log.get(), so, [set](std::vector<wire::Input>&& in) {
    set->Fanout(std::move(in));
  });
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
  // A proxy stopped before any replica attached (the service is held by
  // another device, or not the user's) ends here, saying why.
  for (auto until = Clock::now() + std::chrono::seconds(300); Clock::now() < until;) {
    if (raw->set->WaitForScreen(std::chrono::milliseconds(200))) break;
    MutexLock l(&raw->mu);
    if (!raw->stopped.empty()) return Status::PermissionDenied(raw->stopped);
  }
  auto [w, h] = raw->set->screen();
  if (w == 0) return Status::Unavailable("no replica of " + raw->options.service + " attached within 300 s: is the home reachable?");
  SLINGSHOT_RETURN_IF_ERROR(raw->StartVnc(w, h));
  raw->set->RepaintLeader();  // the first leader was chosen before the screen existed
  raw->warm_thread = std::thread([raw] { raw->WarmAsk(); });
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
  if (i.warm_thread.joinable()) i.warm_thread.join();
  {
    MutexLock l(&i.ask_mu);
    i.ask.reset();
  }
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
      if (c->name == name && !i.set->IsGone(c->member)) k = c;
    }
  }
  if (!k) return Status::NotFound("no replica called \"" + name + "\" (slingshot-client status lists them)");
  if (k->is_home) return Status::InvalidArgument("home holds the primary replica: it cannot be left");
  k->leaving = true;
  // The agent destroys the replica and ends the session; RunLink drops it
  // (choosing another leader if it led). An agent that does not answer is
  // cut off (it then keeps the replica until it gives up on us).
  k->conn->Post(wire::Leave{});
  for (int t = 0; t < 100 && !i.set->IsGone(k->member); ++t) std::this_thread::sleep_for(std::chrono::milliseconds(30));
  k->conn->Close();
  return Status::OK();
}

control::ProxyStatus Proxy::status() const {
  Impl& i = *impl_;
  control::ProxyStatus s;
  s.service = i.options.service;
  s.last_seq = i.log->last_seq();
  s.truncated_seq = i.log->truncated_seq();
  s.vnc_port = i.vnc_port;
  s.switches = i.set->switches();
  s.replicas = i.set->Views();
  MutexLock l(&i.mu);
  s.stopped = i.stopped;
  s.refusing = i.refusing;
  return s;
}

Status Proxy::Use(const control::UseRequest& where, const std::function<void(const control::Event&)>& report) {
  Impl& i = *impl_;
  const auto start = Clock::now();
  auto elapsed = [&] { return static_cast<int64_t>(Ms(Clock::now() - start)); };
  {
    MutexLock l(&i.mu);
    if (!i.stopped.empty()) return Status::Unavailable("this proxy takes no more input: " + i.stopped);
  }
  // A capability from home, for this service and this client.
  SLINGSHOT_ASSIGN_OR_RETURN(const wire::Capability cap, i.AskCapability());
  report(control::Note{"capability for " + cap.service + " valid until " + std::to_string(cap.not_after)});

  auto k = std::make_shared<Link>();
  k->name = where.host + ":" + std::to_string(where.port);
  k->host = where.host;
  k->port = where.port;
  ConnectOptions ao;
  ao.verify_server_ca = false;
  ao.server_fingerprint = where.fingerprint;
  ao.software = "slingshot-client";
  SLINGSHOT_ASSIGN_OR_RETURN(k->conn, Connection::Connect(where.host, where.port, i.options.creds, ao));
  k->fingerprint = k->conn->peer().fingerprint;  // a new session goes to this agent only
  // The log keeps what the new replica will need until it has it.
  k->member = i.set->Add(k->name, false, k.get(), /*pin=*/true);
  auto fail = [&](Status st) {
    i.set->Remove(k->member);
    return st;
  };
  wire::Instantiate in;
  in.service = i.options.service;
  in.home_host = i.options.home_host;
  in.home_port = i.options.home_port;
  in.ca_pem = i.options.creds.ca_pem;
  in.manifest_key.assign(i.options.manifest_key.raw().begin(), i.options.manifest_key.raw().end());
  in.cert_pem = cap.cert_pem;
  in.key_pem = cap.key_pem;
  in.stick_dir = where.stick;
  in.signed_manifest = cap.signed_manifest;
  if (Status sent = k->conn->Send(1, in); !sent.ok()) return fail(sent);
  wire::Attached attached;
  for (;;) {
    auto f = k->conn->Receive(600000);
    if (!f.ok()) return fail(f.status());
    if (auto* p = std::get_if<wire::Progress>(&f->message)) {
      report(control::Progress{p->phase, p->done, p->total, p->from_cache, p->from_stick, p->from_home, elapsed()});
      continue;
    }
    if (auto* e = std::get_if<wire::Error>(&f->message)) return fail(e->ToStatus(k->conn->peer().Describe()));
    if (auto* a = std::get_if<wire::Attached>(&f->message)) {
      attached = *a;
      break;
    }
    return fail(Status::Corruption(std::string("the agent sent ") + wire::MessageTypeName(wire::TypeOf(f->message)) +
                                   " during instantiation"));
  }
  {
    MutexLock l(&i.mu);
    ++i.running_links;
  }
  std::thread([&i, k, attached] {
    i.RunSurrogate(k, attached);
    MutexLock l(&i.mu);
    --i.running_links;
    i.cv.SignalAll();
  }).detach();
  // Wait until it has been sent the whole log (or died).
  if (!i.set->WaitLive(k->member, std::chrono::seconds(600))) {
    return Status::Unavailable("replica " + attached.replica + " was lost while catching up");
  }
  report(control::Ready{attached.replica, attached.consumed_seq, elapsed()});
  return Status::OK();
}

}  // namespace slingshot
