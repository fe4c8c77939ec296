// EventLog: round trips, group commit, torn tails at every offset, damage
// detection, truncation, full disks and kill -9.
#include "slingshot/store/event_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "slingshot/base/coding.h"
#include "test_util.h"

namespace slingshot {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

Bytes PayloadFor(uint64_t n, size_t len = 50) { return testing::RandomBytes(len, n); }

std::unique_ptr<EventLog> OpenLog(const std::string& dir, EventLogOptions o = {}) {
  auto l = EventLog::Open(dir, o);
  EXPECT_TRUE(l.ok()) << l.status().ToString();
  return l.ok() ? std::move(l).value() : nullptr;
}

std::vector<LogRecord> ReadAll(EventLog* log, uint64_t from = 0) {
  std::vector<LogRecord> out;
  Status st = log->ReadFrom(from, [&](const LogRecord& r) {
    out.push_back(r);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

std::string FirstSegment(const std::string& dir) { return dir + "/seg-00000000000000000001.log"; }

size_t CountSegments(const std::string& dir) {
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ".log";
  return n;
}

TEST(EventLogTest, AppendReadAndReopen) {
  TempDir t;
  {
    auto log = OpenLog(t.path());
    for (uint64_t i = 1; i <= 20; ++i) {
      auto seq = log->Append(static_cast<uint16_t>(i % 3), PayloadFor(i), true, 1000 + static_cast<int64_t>(i));
      ASSERT_TRUE(seq.ok());
      EXPECT_EQ(*seq, i);
    }
    auto recs = ReadAll(log.get(), 15);
    ASSERT_EQ(recs.size(), 6u);
    EXPECT_EQ(recs[0].seq, 15u);
  }
  auto log = OpenLog(t.path());
  EXPECT_EQ(log->recovery().records, 20u);
  EXPECT_EQ(log->recovery().torn_bytes, 0u);
  auto recs = ReadAll(log.get());
  ASSERT_EQ(recs.size(), 20u);
  for (uint64_t i = 1; i <= 20; ++i) {
    EXPECT_EQ(recs[i - 1].seq, i);
    EXPECT_EQ(recs[i - 1].type, i % 3);
    EXPECT_EQ(recs[i - 1].time_ns, 1000 + static_cast<int64_t>(i));
    EXPECT_EQ(recs[i - 1].payload, PayloadFor(i));
  }
  EXPECT_EQ(*log->Append(0, AsBytes("next")), 21u);
}

TEST(EventLogTest, RestartAfterContinuesAfterAnotherDevicesSeqAndSurvivesReopen) {
  TempDir t;
  {
    auto log = OpenLog(t.path());
    for (uint64_t i = 1; i <= 10; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
    // Ahead of this log (the home's checkpoint of another device's inputs).
    auto dropped = log->RestartAfter(5624);
    ASSERT_TRUE(dropped.ok()) << dropped.status().ToString();
    EXPECT_EQ(*dropped, 0u);
    EXPECT_EQ(log->last_seq(), 5624u);
    EXPECT_TRUE(ReadAll(log.get()).empty());
    EXPECT_EQ(*log->Append(1, PayloadFor(1)), 5625u);
    EXPECT_EQ(CountSegments(t.path()), 1u);
  }
  {
    auto log = OpenLog(t.path());
    EXPECT_EQ(log->last_seq(), 5625u);
    auto recs = ReadAll(log.get());
    ASSERT_EQ(recs.size(), 1u);
    EXPECT_EQ(recs[0].seq, 5625u);
    // Behind this log: what is above the seq is reported, then gone.
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
    auto dropped = log->RestartAfter(5626);
    ASSERT_TRUE(dropped.ok());
    EXPECT_EQ(*dropped, 3u);
    EXPECT_EQ(*log->Append(1, PayloadFor(9)), 5627u);
  }
  auto log = OpenLog(t.path());
  auto recs = ReadAll(log.get());
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].seq, 5627u);
  EXPECT_EQ(recs[0].payload, PayloadFor(9));
}

TEST(EventLogTest, ConcurrentAppendersGetContiguousUniqueSeqs) {
  TempDir t;
  auto log = OpenLog(t.path());
  constexpr int kThreads = 8, kEach = 150;
  std::vector<std::thread> ts;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  for (int th = 0; th < kThreads; ++th) {
    ts.emplace_back([&, th] {
      for (int i = 0; i < kEach; ++i) {
        std::string p = std::to_string(th) + ":" + std::to_string(i);
        auto s = log->Append(1, AsBytes(p));
        ASSERT_TRUE(s.ok());
        seqs[th].push_back(*s);
      }
    });
  }
  for (auto& th : ts) th.join();
  auto recs = ReadAll(log.get());
  ASSERT_EQ(recs.size(), static_cast<size_t>(kThreads * kEach));
  for (size_t i = 0; i < recs.size(); ++i) ASSERT_EQ(recs[i].seq, i + 1);
  for (int th = 0; th < kThreads; ++th) {
    for (int i = 0; i < kEach; ++i) {
      const auto& r = recs[seqs[th][i] - 1];
      ASSERT_EQ(std::string(r.payload.begin(), r.payload.end()), std::to_string(th) + ":" + std::to_string(i));
    }
  }
}

TEST(EventLogTest, TornTailAtEveryByteOffsetOfTheLastRecord) {
  TempDir base;
  {
    auto log = OpenLog(base.path());
    for (uint64_t i = 1; i <= 5; ++i) ASSERT_TRUE(log->Append(7, PayloadFor(i)).ok());
  }
  Bytes seg = testing::ReadFile(FirstSegment(base.path()));
  const size_t rec = EventLog::kRecordHeaderSize + 50;
  const size_t start = seg.size() - rec;
  for (size_t cut = start; cut < seg.size(); ++cut) {
    TempDir t;
    testing::WriteFile(FirstSegment(t.path()), ByteView(seg).first(cut));
    auto log = OpenLog(t.path());
    ASSERT_NE(log, nullptr) << "cut " << cut;
    EXPECT_EQ(log->recovery().records, 4u) << "cut " << cut;
    EXPECT_EQ(log->recovery().torn_bytes, cut - start) << "cut " << cut;
    EXPECT_EQ(fs::file_size(FirstSegment(t.path())), start);
    ASSERT_EQ(*log->Append(7, AsBytes("after recovery")), 5u);
    auto recs = ReadAll(log.get());
    ASSERT_EQ(recs.size(), 5u);
    for (uint64_t i = 1; i <= 4; ++i) ASSERT_EQ(recs[i - 1].payload, PayloadFor(i));
    ASSERT_EQ(std::string(recs[4].payload.begin(), recs[4].payload.end()), "after recovery");
  }
}

TEST(EventLogTest, ZeroFilledTailIsCut) {
  TempDir t;
  {
    auto log = OpenLog(t.path());
    for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
  }
  Bytes seg = testing::ReadFile(FirstSegment(t.path()));
  seg.resize(seg.size() + 8192, 0);  // the file grew but its data never landed
  testing::WriteFile(FirstSegment(t.path()), seg);
  auto log = OpenLog(t.path());
  EXPECT_EQ(log->recovery().records, 3u);
  EXPECT_EQ(log->recovery().torn_bytes, 8192u);
  EXPECT_EQ(*log->Append(1, AsBytes("x")), 4u);
}

TEST(EventLogTest, EveryBitFlipInsideTheLogIsDetected) {
  TempDir base;
  {
    auto log = OpenLog(base.path());
    for (uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(log->Append(2, PayloadFor(i, 20)).ok());
  }
  Bytes seg = testing::ReadFile(FirstSegment(base.path()));
  const size_t rec = EventLog::kRecordHeaderSize + 20;
  const size_t last_start = seg.size() - rec;
  for (size_t bit = 0; bit < seg.size() * 8; ++bit) {
    TempDir t;
    Bytes s = seg;
    s[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    testing::WriteFile(FirstSegment(t.path()), s);
    auto log = EventLog::Open(t.path());
    if (bit / 8 < last_start) {
      // Header or a record followed by intact records: damage, refused.
      ASSERT_FALSE(log.ok()) << "bit " << bit;
      ASSERT_TRUE(log.status().IsCorruption()) << log.status().ToString();
      ASSERT_EQ(testing::ReadFile(FirstSegment(t.path())), s) << "open must change nothing";
    } else {
      // The last record: indistinguishable from a torn write; cut and reported.
      ASSERT_TRUE(log.ok()) << "bit " << bit;
      ASSERT_EQ((*log)->recovery().records, 3u);
      ASSERT_EQ((*log)->recovery().torn_bytes, rec);
      ASSERT_FALSE((*log)->recovery().torn_reason.empty());
      auto recs = ReadAll(log->get());
      ASSERT_EQ(recs.size(), 3u);
      for (uint64_t i = 1; i <= 3; ++i) ASSERT_EQ(recs[i - 1].payload, PayloadFor(i, 20));
    }
  }
}

// Fault injection in the manner of LevelDB's fault_injection_test: after
// synced (acknowledged) appends come unsynced ones; a power cut then loses
// any subset of the pages they dirtied (lost pages read as zeros, the part
// of a page that held synced bytes keeps them) and may leave the file at
// any page-aligned length. Recovery must keep every acknowledged record and
// return only records that were written, in order.
TEST(EventLogTest, PowerLossDropsOnlyUnsyncedWrites) {
  TempDir base;
  uint64_t synced_end, acked = 60, total = 160;
  {
    auto log = OpenLog(base.path());
    for (uint64_t i = 1; i <= acked; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i, 1 + i * 7 % 200)).ok());
    synced_end = fs::file_size(FirstSegment(base.path()));
    for (uint64_t i = acked + 1; i <= total; ++i) {
      ASSERT_TRUE(log->Append(1, PayloadFor(i, 1 + i * 7 % 200), /*sync=*/false).ok());
    }
  }
  const Bytes written = testing::ReadFile(FirstSegment(base.path()));
  constexpr size_t kPage = 4096;
  std::mt19937_64 rng(2024);
  for (int trial = 0; trial < 300; ++trial) {
    Bytes crashed = written;
    for (size_t page = synced_end / kPage * kPage; page < crashed.size(); page += kPage) {
      if (rng() % 3 != 0) continue;  // this page's new content reached the disk
      size_t from = std::max<size_t>(page, synced_end);
      std::fill(crashed.begin() + from, crashed.begin() + std::min(crashed.size(), page + kPage), 0);
    }
    if (rng() % 2) {  // the file length may not have reached the disk either
      size_t len = synced_end + rng() % (crashed.size() - synced_end + 1);
      crashed.resize(std::max(synced_end, (len + kPage - 1) / kPage * kPage), 0);
    }
    TempDir t;
    testing::WriteFile(FirstSegment(t.path()), crashed);
    auto log = EventLog::Open(t.path());
    ASSERT_TRUE(log.ok()) << "trial " << trial << ": " << log.status().ToString();
    auto recs = ReadAll(log->get());
    ASSERT_GE(recs.size(), acked) << "trial " << trial;
    for (size_t i = 0; i < recs.size(); ++i) {
      ASSERT_EQ(recs[i].seq, i + 1);
      ASSERT_EQ(recs[i].payload, PayloadFor(i + 1, 1 + (i + 1) * 7 % 200)) << "trial " << trial;
    }
    ASSERT_EQ(*(*log)->Append(1, AsBytes("after")), recs.size() + 1);
  }
}

TEST(EventLogTest, DamageAfterOpenIsReportedByRead) {
  TempDir t;
  auto log = OpenLog(t.path());
  for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
  testing::FlipBit(FirstSegment(t.path()), (EventLog::kHeaderSize + 40) * 8);
  Status st = log->ReadFrom(0, [](const LogRecord&) { return true; });
  EXPECT_TRUE(st.IsCorruption()) << st.ToString();
}

TEST(EventLogTest, LyingLengthFieldIsRefusedNotTrusted) {
  TempDir t;
  {
    auto log = OpenLog(t.path());
    for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
  }
  Bytes seg = testing::ReadFile(FirstSegment(t.path()));
  PutU32(seg.data() + EventLog::kHeaderSize + 4, 0xFFFFFFF0u);  // first record claims ~4 GiB
  testing::WriteFile(FirstSegment(t.path()), seg);
  auto log = EventLog::Open(t.path());
  ASSERT_FALSE(log.ok());
  EXPECT_TRUE(log.status().IsCorruption());
}

TEST(EventLogTest, SecondWriterIsRefused) {
  TempDir t;
  auto first = OpenLog(t.path());
  ASSERT_TRUE(first->Append(1, AsBytes("one")).ok());
  auto second = EventLog::Open(t.path());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use by another process"), std::string::npos);
  first.reset();
  EXPECT_EQ(OpenLog(t.path())->last_seq(), 1u);
}

TEST(EventLogTest, OversizedAppendIsRefused) {
  TempDir t;
  EventLogOptions o;
  o.max_payload = 1000;
  auto log = OpenLog(t.path(), o);
  EXPECT_EQ(log->Append(1, Bytes(1001)).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(*log->Append(1, Bytes(1000)), 1u);
}

TEST(EventLogTest, SmallerLimitsLaterNeverCutAcknowledgedRecords) {
  TempDir t;
  {
    auto log = OpenLog(t.path());
    ASSERT_TRUE(log->Append(1, Bytes(5000, 1)).ok());
  }
  EventLogOptions o;
  o.max_payload = 100;
  o.segment_bytes = 64;
  auto log = OpenLog(t.path(), o);
  EXPECT_EQ(log->recovery().records, 1u);
  EXPECT_EQ(log->recovery().torn_bytes, 0u);
}

TEST(EventLogTest, SegmentsRollAndTruncateDeletesThem) {
  TempDir t;
  EventLogOptions o;
  o.segment_bytes = 500;
  {
    auto log = OpenLog(t.path(), o);
    for (uint64_t i = 1; i <= 40; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
    EXPECT_GT(CountSegments(t.path()), 5u);
    ASSERT_TRUE(log->TruncateUpTo(25).ok());
    EXPECT_EQ(log->truncated_seq(), 25u);
    auto recs = ReadAll(log.get());
    ASSERT_EQ(recs.size(), 15u);
    EXPECT_EQ(recs.front().seq, 26u);
  }
  auto log = OpenLog(t.path(), o);
  EXPECT_EQ(log->recovery().truncated_seq, 25u);
  EXPECT_EQ(log->recovery().first_seq, 26u);
  EXPECT_EQ(log->recovery().records, 15u);
  auto recs = ReadAll(log.get());
  ASSERT_EQ(recs.size(), 15u);
  for (auto& r : recs) ASSERT_EQ(r.payload, PayloadFor(r.seq));
  EXPECT_LE(CountSegments(t.path()), 5u);
}

TEST(EventLogTest, TruncateEverythingThenContinue) {
  TempDir t;
  {
    auto log = OpenLog(t.path());
    for (uint64_t i = 1; i <= 10; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
    ASSERT_TRUE(log->TruncateUpTo(1000).ok());  // clamps to the last seq
    EXPECT_EQ(log->truncated_seq(), 10u);
    EXPECT_TRUE(ReadAll(log.get()).empty());
    EXPECT_EQ(CountSegments(t.path()), 1u);
    EXPECT_EQ(*log->Append(1, PayloadFor(11)), 11u);
  }
  auto log = OpenLog(t.path());
  EXPECT_EQ(log->last_seq(), 11u);
  auto recs = ReadAll(log.get());
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].payload, PayloadFor(11));
  EXPECT_EQ(*log->Append(1, AsBytes("y")), 12u);
}

TEST(EventLogTest, MissingMiddleSegmentIsCorruption) {
  TempDir t;
  EventLogOptions o;
  o.segment_bytes = 300;
  {
    auto log = OpenLog(t.path(), o);
    for (uint64_t i = 1; i <= 30; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
  }
  std::vector<std::string> segs;
  for (auto& e : fs::directory_iterator(t.path())) segs.push_back(e.path().string());
  std::sort(segs.begin(), segs.end());
  ASSERT_GE(segs.size(), 3u);
  fs::remove(segs[1]);
  auto log = EventLog::Open(t.path(), o);
  ASSERT_FALSE(log.ok());
  EXPECT_TRUE(log.status().IsCorruption());
}

// A full disk (RLIMIT_FSIZE stands in for ENOSPC): the failed append leaves
// no partial record, and the log keeps working when space returns.
TEST(EventLogTest, FullDiskLeavesNoPartialRecord) {
  TempDir t;
  {
    auto log = OpenLog(t.path());
    for (uint64_t i = 1; i <= 10; ++i) ASSERT_TRUE(log->Append(1, PayloadFor(i)).ok());
  }
  int code = testing::RunInChild([&] {
    ::signal(SIGXFSZ, SIG_IGN);
    auto log = EventLog::Open(t.path());
    if (!log.ok()) return 10;
    rlimit lim;
    lim.rlim_cur = lim.rlim_max = fs::file_size(FirstSegment(t.path())) + 1000;
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 11;
    auto big = (*log)->Append(1, Bytes(3000, 7));
    if (big.ok() || big.status().code() != Status::Code::kIOError) return 12;
    auto small = (*log)->Append(1, PayloadFor(11));
    return small.ok() && *small == 11 ? 0 : 13;
  });
  ASSERT_EQ(code, 0);
  auto log = OpenLog(t.path());
  EXPECT_EQ(log->recovery().torn_bytes, 0u);
  auto recs = ReadAll(log.get());
  ASSERT_EQ(recs.size(), 11u);
  EXPECT_EQ(recs[10].payload, PayloadFor(11));
}

TEST(EventLogTest, AcknowledgedAppendsSurviveKill9) {
  TempDir t;
  auto last = testing::KillDuringWrites(
      [&](const std::function<void(uint64_t)>& ack) {
        auto log = EventLog::Open(t.path());
        if (!log.ok()) return;
        for (uint64_t i = 1;; ++i) {
          auto s = (*log)->Append(1, PayloadFor(i, 1 + i % 300));
          if (!s.ok() || *s != i) return;
          ack(i);
        }
      },
      /*after=*/300);
  ASSERT_TRUE(last.has_value()) << "the writer failed before it was killed";
  const uint64_t acked = *last;
  auto log = OpenLog(t.path());
  auto recs = ReadAll(log.get());
  ASSERT_GE(recs.size(), acked);
  for (auto& r : recs) ASSERT_EQ(r.payload, PayloadFor(r.seq, 1 + r.seq % 300)) << r.seq;
}

}  // namespace
}  // namespace slingshot
