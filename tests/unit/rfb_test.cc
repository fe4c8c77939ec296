// The "rfb" ServiceAdapter against a real libvncserver in this process: inputs
// reach the service in order, the barrier means what it says, screen
// updates and the kept copy match the server's framebuffer, and bad input
// or a vanished service give clear errors.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rfb/rfb.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "slingshot/service/rfb.h"
#include "slingshot/service/service_adapter.h"

namespace slingshot::testing {
namespace {

constexpr int kW = 64, kH = 48;

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t n = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  close(fd);
  return ntohs(a.sin_port);
}

// A libvncserver service: each key press is recorded and paints one pixel.
class TestService {
 public:
  TestService() : fb_(kW * kH, 0) {
    rfbLogEnable(0);
    screen_ = rfbGetScreen(nullptr, nullptr, kW, kH, 8, 3, 4);
    screen_->serverFormat.redShift = 16;
    screen_->serverFormat.greenShift = 8;
    screen_->serverFormat.blueShift = 0;
    screen_->frameBuffer = reinterpret_cast<char*>(fb_.data());
    screen_->port = FreePort();
    screen_->ipv6port = 0;
    screen_->listenInterface = htonl(INADDR_LOOPBACK);
    screen_->alwaysShared = TRUE;
    screen_->cursor = nullptr;  // no cursor painted into the pixels compared below
    screen_->screenData = this;
    screen_->kbdAddEvent = [](rfbBool down, rfbKeySym k, rfbClientPtr cl) {
      auto* self = static_cast<TestService*>(cl->screen->screenData);
      if (!down) return;
      std::lock_guard<std::mutex> l(self->mu_);
      size_t i = self->keys_.size();
      self->keys_.push_back(k);
      int x = static_cast<int>(i % kW), y = static_cast<int>(i / kW % kH);
      self->fb_[size_t(y) * kW + x] = 0x00ff0000u | (k & 0xffff);
      rfbMarkRectAsModified(self->screen_, x, y, x + 1, y + 1);
    };
    rfbInitServer(screen_);
    // One loop thread of our own: libvncserver's threaded mode frees client
    // state under its client threads when the server shuts down.
    loop_ = std::thread([this] {
      while (running_) rfbProcessEvents(screen_, 2000);
    });
  }
  ~TestService() { Stop(); }
  void Stop() {
    if (!screen_) return;
    running_ = false;
    loop_.join();
    rfbShutdownServer(screen_, TRUE);
    rfbScreenCleanup(screen_);
    screen_ = nullptr;
  }
  Endpoint endpoint() const { return Endpoint{"127.0.0.1", static_cast<uint16_t>(screen_->port)}; }
  std::vector<uint32_t> keys() {
    std::lock_guard<std::mutex> l(mu_);
    return keys_;
  }
  Bytes Pixels() {
    std::lock_guard<std::mutex> l(mu_);
    Bytes b(fb_.size() * 4);
    std::memcpy(b.data(), fb_.data(), b.size());
    return b;
  }

 private:
  std::vector<uint32_t> fb_;
  rfbScreenInfoPtr screen_ = nullptr;
  std::atomic<bool> running_{true};
  std::thread loop_;
  std::mutex mu_;
  std::vector<uint32_t> keys_;
};

// Applies a Screen message to a kW x kH framebuffer.
void Apply(const wire::Screen& s, Bytes* fb) {
  for (const auto& r : s.rects) {
    Bytes px = r.data;
    if (r.codec == 1) {
      px.resize(size_t(r.w) * r.h * 4);
      ASSERT_EQ(ZSTD_decompress(px.data(), px.size(), r.data.data(), r.data.size()), px.size());
    }
    for (int row = 0; row < r.h; ++row) {
      std::memcpy(&(*fb)[(size_t(r.y + row) * kW + r.x) * 4], &px[size_t(row) * r.w * 4], size_t(r.w) * 4);
    }
  }
}

struct Seen {
  std::mutex mu;
  Bytes fb = Bytes(size_t(kW) * kH * 4, 0);
  uint64_t last_consumed = 0;
  int updates = 0;
  std::atomic<bool> lost{false};
};

ServiceCallbacks Watch(Seen* seen) {
  ServiceCallbacks cb;
  cb.on_screen = [seen](wire::Screen&& s) {
    std::lock_guard<std::mutex> l(seen->mu);
    Apply(s, &seen->fb);
    ++seen->updates;
  };
  cb.on_consumed = [seen](uint64_t seq) {
    std::lock_guard<std::mutex> l(seen->mu);
    EXPECT_GE(seq, seen->last_consumed);
    seen->last_consumed = seq;
  };
  cb.on_lost = [seen](const Status&) { seen->lost = true; };
  return cb;
}

wire::Input Key(uint64_t seq, uint32_t keysym) { return wire::Input{seq, rfb::kKey, rfb::KeyEvent(true, keysym)}; }

template <class F>
bool Eventually(F f, int ms = 5000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f();
}

TEST(RfbAdapterTest, InputsArriveInOrderAndTheBarrierMeansConsumed) {
  TestService service;
  Seen seen;
  auto a = ServiceAdapter::Open("rfb", service.endpoint(), 100, Watch(&seen), 5000);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)->width(), kW);
  EXPECT_EQ((*a)->applied(), 100u);
  for (uint64_t seq = 101; seq <= 400; ++seq) {
    ASSERT_TRUE((*a)->Apply(Key(seq, 0x1000 + uint32_t(seq))).ok());
  }
  ASSERT_TRUE((*a)->Barrier(10000).ok());
  EXPECT_EQ((*a)->consumed(), 400u);
  // The barrier returned only after the service had every key, in order.
  auto keys = service.keys();
  ASSERT_EQ(keys.size(), 300u);
  for (size_t i = 0; i < keys.size(); ++i) ASSERT_EQ(keys[i], 0x1000 + 101 + i);
  // The callback runs just after the barrier's state changes.
  EXPECT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(seen.mu);
    return seen.last_consumed == 400u;
  }));
  // Screen updates passed on, and the kept copy, both reach the server's pixels.
  Bytes want = service.Pixels();
  EXPECT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(seen.mu);
    return seen.fb == want;
  }));
  EXPECT_GT(seen.updates, 0);
  Bytes full(want.size(), 0);
  wire::Screen s = (*a)->FullScreen();
  EXPECT_TRUE(s.full);
  Apply(s, &full);
  EXPECT_EQ(full, want);
}

TEST(RfbAdapterTest, ReplaysOverlapButNeverSkip) {
  TestService service;
  Seen seen;
  auto a = ServiceAdapter::Open("rfb", service.endpoint(), 0, Watch(&seen), 5000);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  for (uint64_t seq = 1; seq <= 5; ++seq) ASSERT_TRUE((*a)->Apply(Key(seq, 'a')).ok());
  // An overlapping replay is ignored; a gap is refused and changes nothing.
  EXPECT_TRUE((*a)->Apply(Key(3, 'z')).ok());
  Status gap = (*a)->Apply(Key(7, 'z'));
  EXPECT_EQ(gap.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(gap.message().find("without gaps"), std::string::npos) << gap.ToString();
  Status bad = (*a)->Apply(wire::Input{6, rfb::kKey, Bytes{4, 1, 0}});
  EXPECT_EQ(bad.code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE((*a)->Barrier(5000).ok());
  EXPECT_EQ(service.keys(), std::vector<uint32_t>(5, 'a'));
}

TEST(RfbAdapterTest, InputsAreCheckedByShape) {
  EXPECT_TRUE(rfb::CheckInput(rfb::kKey, rfb::KeyEvent(true, 'x')).ok());
  EXPECT_TRUE(rfb::CheckInput(rfb::kPointer, rfb::PointerEvent(1, 10, 20)).ok());
  EXPECT_TRUE(rfb::CheckInput(rfb::kCutText, rfb::CutText("hello")).ok());
  Bytes key = rfb::KeyEvent(true, 'x');
  key[1] = 2;
  EXPECT_FALSE(rfb::CheckInput(rfb::kKey, key).ok());
  Bytes cut = rfb::CutText("hello");
  cut[7] = 9;  // the length lies
  EXPECT_FALSE(rfb::CheckInput(rfb::kCutText, cut).ok());
  EXPECT_FALSE(rfb::CheckInput(rfb::kPointer, rfb::KeyEvent(true, 'x')).ok());
  EXPECT_FALSE(rfb::CheckInput(9, rfb::KeyEvent(true, 'x')).ok());
  EXPECT_EQ(ServiceAdapter::CheckInput("speech", 1, {}).code(), Status::Code::kUnsupported);
}

TEST(RfbAdapterTest, AVanishedServiceIsReportedAndBarriersFail) {
  auto service = std::make_unique<TestService>();
  Seen seen;
  auto a = ServiceAdapter::Open("rfb", service->endpoint(), 0, Watch(&seen), 5000);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE((*a)->Apply(Key(1, 'a')).ok());
  ASSERT_TRUE((*a)->Barrier(5000).ok());
  service->Stop();
  EXPECT_TRUE(Eventually([&] { return seen.lost.load(); }));
  (void)(*a)->Apply(Key(2, 'b'));  // may or may not reach the dead socket first
  EXPECT_FALSE((*a)->Barrier(2000).ok());
  // Nothing listens any more: opening says so.
  auto again = ServiceAdapter::Open("rfb", Endpoint{"127.0.0.1", FreePort()}, 0, {}, 2000);
  EXPECT_EQ(again.status().code(), Status::Code::kUnavailable);
}

}  // namespace
}  // namespace slingshot::testing
