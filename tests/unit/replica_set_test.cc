// The client's side of replication (core/replica): input sequencing with
// group commit, replay, leader choice and switching, truncation pins; the
// proxy's control protocol and its framebuffer.
#include <gtest/gtest.h>
#include <zstd.h>

#include <thread>

#include "control.h"
#include "slingshot/base/mutex.h"
#include "slingshot/replica/input_sequencer.h"
#include "slingshot/replica/replica_set.h"
#include "slingshot/service/framebuffer.h"
#include "test_util.h"

namespace slingshot {
namespace {
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A replica's channel that records what the set sent it.
class Recorder final : public ReplicaChannel {
 public:
  void Post(wire::Message m) override {
    MutexLock l(&mu_);
    if (auto* in = std::get_if<wire::Input>(&m)) seqs_.push_back(in->seq);
    if (std::holds_alternative<wire::Repaint>(m)) ++repaints_;
  }
  std::vector<uint64_t> seqs() const {
    MutexLock l(&mu_);
    return seqs_;
  }
  int repaints() const {
    MutexLock l(&mu_);
    return repaints_;
  }

 private:
  mutable Mutex mu_;
  std::vector<uint64_t> seqs_ GUARDED_BY(mu_);
  int repaints_ GUARDED_BY(mu_) = 0;
};

wire::Attached At(const std::string& name, uint64_t seq) { return wire::Attached{"notes", name, 16, 8, seq}; }

class ReplicaSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = EventLog::Open(tmp_ / "log");
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    log_ = std::move(*l);
    ReplicaSetOptions o;
    o.now = [this] { return now_; };
    set_ = std::make_unique<ReplicaSet>(log_.get(), o);
    seq_ = std::make_unique<InputSequencer>(log_.get(), InputSequencerOptions{},
                                            [this](std::vector<wire::Input>&& in) { set_->Fanout(std::move(in)); });
  }
  void Type(int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(seq_->Input(1, Bytes{uint8_t(i)}, false).ok());
  }
  // A live replica that has consumed everything so far.
  ReplicaSet::Handle Live(const std::string& name, Recorder* r) {
    auto m = set_->Add(name, name == "home", r, false);
    EXPECT_TRUE(set_->Attached(m, At(name, log_->last_seq())).ok());
    return m;
  }
  void Advance(std::chrono::milliseconds d) { now_ += d; }

  testing::TempDir tmp_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<ReplicaSet> set_;
  std::unique_ptr<InputSequencer> seq_;
  Clock::time_point now_ = Clock::now();
};

TEST_F(ReplicaSetTest, InputsAreLoggedThenSentToEveryLiveReplicaInOrder) {
  Recorder a, b;
  Live("home", &a);
  Live("cafe", &b);
  Type(3);
  EXPECT_EQ(a.seqs(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(b.seqs(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(log_->last_seq(), 3u);
  EXPECT_EQ(set_->posted_seq(), 3u);
}

TEST_F(ReplicaSetTest, AnInputFollowedByAWaitingKeyIsHeldForOneSharedSync) {
  Recorder a;
  Live("home", &a);
  ASSERT_TRUE(seq_->Input(1, Bytes{1}, /*another_waiting=*/true).ok());
  EXPECT_EQ(seq_->held(), 1u);
  EXPECT_TRUE(a.seqs().empty());  // not sent before it is durable
  ASSERT_TRUE(seq_->Input(1, Bytes{2}, false).ok());
  EXPECT_EQ(seq_->held(), 0u);
  EXPECT_EQ(a.seqs(), (std::vector<uint64_t>{1, 2}));
}

TEST_F(ReplicaSetTest, AHeldInputGoesOutWhenTheViewerLeaves) {
  Recorder a;
  Live("home", &a);
  ASSERT_TRUE(seq_->Input(1, Bytes{1}, true).ok());
  ASSERT_TRUE(seq_->Flush().ok());
  EXPECT_EQ(a.seqs(), (std::vector<uint64_t>{1}));
}

TEST_F(ReplicaSetTest, NoMoreThanMaxHeldShareASync) {
  InputSequencerOptions o;
  o.max_held = 4;
  std::vector<uint64_t> sent;
  InputSequencer s(log_.get(), o, [&](std::vector<wire::Input>&& in) {
    for (auto& i : in) sent.push_back(i.seq);
  });
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(s.Input(1, Bytes{uint8_t(i)}, true).ok());
  EXPECT_LT(s.held(), 4u);
  EXPECT_GE(sent.size(), 7u);
  ASSERT_TRUE(s.Flush().ok());
  EXPECT_EQ(sent.size(), 10u);
}

TEST_F(ReplicaSetTest, WithoutSyncNothingIsHeld) {
  InputSequencerOptions o;
  o.sync_every_input = false;
  int batches = 0;
  InputSequencer s(log_.get(), o, [&](std::vector<wire::Input>&&) { ++batches; });
  ASSERT_TRUE(s.Input(1, Bytes{1}, true).ok());
  EXPECT_EQ(s.held(), 0u);
  EXPECT_EQ(batches, 1);
}

TEST_F(ReplicaSetTest, ANewReplicaIsReplayedFromItsSeqThenJoins) {
  Recorder home, cafe;
  Live("home", &home);
  Type(5);
  auto m = set_->Add("cafe:7391", false, &cafe, true);
  EXPECT_FALSE(set_->IsLive(m));
  ASSERT_TRUE(set_->Attached(m, At("cafe", 2)).ok());
  EXPECT_TRUE(set_->IsLive(m));
  Type(1);
  EXPECT_EQ(cafe.seqs(), (std::vector<uint64_t>{3, 4, 5, 6}));
  EXPECT_EQ(home.seqs().back(), 6u);
}

TEST_F(ReplicaSetTest, AReplicaFromBeforeTheLogOrAfterItIsRefused) {
  Recorder r;
  Type(6);
  ASSERT_TRUE(log_->TruncateUpTo(3).ok());
  auto old = set_->Add("old", false, &r, false);
  auto a = set_->Attached(old, At("old", 2));
  EXPECT_TRUE(a.IsCorruption()) << a.ToString();
  EXPECT_NE(a.message().find("older than the home acknowledged"), std::string::npos);
  auto future = set_->Add("future", false, &r, false);
  auto b = set_->Attached(future, At("future", 9));
  EXPECT_TRUE(b.IsCorruption());
  EXPECT_NE(b.message().find("belongs to another service"), std::string::npos);
}

TEST_F(ReplicaSetTest, AReplicaWithAnotherScreenSizeIsRefused) {
  Recorder a, b;
  Live("home", &a);
  auto m = set_->Add("cafe", false, &b, false);
  wire::Attached big = At("cafe", 0);
  big.width = 1024;
  EXPECT_EQ(set_->Attached(m, big).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(set_->screen(), (std::pair<uint16_t, uint16_t>{16, 8}));
}

TEST_F(ReplicaSetTest, ThePinKeepsTheLogForAReplicaBeingMade) {
  Recorder home, cafe;
  Live("home", &home);
  Type(4);
  ASSERT_TRUE(log_->TruncateUpTo(1).ok());
  auto m = set_->Add("cafe:7391", false, &cafe, /*pin=*/true);  // pinned at 1
  Type(4);
  auto t = set_->Checkpointed(6);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 1u);  // not past the pin
  ASSERT_TRUE(set_->Attached(m, At("cafe", 1)).ok());  // it needs 2..8
  EXPECT_EQ(cafe.seqs().front(), 2u);
  t = set_->Checkpointed(6);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 6u);  // joined: unpinned
}

TEST_F(ReplicaSetTest, ARemovedReplicaReleasesItsPin) {
  Recorder r;
  Type(3);
  auto m = set_->Add("cafe:7391", false, &r, true);
  set_->Remove(m);
  EXPECT_TRUE(set_->IsGone(m));
  auto t = set_->Checkpointed(3);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 3u);
}

TEST_F(ReplicaSetTest, TheFastestCurrentReplicaLeadsAndIsRepainted) {
  Recorder home, cafe;
  auto h = Live("home", &home);
  auto c = Live("cafe", &cafe);
  for (int i = 0; i < 5; ++i) {
    Type(1);
    Advance(2ms);
    set_->Consumed(c, log_->last_seq());
    Advance(60ms);
    set_->Consumed(h, log_->last_seq());
  }
  EXPECT_TRUE(set_->IsLeader(c));
  EXPECT_GE(cafe.repaints(), 1);
  auto v = set_->Views();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_GT(v[0].latency_ms, v[1].latency_ms);  // home slower
}

TEST_F(ReplicaSetTest, ARivalMustBeClearlyFasterToTakeTheLead) {
  Recorder home, cafe;
  auto h = Live("home", &home);
  auto c = Live("cafe", &cafe);
  // home leads (first to be current), both about as fast: no flapping.
  Type(1);
  Advance(10ms);
  set_->Consumed(h, 1);
  set_->Consumed(c, 1);
  ASSERT_TRUE(set_->IsLeader(h) || set_->IsLeader(c));
  auto first = set_->IsLeader(h) ? h : c;
  auto other = first == h ? c : h;
  uint64_t switches = set_->switches();
  for (int i = 0; i < 10; ++i) {
    Type(1);
    Advance(10ms);
    set_->Consumed(other, log_->last_seq());
    Advance(1ms);  // 10 vs 11 ms: within the 20% hysteresis
    set_->Consumed(first, log_->last_seq());
  }
  EXPECT_TRUE(set_->IsLeader(first));
  EXPECT_EQ(set_->switches(), switches);
}

TEST_F(ReplicaSetTest, ALeaderBehindTooLongLosesTheLead) {
  Recorder home, cafe;
  auto h = Live("home", &home);
  auto c = Live("cafe", &cafe);
  for (int i = 0; i < 3; ++i) {  // cafe fast: it leads
    Type(1);
    Advance(1ms);
    set_->Consumed(c, log_->last_seq());
    Advance(40ms);
    set_->Consumed(h, log_->last_seq());
  }
  ASSERT_TRUE(set_->IsLeader(c));
  Type(1);  // cafe stalls on this one
  Advance(40ms);
  set_->Consumed(h, log_->last_seq());
  EXPECT_TRUE(set_->IsLeader(c));  // not yet: 40 ms behind
  Advance(300ms);
  set_->Consumed(h, log_->last_seq());
  EXPECT_TRUE(set_->IsLeader(h));
}

TEST_F(ReplicaSetTest, WhenTheLeaderGoesAnotherLeads) {
  Recorder home, cafe;
  auto h = Live("home", &home);
  auto c = Live("cafe", &cafe);
  Type(1);
  Advance(1ms);
  set_->Consumed(c, 1);
  Advance(50ms);
  set_->Consumed(h, 1);
  ASSERT_TRUE(set_->IsLeader(c));
  int before = home.repaints();
  set_->Remove(c);
  EXPECT_TRUE(set_->IsLeader(h));
  EXPECT_EQ(home.repaints(), before + 1);
  EXPECT_FALSE(set_->Find("cafe"));
  EXPECT_TRUE(set_->Find("home"));
}

TEST_F(ReplicaSetTest, WithNobodyCurrentTheOneFurthestAlongLeads) {
  Recorder a, b;
  auto x = Live("a", &a);
  auto y = Live("b", &b);
  Type(5);
  set_->Consumed(x, 2);
  set_->Consumed(y, 4);
  set_->Remove(x);  // forces a fresh choice
  EXPECT_TRUE(set_->IsLeader(y));
}

TEST(ControlTest, RequestsRoundTripAndAStickPathMayHoldSpaces) {
  control::UseRequest u{"10.0.0.7", 7391, "ab12", "/media/alice/USB STICK/slingshot"};
  auto back = control::DecodeRequest(control::Encode(u));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  auto* got = std::get_if<control::UseRequest>(&*back);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->stick, u.stick);
  EXPECT_EQ(got->port, 7391);
  auto l = control::DecodeRequest(control::Encode(control::LeaveRequest{"cafe"}));
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(std::get<control::LeaveRequest>(*l).replica, "cafe");
  EXPECT_TRUE(std::holds_alternative<control::StatusRequest>(*control::DecodeRequest("{\"status\":{}}")));
}

TEST(ControlTest, MalformedRequestsAreRefusedWithAReason) {
  for (const char* bad : {"", "status", "{}", "{\"use\":{}}", "{\"use\":{\"host\":\"h\",\"port\":70000,"
                          "\"fingerprint\":\"\",\"stick\":\"\"}}", "{\"use\":{\"host\":\"h\",\"port\":\"7391\","
                          "\"fingerprint\":\"\",\"stick\":\"\"}}", "{\"reboot\":{}}", "[1,2]",
                          "{\"status\":{},\"leave\":{}}"}) {
    auto r = control::DecodeRequest(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << bad;
      EXPECT_NE(r.status().message().find("control socket"), std::string::npos) << bad;
    }
  }
  EXPECT_FALSE(control::DecodeRequest(std::string(control::kMaxLine + 1, ' ')).ok());
}

TEST(ControlTest, EventsRoundTrip) {
  control::ProxyStatus s{"notes", 9, 3, {{"home", 9, true, false, 41.5}, {"cafe", 9, true, true, 1.25}}, 5900, 2,
                         "device tablet took notes over", ""};
  auto e = control::DecodeEvent(control::Encode(s));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  auto& back = std::get<control::ProxyStatus>(*e);
  ASSERT_EQ(back.replicas.size(), 2u);
  EXPECT_TRUE(back.replicas[1].leader);
  EXPECT_EQ(control::StatusLines(back), control::StatusLines(s));
  EXPECT_EQ(control::StatusLines(s)[0], "service notes vnc 127.0.0.1:5900 log 4..9 switches 2");
  EXPECT_EQ(control::StatusLines(s)[1], "STOPPED, taking no input: device tablet took notes over");
  EXPECT_EQ(control::StatusLines(s)[3], "replica cafe consumed 9 live leader latency_ms 1.2");
  s.refusing = "input dropped: No space left on device";
  auto refusing = control::DecodeEvent(control::Encode(s));
  ASSERT_TRUE(refusing.ok()) << refusing.status().ToString();
  EXPECT_EQ(std::get<control::ProxyStatus>(*refusing).refusing, s.refusing);
  EXPECT_EQ(control::StatusLines(s)[2], "REFUSING INPUT, nothing typed now is kept: input dropped: No space left on device");
  auto p = control::DecodeEvent(control::Encode(control::Progress{"restore", 5, 10, 1, 2, 3, 400}));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(std::get<control::Progress>(*p).from_stick, 2u);
  auto err = control::DecodeEvent(control::Encode(control::Done{Status::NotFound("no replica called x")}));
  ASSERT_TRUE(err.ok());
  EXPECT_TRUE(std::get<control::Done>(*err).status.IsNotFound());
  auto ok = control::DecodeEvent(control::Encode(control::Done{Status::OK()}));
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(std::get<control::Done>(*ok).status.ok());
}

TEST(FramebufferTest, RawAndCompressedRectanglesLandAndBadOnesAreDropped) {
  Framebuffer fb(4, 2);
  wire::Screen s;
  Bytes raw(2 * 1 * 4, 0x11);
  s.rects.push_back(wire::ScreenRect{1, 0, 2, 1, 0, raw});
  Bytes px(4 * 1 * 4, 0x22), z(ZSTD_compressBound(px.size()));
  z.resize(ZSTD_compress(z.data(), z.size(), px.data(), px.size(), 1));
  s.rects.push_back(wire::ScreenRect{0, 1, 4, 1, 1, z});
  s.rects.push_back(wire::ScreenRect{3, 1, 2, 1, 0, raw});             // outside
  s.rects.push_back(wire::ScreenRect{0, 0, 2, 1, 0, Bytes(3, 0)});     // short raw data
  s.rects.push_back(wire::ScreenRect{0, 0, 1, 1, 1, Bytes{1, 2, 3}});  // not zstd
  int written = 0;
  EXPECT_EQ(fb.Apply(s, [&](int, int, int, int) { ++written; }), 3u);
  EXPECT_EQ(written, 2);
  EXPECT_EQ(fb.pixels()[0], 0u);
  EXPECT_EQ(fb.pixels()[1], 0x11111111u);
  EXPECT_EQ(fb.pixels()[3], 0u);
  EXPECT_EQ(fb.pixels()[4], 0x22222222u);
}

}  // namespace
}  // namespace slingshot
