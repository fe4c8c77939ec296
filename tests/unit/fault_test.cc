// Crashes at every step: the event log and a checkpoint (packs) through a
// FaultInjectionEnv that dies at step k and then drops every write that was
// not made durable. After each, the data reopens with the real Env and
// everything that was acknowledged is there, intact.
#include <gtest/gtest.h>

#include "../fakes/fakes.h"
#include "../fakes/fault_env.h"
#include "slingshot/replica/checkpoint.h"
#include "slingshot/replica/input_sequencer.h"
#include "slingshot/replica/instantiate.h"
#include "slingshot/store/event_log.h"
#include "slingshot/store/gc.h"
#include "slingshot/store/memory_image.h"
#include "test_util.h"

namespace slingshot {
namespace {
using fake::FaultInjectionEnv;

Bytes PayloadOf(uint64_t seq) { return Bytes(1 + seq % 37, static_cast<uint8_t>(seq * 7)); }

// One client session: appends (synced, unsynced, a group), a truncation,
// segment rolls, a sync. Stops at the first error, as a process that died
// there would. Returns the highest seq acknowledged as durable.
uint64_t Session(const std::string& dir, Env* env, uint64_t* truncated_ack) {
  EventLogOptions o;
  o.env = env;
  o.segment_bytes = 160;  // a roll every few records
  auto log = EventLog::Open(dir, o);
  if (!log.ok()) return 0;
  uint64_t acked = (*log)->last_seq();  // what recovery kept is durable
  for (uint64_t s = (*log)->last_seq() + 1; s <= 14; ++s) {
    const bool sync = s % 3 != 1;  // every third append leans on the next one's sync
    auto seq = (*log)->Append(1, PayloadOf(s), sync);
    if (!seq.ok()) return acked;
    if (*seq != s) ADD_FAILURE() << "append got seq " << *seq << ", expected " << s;
    if (sync) acked = s;
    if (s == 8) {
      if (!(*log)->TruncateUpTo(4).ok()) return acked;
      *truncated_ack = 4;
    }
  }
  if ((*log)->Sync().ok()) acked = 14;
  return acked;
}

TEST(FaultTest, TheEventLogLosesNothingAcknowledgedAtACrashInAnyStep) {
  // A dry run counts the steps.
  int64_t steps;
  {
    testing::TempDir t;
    FaultInjectionEnv env;
    uint64_t trunc = 0;
    ASSERT_EQ(Session(t / "log", &env, &trunc), 14u);
    steps = env.ops();
  }
  ASSERT_GT(steps, 30);
  for (int64_t k = 0; k <= steps; ++k) {
    SCOPED_TRACE("crash after step " + std::to_string(k));
    testing::TempDir t;
    FaultInjectionEnv env;
    env.CrashAfter(k);
    uint64_t trunc = 0;
    uint64_t acked = Session(t / "log", &env, &trunc);
    ASSERT_TRUE(env.PowerCut().ok());
    auto log = EventLog::Open(t / "log");
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_GE((*log)->last_seq(), acked);
    EXPECT_GE((*log)->truncated_seq(), trunc);
    uint64_t next = (*log)->truncated_seq() + 1, seen = 0;
    ASSERT_TRUE((*log)
                    ->ReadFrom(next,
                               [&](const LogRecord& r) {
                                 EXPECT_EQ(r.seq, next);
                                 EXPECT_EQ(r.payload, PayloadOf(r.seq));
                                 ++next;
                                 ++seen;
                                 return true;
                               })
                    .ok());
    EXPECT_EQ(next - 1, (*log)->last_seq());
    // And it takes appends again where it left off.
    auto more = (*log)->Append(1, PayloadOf((*log)->last_seq() + 1));
    ASSERT_TRUE(more.ok()) << more.status().ToString();
  }
}

// A checkpoint whose packs go through the env: whatever step it dies at,
// the store reopens, verifies, and its manifest ref names a whole
// checkpoint: the one before, or (if it was acknowledged) the new one.
TEST(FaultTest, ACheckpointInterruptedAtAnyStepLeavesAWholeCheckpoint) {
  fake::RegisterFakeService();
  auto run = [](const std::string& dir, FaultInjectionEnv* env, int64_t crash_after, Status* result) -> int64_t {
    ChunkStoreOptions so;
    so.env = env;
    auto store = ChunkStore::Open(dir + "/store", so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    auto key = SigningKey::Generate();
    testing::WriteFile(dir + "/kernel", testing::RandomBytes(20000, 1));
    testing::WriteFile(dir + "/disk.img", testing::RandomBytes(256 << 10, 2));
    auto imp = ImportDisk(dir + "/disk.img", store->get());
    EXPECT_TRUE(imp.ok());
    Manifest base;
    base.service_id = "notes";
    base.service_type = fake::kServiceType;
    base.vm = VmConfig{64, 1, "", "fake", ""};
    base.kernel = *StoreFile(dir + "/kernel", store->get());
    base.kernel_size = 20000;
    fake::FakeHypervisor hv;
    ReplicaPlan plan;
    plan.spec.name = "notes";
    plan.spec.kernel = dir + "/kernel";
    plan.spec.memory_mib = 64;
    plan.spec.run_dir = dir + "/run/vm";
    plan.manifest = base;
    plan.label = "home";
    plan.table = imp->table;
    plan.chunks = store->get();
    plan.disk.dir = dir + "/run/disk";
    plan.connect_timeout_ms = 2000;
    auto p = StartReplica(hv, std::move(plan));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    CheckpointOptions co;
    co.store = store->get();
    co.key = &*key;
    co.base = base;
    co.quiesce_ms = 2000;
    co.resume_ms = 2000;
    EXPECT_TRUE(TakeCheckpoint(hv, **p, co).ok());  // the first one, before anything fails
    co.base.epoch = 1;
    for (uint64_t s = 1; s <= 3; ++s) EXPECT_TRUE((*p)->host()->Apply(wire::Input{s, 1, Bytes{uint8_t(s)}}).ok());
    Bytes block(64 << 10, 0x77);
    EXPECT_TRUE((*p)->disk().table_export().Write(64 << 10, block).ok());  // a dirty chunk to freeze
    const int64_t before = env->ops();
    env->CrashAfter(crash_after);
    auto ck = TakeCheckpoint(hv, **p, co);
    *result = ck.status();
    return env->ops() - before;
  };
  int64_t steps;
  {
    testing::TempDir t;
    FaultInjectionEnv env;
    Status st;
    steps = run(t.path(), &env, -1, &st);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  ASSERT_GT(steps, 3);
  for (int64_t k = 0; k <= steps; ++k) {
    SCOPED_TRACE("crash after step " + std::to_string(k) + " of the checkpoint");
    testing::TempDir t;
    FaultInjectionEnv env;
    Status ck;
    run(t.path(), &env, k, &ck);
    ASSERT_TRUE(env.PowerCut().ok());
    auto store = ChunkStore::Open(t / "store", {});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto verified = (*store)->VerifyAll([](const ChunkId& id, const Status& st) {
      ADD_FAILURE() << id.Short() << ": " << st.ToString();
    });
    ASSERT_TRUE(verified.ok()) << verified.status().ToString();
    auto ref = (*store)->GetRef("manifest/notes");
    ASSERT_TRUE(ref.ok()) << ref.status().ToString();
    auto m = DecodeSignedManifestUnverified(*(*store)->GetObject(ref->object));
    ASSERT_TRUE(m.ok());
    if (ck.ok()) {
      EXPECT_EQ(m->epoch, 2u);
    }
    EXPECT_TRUE(m->epoch == 1 || m->epoch == 2) << m->epoch;
    EXPECT_EQ(m->last_seq, m->epoch == 2 ? 3u : 0u);
    // Everything the manifest reaches is there.
    Status walk = WalkReachable(store->get(), {"manifest/notes"}, [](const ChunkId&, ByteView) { return Status::OK(); },
                                [&](const ChunkId& id) { return (*store)->Get(id).status(); });
    EXPECT_TRUE(walk.ok()) << walk.ToString();
  }
}

TEST(FaultTest, AFullDiskFailsEachPutCleanlyLeavesNoEmptyPacksAndPassesWhenSpaceReturns) {
  testing::TempDir t;
  FaultInjectionEnv env;
  ChunkStoreOptions so;
  so.env = &env;
  auto store = ChunkStore::Open(t.path(), so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Bytes kept = testing::RandomBytes(10000, 1);
  ASSERT_TRUE((*store)->Put(kept).ok());
  auto packs = [&] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(t.path() + "/packs")) n += e.path().extension() == ".dat";
    return n;
  };
  const size_t before = packs();
  env.SetFreeSpace(100);  // room for a pack's header, not for a chunk
  for (int i = 0; i < 20; ++i) {  // a retry storm would leave a pack per try
    auto r = (*store)->Put(testing::RandomBytes(5000, 100 + i));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("No space left"), std::string::npos) << r.status().ToString();
  }
  EXPECT_EQ(packs(), before);
  EXPECT_EQ(*(*store)->Get(ChunkId::Of(kept)), kept);
  env.SetFreeSpace(-1);
  Bytes later = testing::RandomBytes(5000, 7);
  ASSERT_TRUE((*store)->Put(later).ok());
  EXPECT_EQ(*(*store)->Get(ChunkId::Of(later)), later);
  EXPECT_LE(packs(), before + 1);
}

// The client's disk fills: an input its event log cannot hold is refused
// with the reason and sent to no replica (nothing unlogged goes out); when
// space returns, inputs are taken again, their seqs following on without a
// gap, and the log reopens with exactly the accepted ones.
TEST(FaultTest, AFullClientDiskRefusesInputsAndSendsNoneUnlogged) {
  testing::TempDir t;
  FaultInjectionEnv env;
  EventLogOptions o;
  o.env = &env;
  std::vector<uint64_t> sent;
  std::vector<Bytes> accepted;
  {
    auto log = EventLog::Open(t / "log", o);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    InputSequencer seq(log->get(), InputSequencerOptions{}, [&](std::vector<wire::Input>&& in) {
      for (const auto& i : in) sent.push_back(i.seq);
    });
    for (uint64_t s = 1; s <= 3; ++s) {
      ASSERT_TRUE(seq.Input(1, PayloadOf(s), false).ok());
      accepted.push_back(PayloadOf(s));
    }
    env.SetFreeSpace(0);
    for (uint64_t s = 4; s <= 9; ++s) {
      Status st = seq.Input(1, PayloadOf(s), s % 2 == 0);  // alone, and with another waiting
      ASSERT_FALSE(st.ok());
      EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.ToString();
      EXPECT_NE(st.message().find("input dropped"), std::string::npos) << st.ToString();
    }
    EXPECT_EQ(sent, (std::vector<uint64_t>{1, 2, 3}));
    env.SetFreeSpace(-1);
    for (uint64_t s = 10; s <= 11; ++s) {
      ASSERT_TRUE(seq.Input(1, PayloadOf(s), false).ok());
      accepted.push_back(PayloadOf(s));
    }
    EXPECT_EQ(sent, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  }
  auto log = EventLog::Open(t / "log");
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  std::vector<Bytes> read;
  ASSERT_TRUE((*log)->ReadFrom(1, [&](const LogRecord& r) {
    read.push_back(r.payload);
    return true;
  }).ok());
  EXPECT_EQ(read, accepted);
}

}  // namespace
}  // namespace slingshot
