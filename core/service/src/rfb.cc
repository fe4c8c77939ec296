// The "rfb" ServiceAdapter (service_adapter.h) and the RFB input codec
// (rfb.h).
//
// The RFB client here is our own rather than libvncclient: the adapter
// forwards logged client messages byte for byte, needs exact accounting of
// one outstanding update request per session (the barrier), must bound every
// length the VM sends, and runs two sessions on threads of its own. That is
// a few hundred lines of RFC 6143 with Raw encoding only, against a library
// that owns its socket, its loop and a process-wide log.
#include "slingshot/service/rfb.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "slingshot/base/coding.h"
#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"
#include "slingshot/service/service_adapter.h"

namespace slingshot {
namespace rfb {

namespace {
void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
void PutBe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}
uint16_t GetBe16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t GetBe32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
}  // namespace

Bytes KeyEvent(bool down, uint32_t keysym) {
  Bytes b(8, 0);
  b[0] = 4;
  b[1] = down ? 1 : 0;
  PutBe32(&b[4], keysym);
  return b;
}

Bytes PointerEvent(uint8_t buttons, uint16_t x, uint16_t y) {
  Bytes b(6, 0);
  b[0] = 5;
  b[1] = buttons;
  PutBe16(&b[2], x);
  PutBe16(&b[4], y);
  return b;
}

Bytes CutText(std::string_view latin1) {
  if (latin1.size() > kMaxCutText) latin1 = latin1.substr(0, kMaxCutText);
  Bytes b(8 + latin1.size(), 0);
  b[0] = 6;
  PutBe32(&b[4], static_cast<uint32_t>(latin1.size()));
  std::memcpy(b.data() + 8, latin1.data(), latin1.size());
  return b;
}

Status CheckInput(uint16_t type, ByteView p) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("input of type " + std::to_string(type) + " (" + std::to_string(p.size()) +
                                   " bytes) is not a well-formed RFB message: " + why);
  };
  switch (type) {
    case kKey:
      if (p.size() != 8 || p[0] != 4) return bad("a KeyEvent is 8 bytes starting with 4");
      if (p[1] > 1) return bad("down-flag " + std::to_string(p[1]));
      return Status::OK();
    case kPointer:
      if (p.size() != 6 || p[0] != 5) return bad("a PointerEvent is 6 bytes starting with 5");
      return Status::OK();
    case kCutText: {
      if (p.size() < 8 || p[0] != 6) return bad("a ClientCutText starts with 6 and an 8-byte header");
      uint32_t n = GetBe32(&p[4]);
      if (n > kMaxCutText || p.size() != 8 + size_t(n)) return bad("its length field says " + std::to_string(n));
      return Status::OK();
    }
  }
  return Status::InvalidArgument("input type " + std::to_string(type) +
                                 " is not an RFB input (1 key, 2 pointer, 3 cut text)");
}

}  // namespace rfb

namespace {

using rfb::GetBe16;
using rfb::GetBe32;
using rfb::PutBe16;
using rfb::PutBe32;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kMaxServerText = 1u << 20;  // names, cut text from the VM

// A blocking TCP socket whose reads and writes take deadlines; Shutdown()
// from another thread wakes a blocked read.
class Socket {
 public:
  Socket() = default;
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  Status Connect(const Endpoint& ep, int timeout_ms) {
    what_ = "RFB service at " + ep.host + ":" + std::to_string(ep.port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &res);
    if (rc != 0) return Status::Unavailable("cannot resolve " + ep.host + ": " + gai_strerror(rc));
    Status last = Status::Unavailable("no address for " + ep.host);
    for (addrinfo* a = res; a; a = a->ai_next) {
      int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fd_ = fd;
        break;
      }
      last = Status::Unavailable("cannot connect to the " + what_ + ": " + strerror(errno));
      ::close(fd);
    }
    freeaddrinfo(res);
    (void)timeout_ms;  // local connects finish or fail at once
    return fd_ >= 0 ? Status::OK() : last;
  }

  // timeout_ms < 0: no deadline (reader threads, woken by Shutdown).
  Status Read(uint8_t* p, size_t n, int timeout_ms) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
    while (n > 0) {
      if (timeout_ms >= 0) {
        int left = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
        if (left <= 0) return Status::Unavailable("the " + what_ + " did not answer in time");
        pollfd pfd{fd_, POLLIN, 0};
        int r = ::poll(&pfd, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) continue;
      }
      ssize_t got = ::recv(fd_, p, n, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return Status::Unavailable("reading from the " + what_ + ": " + strerror(errno));
      if (got == 0) return Status::Unavailable("the " + what_ + " closed the connection");
      p += got;
      n -= static_cast<size_t>(got);
    }
    return Status::OK();
  }

  Status Write(ByteView b) {
    const uint8_t* p = b.data();
    size_t n = b.size();
    while (n > 0) {
      ssize_t put = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (put < 0 && errno == EINTR) continue;
      if (put < 0) return Status::Unavailable("writing to the " + what_ + ": " + strerror(errno));
      p += put;
      n -= static_cast<size_t>(put);
    }
    return Status::OK();
  }

  void Shutdown() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  }
  const std::string& what() const { return what_; }

 private:
  int fd_ = -1;
  std::string what_;
};

struct ServerInit {
  uint16_t width = 0, height = 0;
};

// The RFB handshake up to and including our pixel format and encodings.
Result<ServerInit> Handshake(Socket& s, int timeout_ms) {
  uint8_t version[12];
  SLINGSHOT_RETURN_IF_ERROR(s.Read(version, 12, timeout_ms));
  if (std::memcmp(version, "RFB 003.", 8) != 0 || version[11] != '\n') {
    return Status::Corruption("the " + s.what() + " does not speak RFB (bad version banner)");
  }
  int minor = (version[8] - '0') * 100 + (version[9] - '0') * 10 + (version[10] - '0');
  if (minor < 3) return Status::Unsupported("the " + s.what() + " speaks RFB 3." + std::to_string(minor));
  minor = minor >= 8 ? 8 : (minor >= 7 ? 7 : 3);
  std::string mine = "RFB 003.00" + std::to_string(minor) + "\n";
  SLINGSHOT_RETURN_IF_ERROR(s.Write(ByteView(reinterpret_cast<const uint8_t*>(mine.data()), mine.size())));

  auto reason = [&](const std::string& what) -> Status {
    uint8_t len[4];
    SLINGSHOT_RETURN_IF_ERROR(s.Read(len, 4, timeout_ms));
    uint32_t n = GetBe32(len);
    if (n > 4096) return Status::Corruption("the " + s.what() + " sent a " + std::to_string(n) + "-byte reason");
    std::string text(n, '\0');
    SLINGSHOT_RETURN_IF_ERROR(s.Read(reinterpret_cast<uint8_t*>(text.data()), n, timeout_ms));
    return Status::PermissionDenied("the " + s.what() + " refused the session (" + what + "): " + text);
  };

  if (minor == 3) {
    uint8_t t[4];
    SLINGSHOT_RETURN_IF_ERROR(s.Read(t, 4, timeout_ms));
    uint32_t type = GetBe32(t);
    if (type == 0) return reason("security");
    if (type != 1) {
      return Status::Unsupported("the " + s.what() + " demands RFB security type " + std::to_string(type) +
                                 "; a replica's service must allow type None (it is reachable only by its host)");
    }
  } else {
    uint8_t n;
    SLINGSHOT_RETURN_IF_ERROR(s.Read(&n, 1, timeout_ms));
    if (n == 0) return reason("security");
    uint8_t types[255];
    SLINGSHOT_RETURN_IF_ERROR(s.Read(types, n, timeout_ms));
    if (std::find(types, types + n, uint8_t{1}) == types + n) {
      return Status::Unsupported("the " + s.what() +
                                 " does not offer RFB security type None; a replica's service must allow it");
    }
    uint8_t none = 1;
    SLINGSHOT_RETURN_IF_ERROR(s.Write(ByteView(&none, 1)));
    if (minor == 8) {
      uint8_t r[4];
      SLINGSHOT_RETURN_IF_ERROR(s.Read(r, 4, timeout_ms));
      if (GetBe32(r) != 0) return reason("security result");
    }
  }
  uint8_t shared = 1;  // both of our sessions, and others, share the desktop
  SLINGSHOT_RETURN_IF_ERROR(s.Write(ByteView(&shared, 1)));

  uint8_t init[24];
  SLINGSHOT_RETURN_IF_ERROR(s.Read(init, 24, timeout_ms));
  ServerInit si;
  si.width = GetBe16(init);
  si.height = GetBe16(init + 2);
  uint32_t name_len = GetBe32(init + 20);
  if (si.width == 0 || si.height == 0 || si.width > wire::kMaxScreenSide || si.height > wire::kMaxScreenSide) {
    return Status::Corruption("the " + s.what() + " reports a " + std::to_string(si.width) + "x" +
                              std::to_string(si.height) + " screen");
  }
  if (name_len > 4096) return Status::Corruption("the " + s.what() + " sent a " + std::to_string(name_len) + "-byte name");
  std::string name(name_len, '\0');
  SLINGSHOT_RETURN_IF_ERROR(s.Read(reinterpret_cast<uint8_t*>(name.data()), name_len, timeout_ms));

  // SetPixelFormat: 32 bpp, depth 24, little-endian true colour, 0x00RRGGBB.
  uint8_t pf[20] = {0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0};
  // SetEncodings: Raw only.
  uint8_t enc[8] = {2, 0, 0, 1, 0, 0, 0, 0};
  SLINGSHOT_RETURN_IF_ERROR(s.Write(ByteView(pf, sizeof(pf))));
  SLINGSHOT_RETURN_IF_ERROR(s.Write(ByteView(enc, sizeof(enc))));
  return si;
}

Bytes UpdateRequest(bool incremental, uint16_t x, uint16_t y, uint16_t w, uint16_t h) {
  Bytes b(10);
  b[0] = 3;
  b[1] = incremental ? 1 : 0;
  PutBe16(&b[2], x);
  PutBe16(&b[4], y);
  PutBe16(&b[6], w);
  PutBe16(&b[8], h);
  return b;
}

struct RawRect {
  uint16_t x, y, w, h;
  Bytes pixels;  // w*h*4, 0x00RRGGBB little-endian
};

// Reads one server message. Returns true with rects filled for a
// FramebufferUpdate, false for any other (skipped) message.
Result<bool> ReadServerMessage(Socket& s, const ServerInit& si, std::vector<RawRect>* rects) {
  uint8_t type;
  SLINGSHOT_RETURN_IF_ERROR(s.Read(&type, 1, -1));
  switch (type) {
    case 0: {  // FramebufferUpdate
      uint8_t h[3];
      SLINGSHOT_RETURN_IF_ERROR(s.Read(h, 3, 10000));
      uint16_t n = GetBe16(h + 1);
      rects->clear();
      rects->reserve(n);
      for (uint16_t i = 0; i < n; ++i) {
        uint8_t r[12];
        SLINGSHOT_RETURN_IF_ERROR(s.Read(r, 12, 10000));
        RawRect rr{GetBe16(r), GetBe16(r + 2), GetBe16(r + 4), GetBe16(r + 6), {}};
        int32_t encoding = static_cast<int32_t>(GetBe32(r + 8));
        if (encoding != 0) {
          return Status::Corruption("the " + s.what() + " sent encoding " + std::to_string(encoding) +
                                    ", which was not asked for (Raw only)");
        }
        if (uint32_t(rr.x) + rr.w > si.width || uint32_t(rr.y) + rr.h > si.height) {
          return Status::Corruption("the " + s.what() + " sent a rectangle outside its screen");
        }
        if (rr.w == 0 || rr.h == 0) continue;
        rr.pixels.resize(size_t(rr.w) * rr.h * 4);
        SLINGSHOT_RETURN_IF_ERROR(s.Read(rr.pixels.data(), rr.pixels.size(), 10000));
        rects->push_back(std::move(rr));
      }
      return true;
    }
    case 1: {  // SetColourMapEntries: not used in true colour; skip
      uint8_t h[5];
      SLINGSHOT_RETURN_IF_ERROR(s.Read(h, 5, 10000));
      Bytes skip(size_t(GetBe16(h + 3)) * 6);
      SLINGSHOT_RETURN_IF_ERROR(s.Read(skip.data(), skip.size(), 10000));
      return false;
    }
    case 2:  // Bell
      return false;
    case 3: {  // ServerCutText
      uint8_t h[7];
      SLINGSHOT_RETURN_IF_ERROR(s.Read(h, 7, 10000));
      uint32_t n = GetBe32(h + 3);
      if (n > kMaxServerText) return Status::Corruption("the " + s.what() + " sent " + std::to_string(n) + " bytes of cut text");
      Bytes skip(n);
      SLINGSHOT_RETURN_IF_ERROR(s.Read(skip.data(), n, 10000));
      return false;
    }
  }
  return Status::Corruption("the " + s.what() + " sent message type " + std::to_string(type) +
                            ", which RFB 3.8 without extensions does not have");
}

wire::ScreenRect Pack(uint16_t x, uint16_t y, uint16_t w, uint16_t h, Bytes pixels) {
  wire::ScreenRect r{x, y, w, h, 0, {}};
  if (pixels.size() >= 4096) {
    Bytes z(ZSTD_compressBound(pixels.size()));
    size_t n = ZSTD_compress(z.data(), z.size(), pixels.data(), pixels.size(), 1);
    if (!ZSTD_isError(n) && n < pixels.size()) {
      z.resize(n);
      r.codec = 1;
      r.data = std::move(z);
      return r;
    }
  }
  r.data = std::move(pixels);
  return r;
}

class RfbAdapter : public ServiceAdapter {
 public:
  RfbAdapter(uint64_t consumed, ServiceCallbacks cb)
      : callbacks_(std::move(cb)), applied_(consumed), consumed_(consumed), probe_seq_(consumed) {}
  ~RfbAdapter() override { Close(); }

  Status Open(const Endpoint& ep, int timeout_ms) {
    // The input session connects first. Servers commonly serve their
    // clients newest first (libvncserver does), so the screen session's
    // update goes out before the reply to the input session's probe, which
    // would otherwise hold it back by one more send from the VM.
    SLINGSHOT_RETURN_IF_ERROR(in_.Connect(ep, timeout_ms));
    SLINGSHOT_RETURN_IF_ERROR(out_.Connect(ep, timeout_ms));
    // Both handshakes at once: each waits on the service four times, and a
    // just-restored VM is slow to answer each.
    Result<ServerInit> out_init = Status::Unavailable("the " + out_.what() + " handshake did not run");
    std::thread screen([&] { out_init = Handshake(out_, timeout_ms); });
    auto in_init = Handshake(in_, timeout_ms);
    if (!in_init.ok()) out_.Shutdown();  // no need to wait out its deadline
    screen.join();
    SLINGSHOT_RETURN_IF_ERROR(in_init.status());
    SLINGSHOT_RETURN_IF_ERROR(out_init.status());
    si_ = *in_init;
    const ServerInit& si2 = *out_init;
    if (si2.width != si_.width || si2.height != si_.height) {
      return Status::Corruption("the " + out_.what() + " reported two screen sizes");
    }
    {
      MutexLock l(&fb_mu_);  // no reader runs yet; the lock keeps the analysis exact
      fb_.assign(size_t(si_.width) * si_.height * 4, 0);
    }
    // The first full screen, before anything is passed on.
    SLINGSHOT_RETURN_IF_ERROR(out_.Write(UpdateRequest(false, 0, 0, si_.width, si_.height)));
    std::vector<RawRect> rects;
    for (;;) {
      SLINGSHOT_ASSIGN_OR_RETURN(bool update, ReadServerMessage(out_, si_, &rects));
      if (update) break;
    }
    for (auto& r : rects) Blit(r);
    SLINGSHOT_RETURN_IF_ERROR(out_.Write(UpdateRequest(true, 0, 0, si_.width, si_.height)));
    output_thread_ = std::thread([this] { OutputLoop(); });
    input_thread_ = std::thread([this] { InputLoop(); });
    return Status::OK();
  }

  Status Apply(const wire::Input& in) override {
    SLINGSHOT_RETURN_IF_ERROR(rfb::CheckInput(in.type, in.payload));
    MutexLock w(&write_mu_);
    uint64_t applied;
    bool probe;  // write_mu_ keeps probe_out_ as read until the write is done
    {
      MutexLock l(&mu_);
      if (!lost_.ok()) return lost_;
      applied = applied_;
      probe = !probe_out_;
    }
    if (in.seq <= applied) return Status::OK();
    if (in.seq != applied + 1) {
      return Status::InvalidArgument("input " + std::to_string(in.seq) + " arrived after " +
                                     std::to_string(applied) + ": inputs must be replayed in order, without gaps");
    }
    // The input and the probe that follows it go in one send: one segment
    // for the VM to take in, not two.
    Bytes out = in.payload;
    if (probe) {
      Bytes request = UpdateRequest(false, 0, 0, 1, 1);
      out.insert(out.end(), request.begin(), request.end());
    }
    SLINGSHOT_RETURN_IF_ERROR(in_.Write(out));
    MutexLock l(&mu_);
    applied_ = in.seq;
    if (probe) {
      probe_out_ = true;
      probe_seq_ = applied_;
    }
    return Status::OK();
  }

  uint64_t applied() const override {
    MutexLock l(&mu_);
    return applied_;
  }
  uint64_t consumed() const override {
    MutexLock l(&mu_);
    return consumed_;
  }

  Status Barrier(int timeout_ms) override {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    MutexLock l(&mu_);
    for (;;) {
      if (!lost_.ok()) return lost_;
      if (consumed_ >= applied_) break;
      auto left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) {
        return Status::Unavailable("the service consumed inputs up to " + std::to_string(consumed_) + " of " +
                                   std::to_string(applied_) + " within " + std::to_string(timeout_ms) + " ms");
      }
      cv_.WaitFor(&mu_, left);
    }
    return Status::OK();
  }

  wire::Screen FullScreen() const override {
    Bytes copy;
    {
      MutexLock l(&fb_mu_);
      copy = fb_;
    }
    wire::Screen s;
    s.full = true;
    s.rects.push_back(Pack(0, 0, si_.width, si_.height, std::move(copy)));
    return s;
  }
  uint16_t width() const override { return si_.width; }
  uint16_t height() const override { return si_.height; }

  void Close() override {
    closing_ = true;
    out_.Shutdown();
    in_.Shutdown();
    if (output_thread_.joinable()) output_thread_.join();
    if (input_thread_.joinable()) input_thread_.join();
  }

 private:
  void Blit(const RawRect& r) {
    MutexLock l(&fb_mu_);
    for (uint16_t row = 0; row < r.h; ++row) {
      std::memcpy(&fb_[(size_t(r.y + row) * si_.width + r.x) * 4], &r.pixels[size_t(row) * r.w * 4], size_t(r.w) * 4);
    }
  }

  void Lost(const Status& why) {
    if (closing_) return;
    {
      MutexLock l(&mu_);
      if (!lost_.ok()) return;
      lost_ = why;
      cv_.SignalAll();
    }
    LogWarning("lost the service: " + why.message());
    if (callbacks_.on_lost) callbacks_.on_lost(why);
  }

  // Appends to out the parts of r that differ from the kept copy: bands of
  // consecutive changed rows, each cut to its changed columns. Services
  // often repaint far more than changed (the notepad redraws its whole
  // screen per key); only what changed crosses the network.
  void Changed(const RawRect& r, std::vector<wire::ScreenRect>* out) {
    MutexLock l(&fb_mu_);
    const auto* fresh = reinterpret_cast<const uint32_t*>(r.pixels.data());
    const auto* kept = reinterpret_cast<const uint32_t*>(fb_.data());
    int band_top = -1, lo = r.w, hi = -1;
    auto flush = [&](int bottom) {
      if (band_top < 0) return;
      uint16_t w = static_cast<uint16_t>(hi - lo + 1), h = static_cast<uint16_t>(bottom - band_top);
      Bytes px(size_t(w) * h * 4);
      for (int row = 0; row < h; ++row) {
        std::memcpy(&px[size_t(row) * w * 4], fresh + size_t(band_top + row) * r.w + lo, size_t(w) * 4);
      }
      out->push_back(Pack(static_cast<uint16_t>(r.x + lo), static_cast<uint16_t>(r.y + band_top), w, h, std::move(px)));
      band_top = -1;
      lo = r.w;
      hi = -1;
    };
    for (int row = 0; row < r.h; ++row) {
      const uint32_t* a = fresh + size_t(row) * r.w;
      const uint32_t* b = kept + size_t(r.y + row) * si_.width + r.x;
      int first = 0, last = r.w - 1;
      while (first < r.w && a[first] == b[first]) ++first;
      if (first == r.w) {
        flush(row);
        continue;
      }
      while (last > first && a[last] == b[last]) --last;
      if (band_top < 0) band_top = row;
      lo = std::min(lo, first);
      hi = std::max(hi, last);
    }
    flush(r.h);
  }

  void OutputLoop() {
    std::vector<RawRect> rects;
    for (;;) {
      auto update = ReadServerMessage(out_, si_, &rects);
      if (!update.ok()) return Lost(update.status());
      if (!*update) continue;
      wire::Screen screen;
      for (auto& r : rects) {
        Changed(r, &screen.rects);
        Blit(r);
      }
      // Pass this one on before asking for the next: the request's send
      // costs as much as the hop to the client, and the user waits for
      // this screen, not the next.
      if (!screen.rects.empty() && callbacks_.on_screen) callbacks_.on_screen(std::move(screen));
      Status w = out_.Write(UpdateRequest(true, 0, 0, si_.width, si_.height));
      if (!w.ok()) return Lost(w);
    }
  }

  void InputLoop() {
    std::vector<RawRect> rects;
    for (;;) {
      auto update = ReadServerMessage(in_, si_, &rects);
      if (!update.ok()) return Lost(update.status());
      if (!*update) continue;
      // The reply to our one outstanding probe: everything sent before it
      // has been handled.
      uint64_t consumed;
      bool again;
      {
        MutexLock w(&write_mu_);
        {
          MutexLock l(&mu_);
          consumed_ = probe_seq_;
          consumed = consumed_;
          again = applied_ > consumed_;
          probe_out_ = again;
          if (again) probe_seq_ = applied_;
          cv_.SignalAll();
        }
        if (again) {
          Status s = in_.Write(UpdateRequest(false, 0, 0, 1, 1));
          if (!s.ok()) return Lost(s);
        }
      }
      if (callbacks_.on_consumed) callbacks_.on_consumed(consumed);
    }
  }

  ServiceCallbacks callbacks_;
  Socket out_, in_;
  ServerInit si_;
  std::atomic<bool> closing_{false};
  std::thread output_thread_, input_thread_;

  mutable Mutex fb_mu_;
  Bytes fb_ GUARDED_BY(fb_mu_);

  Mutex write_mu_ ACQUIRED_BEFORE(mu_);  // orders writes on the input session
  mutable Mutex mu_;
  CondVar cv_;
  uint64_t applied_ GUARDED_BY(mu_);
  uint64_t consumed_ GUARDED_BY(mu_);
  uint64_t probe_seq_ GUARDED_BY(mu_);  // what the outstanding probe covers
  bool probe_out_ GUARDED_BY(mu_) = false;
  Status lost_ GUARDED_BY(mu_);
};

}  // namespace

ServiceType RfbServiceType() {
  ServiceType t;
  t.name = "rfb";
  t.open = [](const Endpoint& ep, uint64_t consumed_seq, ServiceCallbacks callbacks,
              int timeout_ms) -> Result<std::unique_ptr<ServiceAdapter>> {
    auto a = std::make_unique<RfbAdapter>(consumed_seq, std::move(callbacks));
    SLINGSHOT_RETURN_IF_ERROR(a->Open(ep, timeout_ms));
    return std::unique_ptr<ServiceAdapter>(std::move(a));
  };
  t.check_input = [](uint16_t input_type, ByteView payload) { return rfb::CheckInput(input_type, payload); };
  return t;
}

}  // namespace slingshot
