// The replica lifecycle (core/replica) on the fake hypervisor and the fake
// service: instantiate, restore or boot, checkpoint, disks, refusals.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <thread>

#include "../fakes/fakes.h"
#include "slingshot/replica/admission.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/replica/checkpoint.h"
#include "slingshot/replica/checkpoint_scope.h"
#include "slingshot/replica/instantiate.h"
#include "slingshot/replica/primary.h"
#include "slingshot/replica/replica_disk.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/base/file_util.h"
#include "slingshot/store/working_set.h"
#include "test_util.h"

namespace slingshot {
namespace {
using fake::FakeHypervisor;
using fake::FakeHypervisorOptions;

wire::Input In(uint64_t seq) { return wire::Input{seq, 1, Bytes{uint8_t(seq), uint8_t(seq >> 8), 7}}; }

// Waits until the guest behind replica r has applied input seq.
bool WaitApplied(const LiveReplica& r, uint64_t seq) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (r.host()->applied() >= seq) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// A home: a store, a key, a service's boot files and disk, a hypervisor.
class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake::RegisterFakeService();
    auto s = ChunkStore::Open(tmp_ / "store", {});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    auto k = SigningKey::Generate();
    ASSERT_TRUE(k.ok());
    key_.emplace(std::move(*k));
    testing::WriteFile(tmp_ / "kernel", testing::RandomBytes(100000, 1));
    testing::WriteFile(tmp_ / "initrd", testing::RandomBytes(50000, 2));
    Bytes disk = testing::RandomBytes(1 << 20, 3);
    std::fill(disk.begin() + (256 << 10), disk.begin() + (512 << 10), 0);
    testing::WriteFile(tmp_ / "disk.img", disk);
    auto imp = ImportDisk(tmp_ / "disk.img", store_.get());
    ASSERT_TRUE(imp.ok()) << imp.status().ToString();
    table_ = imp->table;
  }

  Manifest Base(uint16_t port = 5900) {
    Manifest m;
    m.service_id = "notes";
    m.service_type = fake::kServiceType;
    m.service_port = port;
    m.vm = VmConfig{64, 1, "console=ttyS0", "fake", ""};
    m.kernel = *StoreFile(tmp_ / "kernel", store_.get());
    m.kernel_size = 100000;
    m.initrd = *StoreFile(tmp_ / "initrd", store_.get());
    m.initrd_size = 50000;
    return m;
  }

  // The home's first boot of the service, as slingshot-home does it.
  Result<std::unique_ptr<LiveReplica>> BootPrimary(FakeHypervisor& hv, const Manifest& base) {
    ReplicaPlan plan;
    plan.spec.name = "notes";
    plan.spec.kernel = tmp_ / "kernel";
    plan.spec.memory_mib = base.vm.memory_mib;
    plan.spec.vcpus = 1;
    plan.spec.run_dir = tmp_ / "home-run/vm";
    plan.manifest = base;
    plan.label = "home";
    plan.table = table_;
    plan.chunks = store_.get();
    plan.disk.dir = tmp_ / "home-run/disk";
    plan.connect_timeout_ms = 2000;
    return StartReplica(hv, std::move(plan));
  }

  Result<CheckpointResult> Checkpoint(FakeHypervisor& hv, LiveReplica& r, const Manifest& base) {
    CheckpointOptions o;
    o.store = store_.get();
    o.key = &*key_;
    o.base = base;
    o.quiesce_ms = 2000;
    o.resume_ms = 2000;
    return TakeCheckpoint(hv, r, o);
  }

  InstantiateOptions Options(const std::string& vm, const std::string& label = "cafe") {
    InstantiateOptions o;
    o.service = "notes";
    o.manifest_key = key_->public_key();
    o.vm_name = vm;
    o.dir = tmp_ / vm;
    o.label = label;
    o.restore_connect_ms = 2000;
    o.boot_connect_ms = 2000;
    return o;
  }

  // Boots the primary, applies n inputs and checkpoints it.
  std::unique_ptr<LiveReplica> PrimaryWithCheckpoint(FakeHypervisor& hv, uint64_t n, Manifest* base) {
    auto p = BootPrimary(hv, *base);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (!p.ok()) return nullptr;
    for (uint64_t s = 1; s <= n; ++s) EXPECT_TRUE((*p)->host()->Apply(In(s)).ok());
    auto ck = Checkpoint(hv, **p, *base);
    EXPECT_TRUE(ck.ok()) << ck.status().ToString();
    if (ck.ok()) base->epoch = ck->manifest.epoch;
    return std::move(*p);
  }

  testing::TempDir tmp_;
  std::unique_ptr<ChunkStore> store_;
  std::optional<SigningKey> key_;
  DiskTable table_;
};

TEST(PrefetchOrderTest, WorkingSetFirstThenTheTableEachOnceWithoutNulls) {
  DiskTable t;
  ChunkId a = ChunkId::Of(AsBytes("a")), b = ChunkId::Of(AsBytes("b")), c = ChunkId::Of(AsBytes("c"));
  t.ids = {a, ChunkId(), b, a, c};
  EXPECT_EQ(PrefetchOrder(t, {c, ChunkId(), c}), (std::vector<ChunkId>{c, a, b}));
  EXPECT_EQ(PrefetchOrder(t, {}), (std::vector<ChunkId>{a, b, c}));
}

TEST_F(ReplicaTest, DiskListensOnAUnixSocketForAQemuLikeHypervisor) {
  FakeHypervisor hv;
  ReplicaDiskOptions o;
  o.dir = tmp_ / "d";
  auto d = ReplicaDisk::Open(table_, store_.get(), hv, o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ((*d)->address().unix_socket, tmp_ / "d/disk.sock");
  EXPECT_TRUE(std::filesystem::exists((*d)->address().unix_socket));
  EXPECT_EQ((*d)->table_export().size(), 1u << 20);
}

// A Xen home could not boot its primaries: the home handed the hypervisor a
// unix socket, and Xen's dom0 NBD client speaks TCP only. The disk now
// listens where the backend asks.
TEST_F(ReplicaTest, XenHomeDiskIsServedOverTcp) {
  FakeHypervisorOptions ho;
  ho.disks_over_tcp = true;
  FakeHypervisor hv(ho);
  auto p = BootPrimary(hv, Base());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto spec = hv.SpecOf("notes");
  ASSERT_TRUE(spec && spec->disk);
  EXPECT_TRUE(spec->disk->unix_socket.empty());
  EXPECT_EQ(spec->disk->host, "127.0.0.1");
  EXPECT_NE(spec->disk->port, 0);
}

TEST_F(ReplicaTest, DiskPrefetchesEveryChunkThroughTheChain) {
  FakeHypervisor hv;
  auto cache = ChunkStore::Open(tmp_ / "cache", {ChunkStoreOptions::Mode::kCache});
  ASSERT_TRUE(cache.ok());
  FetchChain chain(cache->get(), {store_.get()});
  ReplicaDiskOptions o;
  o.dir = tmp_ / "d";
  o.prefetch = &chain;
  auto d = ReplicaDisk::Open(table_, &chain, hv, o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const size_t distinct = PrefetchOrder(table_, {}).size();
  EXPECT_EQ((*d)->prefetch_total(), distinct);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*d)->prefetched() < distinct && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ((*d)->prefetched(), distinct);
  for (const auto& id : PrefetchOrder(table_, {})) EXPECT_TRUE(*(*cache)->Contains(id));
}

TEST_F(ReplicaTest, FirstBootStartsTheServiceAtSeqZero) {
  FakeHypervisor hv;
  auto p = BootPrimary(hv, Base());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE((*p)->booted());
  EXPECT_EQ(hv.boots(), 1);
  EXPECT_EQ((*p)->host()->consumed(), 0u);
  ASSERT_TRUE((*p)->host()->Apply(In(1)).ok());
  EXPECT_EQ(hv.Guest("notes")->last_seq(), 1u);
}

TEST_F(ReplicaTest, CheckpointPublishesASignedManifestCoveringTheConsumedSeq) {
  FakeHypervisor hv;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(hv, 5, &base);
  ASSERT_TRUE(p);
  auto ref = store_->GetRef("manifest/notes");
  ASSERT_TRUE(ref.ok());
  auto m = VerifyManifest(*store_->GetObject(ref->object), key_->public_key());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->epoch, 1u);
  EXPECT_EQ(m->last_seq, 5u);
  EXPECT_EQ(m->vm.backend, "fake");
  EXPECT_EQ(m->kernel, base.kernel);
  EXPECT_GT(m->memory_size, 256u << 10);
  // The memory image is the guest's saved state.
  auto list = ChunkList::Decode(*store_->GetObject(m->memory_list));
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->total_size, m->memory_size);
  // The replica keeps running after it.
  ASSERT_TRUE(p->host()->Apply(In(6)).ok());
  EXPECT_EQ(hv.Guest("notes")->last_seq(), 6u);
}

TEST_F(ReplicaTest, EachCheckpointTakesTheNextEpoch) {
  FakeHypervisor hv;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(hv, 1, &base);
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->host()->Apply(In(2)).ok());
  auto ck = Checkpoint(hv, *p, base);
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  EXPECT_EQ(ck->manifest.epoch, 2u);
  EXPECT_EQ(ck->manifest.last_seq, 2u);
}

TEST_F(ReplicaTest, AFailedCheckpointLeavesThePublishedOneAndTheVmRunning) {
  FakeHypervisor hv;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(hv, 3, &base);
  ASSERT_TRUE(p);
  auto before = store_->GetRef("manifest/notes");
  ASSERT_TRUE(p->host()->Apply(In(4)).ok());
  hv.FailNextCheckpoint(Status::IOError("disk full"));
  auto ck = Checkpoint(hv, *p, base);
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find("disk full"), std::string::npos);
  EXPECT_EQ(store_->GetRef("manifest/notes")->object, before->object);
  // Resumed: inputs still flow.
  ASSERT_TRUE(p->host()->Apply(In(5)).ok());
  EXPECT_EQ(hv.Guest("notes")->last_seq(), 5u);
}

TEST_F(ReplicaTest, CheckpointWaitsForTheBarrier) {
  FakeHypervisor hv;
  Manifest base = Base();
  auto p = BootPrimary(hv, base);
  ASSERT_TRUE(p.ok());
  auto guest = hv.Guest("notes");
  guest->Hold(true);
  ASSERT_TRUE((*p)->host()->Apply(In(1)).ok());
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    guest->Hold(false);
  });
  auto ck = Checkpoint(hv, **p, base);
  release.join();
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  EXPECT_EQ(ck->manifest.last_seq, 1u);
}

TEST_F(ReplicaTest, CheckpointRecordsTheDiskWorkingSet) {
  FakeHypervisor hv;
  Manifest base = Base();
  auto p = BootPrimary(hv, base);
  ASSERT_TRUE(p.ok());
  std::vector<uint8_t> buf(4096);
  ASSERT_TRUE((*p)->disk().table_export().Read(640 << 10, buf).ok());
  ASSERT_TRUE((*p)->disk().table_export().Read(0, buf).ok());
  auto ck = Checkpoint(hv, **p, base);
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  auto ws = LoadWorkingSet(store_.get(), ck->manifest.disk_table);
  ASSERT_TRUE(ws.ok()) << ws.status().ToString();
  ASSERT_EQ(ws->ids.size(), 2u);
  EXPECT_EQ(ws->ids[0], table_.ids[10]);
  EXPECT_EQ(ws->ids[1], table_.ids[0]);
}

TEST_F(ReplicaTest, InstantiateRestoresTheCheckpointedState) {
  FakeHypervisor home, cafe;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 4, &base);
  ASSERT_TRUE(p);
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE((*r)->booted());
  EXPECT_EQ(cafe.restores(), 1);
  EXPECT_EQ((*r)->manifest().last_seq, 4u);
  EXPECT_EQ((*r)->host()->consumed(), 4u);
  EXPECT_EQ(cafe.Guest("replica-1")->Digest(), home.Guest("notes")->Digest());
  // The boot files came from the checkpoint.
  EXPECT_EQ(testing::ReadFile(tmp_ / "replica-1/kernel"), testing::ReadFile(tmp_ / "kernel"));
  EXPECT_EQ(testing::ReadFile(tmp_ / "replica-1/initrd"), testing::ReadFile(tmp_ / "initrd"));
}

// A live checkpoint (QEMU's background snapshot): the guest takes inputs
// again while its memory still streams, and the checkpoint is the state at
// its pause: the seq it covers, the guest's state and the disk are as they
// were then, not as the input and the write that came meanwhile left them.
// With a checkpoint that is not live, the same input waits for the end.
TEST_F(ReplicaTest, ALiveCheckpointTakesInputsWhileItStreamsAndIsTheStateAtItsPause) {
  for (bool live : {true, false}) {
    SCOPED_TRACE(live ? "live" : "paused for the save");
    FakeHypervisorOptions ho;
    ho.live_checkpoints = live;
    ho.stream_piece = 4 << 10;
    LiveReplica* primary = nullptr;
    FakeHypervisor* hvp = nullptr;
    bool applied_mid_stream = false;
    Bytes disk_at_pause;
    ho.on_piece = [&](size_t piece) -> Status {
      if (piece != 8) return Status::OK();
      ChunkTableExport& disk = primary->disk().table_export();
      disk_at_pause.resize(disk.size());
      SLINGSHOT_RETURN_IF_ERROR(disk.Read(0, disk_at_pause));
      SLINGSHOT_RETURN_IF_ERROR(disk.Write(4096, AsBytes("written after the pause")));
      SLINGSHOT_RETURN_IF_ERROR(primary->host()->Apply(In(4)));
      // What the guest itself has taken (the host counts what it holds too).
      // A paused guest takes it only after the save: do not wait long then.
      std::shared_ptr<fake::FakeGuest> guest = hvp->Guest("notes");
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(live ? 5000 : 300);
      while (std::chrono::steady_clock::now() < deadline && guest->last_seq() < 4) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      applied_mid_stream = guest->last_seq() >= 4;
      return Status::OK();
    };
    FakeHypervisor hv(ho);
    hvp = &hv;
    Manifest base = Base();
    auto p = BootPrimary(hv, base);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    primary = p->get();
    for (uint64_t s = 1; s <= 3; ++s) ASSERT_TRUE(primary->host()->Apply(In(s)).ok());
    ASSERT_TRUE(WaitApplied(*primary, 3));
    auto ck = Checkpoint(hv, *primary, base);
    ASSERT_TRUE(ck.ok()) << ck.status().ToString();
    EXPECT_EQ(ck->live, live);
    EXPECT_EQ(applied_mid_stream, live);
    EXPECT_EQ(ck->manifest.last_seq, 3u);
    ASSERT_TRUE(WaitApplied(*primary, 4));
    // Its disk is the disk at the pause.
    auto table = DiskTable::Decode(*store_->GetObject(ck->manifest.disk_table));
    ASSERT_TRUE(table.ok()) << table.status().ToString();
    ASSERT_TRUE(ExportDisk(*table, store_.get(), tmp_ / "published.img").ok());
    EXPECT_TRUE(*ReadFileBounded(tmp_ / "published.img", 4 << 20) == disk_at_pause);
    // Restored elsewhere, it holds inputs 1..3 and not 4.
    FakeHypervisor cafe;
    StoreCheckpointSource src(store_.get());
    auto r = Instantiate(cafe, src, Options(live ? "replica-live" : "replica-paused"));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(cafe.Guest(live ? "replica-live" : "replica-paused")->last_seq(), 3u);
    p->reset();
  }
}

// RAM kept apart (as QEMU does): the checkpoint stores it as a RAM table by
// offset (zero chunks not stored, unchanged ones not stored again), the
// capability reaches its chunks, and a replica made from it has exactly the
// primary's state; a RAM chunk gone from the store fails the instantiate
// cleanly (nothing left running).
TEST_F(ReplicaTest, RamKeptApartTravelsAsATableByOffsetAndRestoresExactly) {
  FakeHypervisorOptions ho;
  ho.ram_apart = true;
  ho.guest_memory_bytes = 1 << 20;
  FakeHypervisor home(ho), cafe(ho);
  Manifest base = Base();
  base.vm.memory_mib = 1;  // the fake's RAM: guest_memory_bytes
  auto p = PrimaryWithCheckpoint(home, 4, &base);
  ASSERT_TRUE(p);
  auto ref = store_->GetRef("manifest/notes");
  ASSERT_TRUE(ref.ok());
  auto m = VerifyManifest(*store_->GetObject(ref->object), key_->public_key());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_FALSE(m->ram_table.IsNull());
  EXPECT_EQ(m->ram_size, 1u << 20);
  auto ram = DiskTable::Decode(*store_->GetObject(m->ram_table));
  ASSERT_TRUE(ram.ok()) << ram.status().ToString();
  EXPECT_EQ(ram->chunk_size, kRamChunkSize);
  EXPECT_EQ(ram->image_size, 1u << 20);
  EXPECT_LT(m->memory_size, 64u << 10) << "the memory image should hold no RAM";
  // The table is the guest's memory, chunk by chunk.
  Bytes memory = home.Guest("notes")->Memory();
  EXPECT_EQ(ram->ids[3], ChunkId::Of(ByteView(memory.data() + 3 * kRamChunkSize, kRamChunkSize)));

  // Reachable by a capability for the service.
  CheckpointScope scope(store_.get());
  Capability cap{"notes", "alice", 1600, "fp-1"};
  ASSERT_TRUE(scope.GrantCurrent(cap, 1000).ok());
  EXPECT_TRUE(scope.Check(cap, {m->ram_table, ram->ids[0], ram->ids[15]}, 1000).ok());

  // A second checkpoint with nothing changed in RAM stores no RAM chunk.
  ASSERT_TRUE(p->host()->Apply(In(5)).ok());
  ASSERT_TRUE(WaitApplied(*p, 5));
  auto again = Checkpoint(home, *p, base);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->ram_apart);
  EXPECT_EQ(again->ram.new_chunks, 0u);
  EXPECT_EQ(again->manifest.ram_table, m->ram_table);

  // A surrogate's RAM working set for that table is carried to the next
  // checkpoint's table by offset when the RAM changed.
  ASSERT_TRUE(SaveWorkingSet(store_.get(), WorkingSetRecord{m->ram_table, {ram->ids[9], ram->ids[2]}}).ok());
  Bytes changed = home.Guest("notes")->Memory();
  for (size_t i = 0; i < changed.size(); i += 4096) changed[i] ^= 0x5a;
  home.Guest("notes")->SetMemory(changed);
  ASSERT_TRUE(p->host()->Apply(In(6)).ok());
  ASSERT_TRUE(WaitApplied(*p, 6));
  auto third = Checkpoint(home, *p, base);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  ASSERT_NE(third->manifest.ram_table, m->ram_table);
  auto next_ram = DiskTable::Decode(*store_->GetObject(third->manifest.ram_table));
  ASSERT_TRUE(next_ram.ok());
  auto carried = LoadWorkingSet(store_.get(), third->manifest.ram_table);
  ASSERT_TRUE(carried.ok()) << carried.status().ToString();
  EXPECT_EQ(carried->ids, (std::vector<ChunkId>{next_ram->ids[9], next_ram->ids[2]}));

  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(cafe.Guest("replica-1")->Digest(), home.Guest("notes")->Digest());
  EXPECT_EQ(cafe.Guest("replica-1")->last_seq(), 6u);
  r->reset();

  // A RAM chunk missing: refused, and nothing runs.
  std::vector<ChunkId> gone{next_ram->ids[7]};
  ASSERT_TRUE(store_->Delete(gone).ok());
  auto broken = Instantiate(cafe, src, Options("replica-2"));
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(broken.status().IsNotFound()) << broken.status().ToString();
  EXPECT_TRUE(cafe.List().empty());
}

// A surrogate's record of the order its replica first read a table in: kept
// only if every id is a chunk of that table, once; the longest record per
// table stands; a surrogate's next replica prefetches in that order.
TEST_F(ReplicaTest, TheHomeKeepsTheLongestWorkingSetOfChunksOfItsTable) {
  // (Chunks 4 to 7 of the fixture's disk are zero: null ids.)
  auto table_id = store_->PutObject(table_.Encode());
  ASSERT_TRUE(table_id.ok());
  ChunkService service(store_.get());
  std::vector<ChunkId> three{table_.ids[2], table_.ids[0], table_.ids[1]};
  ASSERT_TRUE(service.StoreWorkingSet(*table_id, three).ok());
  EXPECT_EQ(LoadWorkingSet(store_.get(), *table_id)->ids, three);
  // Shorter: the longer stays.
  ASSERT_TRUE(service.StoreWorkingSet(*table_id, {table_.ids[8]}).ok());
  EXPECT_EQ(LoadWorkingSet(store_.get(), *table_id)->ids, three);
  // Longer: replaces it.
  std::vector<ChunkId> four{table_.ids[9], table_.ids[2], table_.ids[0], table_.ids[1]};
  ASSERT_TRUE(service.StoreWorkingSet(*table_id, four).ok());
  EXPECT_EQ(LoadWorkingSet(store_.get(), *table_id)->ids, four);
  // A chunk of no table of its, a repeat, the null id, or no table at all.
  EXPECT_EQ(service.StoreWorkingSet(*table_id, {table_.ids[1], ChunkId::Of(AsBytes("x")), table_.ids[2], table_.ids[3],
                                                table_.ids[10]}).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(service.StoreWorkingSet(*table_id, {table_.ids[1], table_.ids[1], table_.ids[2], table_.ids[3],
                                                table_.ids[10]}).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(service.StoreWorkingSet(*table_id, {ChunkId(), table_.ids[1], table_.ids[2], table_.ids[3],
                                                table_.ids[10]}).code(), Status::Code::kInvalidArgument);
  EXPECT_FALSE(service.StoreWorkingSet(ChunkId::Of(AsBytes("no table")), three).ok());
  EXPECT_EQ(LoadWorkingSet(store_.get(), *table_id)->ids, four);
}

// A replica that does not fit is refused before anything is fetched or
// started, with admission's reason; one that fits holds its ticket.
TEST_F(ReplicaTest, AdmissionRefusesAReplicaThatDoesNotFitBeforeItStarts) {
  FakeHypervisor home, cafe;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 4, &base);
  ASSERT_TRUE(p);
  StoreCheckpointSource src(store_.get());
  auto made = Admission::Make(AdmissionOptions{1, 0, 0}, [&] { return cafe.Memory(); });
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::unique_ptr<Admission> admission = std::move(*made);
  // The agent's hook: admit, and hold the ticket for the replica's life.
  auto admit_into = [&admission](std::unique_ptr<Admission::Ticket>* held) {
    return [&admission, held](const Manifest& m) -> Status {
      SLINGSHOT_ASSIGN_OR_RETURN(*held, admission->Admit(m.service_id, m.vm.memory_mib));
      return Status::OK();
    };
  };
  std::unique_ptr<Admission::Ticket> ticket;
  InstantiateOptions o = Options("replica-1");
  o.admit = admit_into(&ticket);
  auto r = Instantiate(cafe, src, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(admission->State().replicas, 1);
  std::unique_ptr<Admission::Ticket> second;
  InstantiateOptions o2 = Options("replica-2");
  o2.admit = admit_into(&second);
  auto refused = Instantiate(cafe, src, o2);
  ASSERT_EQ(refused.status().code(), Status::Code::kResourceExhausted) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("already runs 1 of its 1 replicas"), std::string::npos);
  EXPECT_EQ(cafe.restores(), 1);  // nothing was started for it
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "replica-2"));
}

TEST_F(ReplicaTest, ReplayedInputsBringAReplicaToThePrimarysState) {
  FakeHypervisor home, cafe;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 3, &base);
  ASSERT_TRUE(p);
  for (uint64_t s = 4; s <= 9; ++s) ASSERT_TRUE(p->host()->Apply(In(s)).ok());
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (uint64_t s = 1; s <= 9; ++s) ASSERT_TRUE((*r)->host()->Apply(In(s)).ok());  // overlaps are ignored
  ASSERT_TRUE(WaitApplied(**r, 9));
  EXPECT_EQ(cafe.Guest("replica-1")->Digest(), home.Guest("notes")->Digest());
}

// The memory image is handed to Restore as a stream, as its chunks arrive,
// not fetched whole first.
TEST_F(ReplicaTest, MemoryStreamsIntoRestoreInManyPieces) {
  FakeHypervisor home;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 2, &base);
  ASSERT_TRUE(p);
  auto m = VerifyManifest(*store_->GetObject(store_->GetRef("manifest/notes")->object), key_->public_key());
  auto list = ChunkList::Decode(*store_->GetObject(m->memory_list));
  ASSERT_TRUE(list.ok());
  ASSERT_GT(list->entries.size(), 4u);
  std::vector<InstantiateProgress> seen;
  FakeHypervisor cafe;
  StoreCheckpointSource src(store_.get());
  InstantiateOptions o = Options("replica-1");
  o.progress = [&](const InstantiateProgress& pr) { seen.push_back(pr); };
  auto r = Instantiate(cafe, src, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(cafe.last_restore_bytes(), m->memory_size);
  std::vector<std::string> phases;
  for (const auto& pr : seen) {
    if (phases.empty() || phases.back() != pr.phase) phases.push_back(pr.phase);
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"manifest", "files", "restore", "ready"}));
}

// A service that listens on another port than 5900 worked at home and
// never on a surrogate: the agent hard-coded 5900. The port travels in the
// manifest and the replica's service is reached on it.
TEST_F(ReplicaTest, ServicePortFromTheManifestIsForwardedAndUsed) {
  FakeHypervisor home, cafe;
  Manifest base = Base(5901);
  auto p = PrimaryWithCheckpoint(home, 1, &base);
  ASSERT_TRUE(p);
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto spec = cafe.SpecOf("replica-1");
  ASSERT_TRUE(spec);
  EXPECT_EQ(spec->service_ports, std::vector<uint16_t>{5901});
  EXPECT_EQ((*r)->service_endpoint(), *cafe.ServiceEndpoint("replica-1", 5901));
  EXPECT_FALSE(cafe.ServiceEndpoint("replica-1", 5900).ok());
}

TEST_F(ReplicaTest, AForeignMemoryImageOfAStateOnDiskServiceBootsFromTheDisk) {
  FakeHypervisor home;
  Manifest base = Base();
  base.state_on_disk = true;
  auto p = PrimaryWithCheckpoint(home, 2, &base);
  ASSERT_TRUE(p);
  FakeHypervisorOptions xo;
  xo.stream_format = "other";
  FakeHypervisor cafe(xo);
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->booted());
  EXPECT_EQ(cafe.boots(), 1);
  EXPECT_EQ(cafe.restores(), 0);
  // Booted from the checkpoint's disk, at the checkpoint's seq.
  EXPECT_EQ((*r)->host()->consumed(), 2u);
}

TEST_F(ReplicaTest, AForeignMemoryImageOfAServiceWithStateInMemoryIsRefused) {
  FakeHypervisor home;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 0, &base);
  ASSERT_TRUE(p);
  FakeHypervisorOptions xo;
  xo.stream_format = "other";
  FakeHypervisor cafe(xo);
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kUnsupported);
  EXPECT_NE(r.status().message().find("--state-on-disk"), std::string::npos) << r.status().ToString();
  EXPECT_TRUE(cafe.List().empty());
}

TEST_F(ReplicaTest, PreferBootBootsAStateOnDiskServiceThatWouldRestore) {
  FakeHypervisor home, cafe;
  Manifest base = Base();
  base.state_on_disk = true;
  auto p = PrimaryWithCheckpoint(home, 1, &base);
  ASSERT_TRUE(p);
  StoreCheckpointSource src(store_.get());
  InstantiateOptions o = Options("replica-1");
  o.prefer_boot = true;
  auto r = Instantiate(cafe, src, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->booted());
  EXPECT_EQ(cafe.restores(), 0);
}

TEST_F(ReplicaTest, AManifestSignedByAnotherKeyIsRefused) {
  FakeHypervisor home, cafe;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 1, &base);
  ASSERT_TRUE(p);
  StoreCheckpointSource src(store_.get());
  InstantiateOptions o = Options("replica-1");
  o.manifest_key = SigningKey::Generate()->public_key();
  auto r = Instantiate(cafe, src, o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("refused"), std::string::npos);
  EXPECT_TRUE(cafe.List().empty());
}

TEST_F(ReplicaTest, AManifestOfAnotherServiceUnderTheRefIsRefused) {
  FakeHypervisor cafe;
  Manifest m = Base();
  m.service_id = "mail";
  auto id = store_->PutObject(SignManifest(m, *key_));
  ASSERT_TRUE(store_->SetRef(Ref{"manifest/notes", ObjectKind::kManifest, *id}).ok());
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is for mail"), std::string::npos) << r.status().ToString();
}

TEST_F(ReplicaTest, AManifestWithoutBootFilesIsUnsupported) {
  FakeHypervisor cafe;
  Manifest m = Base();
  m.kernel = ChunkId();
  auto id = store_->PutObject(SignManifest(m, *key_));
  ASSERT_TRUE(store_->SetRef(Ref{"manifest/notes", ObjectKind::kManifest, *id}).ok());
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kUnsupported);
}

TEST_F(ReplicaTest, NoCheckpointYetIsNotFound) {
  FakeHypervisor cafe;
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
}

TEST_F(ReplicaTest, AFailedRestoreLeavesNothingRunning) {
  FakeHypervisor home, cafe;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 1, &base);
  ASSERT_TRUE(p);
  cafe.FailNextRestore(Status::Corruption("the stream's trailer does not match"));
  StoreCheckpointSource src(store_.get());
  auto r = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("trailer"), std::string::npos);
  EXPECT_TRUE(cafe.List().empty());
  // A second try works: nothing was left behind (name, disk socket).
  auto again = Instantiate(cafe, src, Options("replica-1"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
}

TEST_F(ReplicaTest, AServiceThatNeverAnswersFailsTheInstantiateAndDestroysTheVm) {
  FakeHypervisor home;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 1, &base);
  ASSERT_TRUE(p);
  FakeHypervisor cafe;
  cafe.RefuseNextService();  // the restored guest refuses its service connection
  StoreCheckpointSource src(store_.get());
  InstantiateOptions o = Options("replica-1");
  o.restore_connect_ms = 200;
  auto r = Instantiate(cafe, src, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("refuses"), std::string::npos) << r.status().ToString();
  EXPECT_TRUE(cafe.List().empty());
}

TEST_F(ReplicaTest, DestroyStopsTheVmAndIsIdempotent) {
  FakeHypervisor hv;
  auto p = BootPrimary(hv, Base());
  ASSERT_TRUE(p.ok());
  (*p)->Destroy();
  EXPECT_TRUE(hv.List().empty());
  (*p)->Destroy();
  p->reset();
  EXPECT_TRUE(hv.List().empty());
}

TEST_F(ReplicaTest, ALostServiceConnectionMarksTheReplicaLost) {
  FakeHypervisor home, cafe;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(home, 1, &base);
  ASSERT_TRUE(p);
  StoreCheckpointSource src(store_.get());
  InstantiateOptions o = Options("replica-1");
  std::atomic<int> lost{0};
  o.on_lost = [&](const Status&) { ++lost; };
  auto r = Instantiate(cafe, src, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE((*r)->lost());
  cafe.Guest("replica-1")->DropConnections(Status::IOError("connection reset by peer"));
  EXPECT_TRUE((*r)->lost());
  EXPECT_EQ(lost, 1);
}

// A capability's holder reads its service's checkpoint and nothing else
// (the home used to serve any id to any capability).
TEST_F(ReplicaTest, ACapabilityReachesOnlyItsServicesCheckpoint) {
  FakeHypervisor hv;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(hv, 2, &base);
  ASSERT_TRUE(p);
  // Another service's disk in the same store.
  testing::WriteFile(tmp_ / "mail.img", testing::RandomBytes(256 << 10, 9));
  auto mail = ImportDisk(tmp_ / "mail.img", store_.get());
  ASSERT_TRUE(mail.ok());
  auto mail_table = store_->PutObject(mail->table.Encode());
  ASSERT_TRUE(mail_table.ok());

  CheckpointScope scope(store_.get());
  const int64_t now = 1000;
  Capability cap{"notes", "alice", now + 600, "fp-1"};
  // Nothing before the manifest was handed out.
  EXPECT_EQ(scope.Check(cap, {table_.ids[0]}, now).code(), Status::Code::kPermissionDenied);
  auto ref = scope.GrantCurrent(cap, now);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  auto m = VerifyManifest(*store_->GetObject(ref->object), key_->public_key());
  ASSERT_TRUE(m.ok());
  auto memory = ChunkList::Decode(*store_->GetObject(m->memory_list));
  ASSERT_TRUE(memory.ok());
  EXPECT_TRUE(scope.Check(cap, {ref->object, m->disk_table, m->memory_list, m->kernel, m->initrd}, now).ok());
  EXPECT_TRUE(scope.Check(cap, {table_.ids[0], table_.ids[15], memory->entries[0].id}, now).ok());
  // Not another service's table or chunks, not a made-up id.
  Status other = scope.Check(cap, {table_.ids[0], *mail_table}, now);
  EXPECT_EQ(other.code(), Status::Code::kPermissionDenied);
  EXPECT_NE(other.message().find("not part of a checkpoint of notes"), std::string::npos) << other.ToString();
  EXPECT_FALSE(scope.Check(cap, {mail->table.ids[0]}, now).ok());
  EXPECT_FALSE(scope.Check(cap, {ChunkId::Of(AsBytes("guess"))}, now).ok());
  // Another capability was handed nothing yet.
  EXPECT_FALSE(scope.Check(Capability{"notes", "alice", now + 600, "fp-2"}, {table_.ids[0]}, now).ok());
  // An expired capability reads nothing.
  EXPECT_FALSE(scope.Check(cap, {table_.ids[0]}, now + 600).ok());
  EXPECT_FALSE(scope.GrantCurrent(cap, now + 601).ok());
}

TEST_F(ReplicaTest, AGrantedCheckpointStaysInScopeAfterANewerOne) {
  FakeHypervisor hv;
  Manifest base = Base();
  auto p = PrimaryWithCheckpoint(hv, 1, &base);
  ASSERT_TRUE(p);
  CheckpointScope scope(store_.get(), 1);  // one cached set: a recomputation is needed too
  Capability cap{"notes", "alice", 2000, "fp"};
  auto first = scope.GrantCurrent(cap, 1000);
  ASSERT_TRUE(first.ok());
  auto m1 = VerifyManifest(*store_->GetObject(first->object), key_->public_key());
  // The guest writes; a new checkpoint has a new disk table.
  Bytes block(64 << 10, 0x5a);
  ASSERT_TRUE(p->disk().table_export().Write(0, block).ok());
  ASSERT_TRUE(p->host()->Apply(In(2)).ok());
  auto ck = Checkpoint(hv, *p, base);
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  ASSERT_NE(ck->manifest.disk_table, m1->disk_table);
  ASSERT_TRUE(scope.GrantCurrent(Capability{"notes", "bob", 2000, "other"}, 1000).ok());
  EXPECT_TRUE(scope.Check(cap, {m1->disk_table}, 1000).ok());
  EXPECT_FALSE(scope.Check(cap, {ck->manifest.disk_table}, 1000).ok());
  ASSERT_TRUE(scope.GrantCurrent(cap, 1000).ok());
  EXPECT_TRUE(scope.Check(cap, {m1->disk_table, ck->manifest.disk_table}, 1000).ok());
}

// The home's primary: first boot, checkpoints, restore after a death or a
// lost service connection, and the restart path.
class PrimaryTest : public ReplicaTest {
 protected:
  PrimaryOptions Options(uint64_t every_inputs = 1000) {
    PrimaryOptions o;
    o.base = Base();
    o.kernel = tmp_ / "kernel";
    o.initrd = tmp_ / "initrd";
    o.run_dir = tmp_ / "primary-run";
    o.first_disk = [this]() -> Result<DiskTable> { return table_; };
    o.store = store_.get();
    o.key = &*key_;
    o.checkpoint_inputs = every_inputs;
    o.boot_timeout_ms = 2000;
    o.restore_connect_ms = 2000;
    o.on_up = [this](const LiveReplica&) { ++ups_; };
    o.on_checkpoint = [this](const CheckpointResult& r) { published_.push_back(r.manifest); };
    return o;
  }
  int ups_ = 0;
  std::vector<Manifest> published_;
};

TEST_F(PrimaryTest, TheFirstBringUpBootsAndPublishesACheckpointAtSeqZero) {
  FakeHypervisor hv;
  Primary p(hv, Options());
  ASSERT_TRUE(p.Step(CheckpointSchedule::Clock::now()).ok());
  EXPECT_TRUE(p.up());
  EXPECT_EQ(hv.boots(), 1);
  EXPECT_EQ(ups_, 1);
  ASSERT_EQ(published_.size(), 1u);
  EXPECT_EQ(published_[0].epoch, 1u);
  EXPECT_EQ(published_[0].last_seq, 0u);
  EXPECT_EQ(p.epoch(), 1u);
}

TEST_F(PrimaryTest, AStepCheckpointsWhenEnoughInputsCame) {
  FakeHypervisor hv;
  Primary p(hv, Options(3));
  ASSERT_TRUE(p.BringUp().ok());
  auto now = CheckpointSchedule::Clock::now();
  ASSERT_TRUE(p.host()->Apply(In(1)).ok());
  ASSERT_TRUE(p.Step(now).ok());
  EXPECT_EQ(published_.size(), 1u);  // not due yet
  ASSERT_TRUE(p.host()->Apply(In(2)).ok());
  ASSERT_TRUE(p.host()->Apply(In(3)).ok());
  ASSERT_TRUE(p.Step(now).ok());
  ASSERT_EQ(published_.size(), 2u);
  EXPECT_EQ(published_[1].epoch, 2u);
  EXPECT_EQ(published_[1].last_seq, 3u);
}

TEST_F(PrimaryTest, ADeadPrimaryIsRestoredFromItsLastCheckpoint) {
  FakeHypervisor hv;
  Primary p(hv, Options(2));
  hv.OnDeath([&](const std::string&, const std::string&) { p.MarkDead(); });
  ASSERT_TRUE(p.BringUp().ok());
  ASSERT_TRUE(p.host()->Apply(In(1)).ok());
  ASSERT_TRUE(p.host()->Apply(In(2)).ok());
  ASSERT_TRUE(p.Step(CheckpointSchedule::Clock::now()).ok());  // epoch 2 covers 2
  ChunkId at_checkpoint = hv.Guest("notes")->Digest();
  ASSERT_TRUE(p.host()->Apply(In(3)).ok());  // only in the client's log from here
  hv.Kill("notes", "qemu killed by signal 9");
  EXPECT_FALSE(p.up());
  ASSERT_TRUE(p.Step(CheckpointSchedule::Clock::now()).ok());
  EXPECT_TRUE(p.up());
  EXPECT_EQ(hv.restores(), 1);
  EXPECT_EQ(hv.Guest("notes")->Digest(), at_checkpoint);
  EXPECT_EQ(p.host()->consumed(), 2u);
  EXPECT_EQ(p.epoch(), 2u);
}

TEST_F(PrimaryTest, ALostServiceConnectionRestoresThePrimaryToo) {
  FakeHypervisor hv;
  Primary p(hv, Options());
  ASSERT_TRUE(p.BringUp().ok());
  hv.Guest("notes")->DropConnections(Status::IOError("connection reset by peer"));
  EXPECT_FALSE(p.up());
  ASSERT_TRUE(p.Step(CheckpointSchedule::Clock::now()).ok());
  EXPECT_TRUE(p.up());
  EXPECT_EQ(hv.restores(), 1);
}

TEST_F(PrimaryTest, AFailedBringUpLeavesNothingAndTheNextStepTriesAgain) {
  FakeHypervisor hv;
  hv.FailNextBoot(Status::IOError("qemu: could not allocate memory"));
  Primary p(hv, Options());
  Status first = p.Step(CheckpointSchedule::Clock::now());
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.message().find("could not allocate"), std::string::npos);
  EXPECT_FALSE(p.up());
  EXPECT_TRUE(hv.List().empty());
  ASSERT_TRUE(p.Step(CheckpointSchedule::Clock::now()).ok());
  EXPECT_TRUE(p.up());
}

TEST_F(PrimaryTest, AHomeRestartRestoresInsteadOfBooting) {
  {
    FakeHypervisor hv;
    Primary p(hv, Options(1));
    ASSERT_TRUE(p.BringUp().ok());
    ASSERT_TRUE(p.host()->Apply(In(1)).ok());
    ASSERT_TRUE(p.Step(CheckpointSchedule::Clock::now()).ok());
  }  // the home stops: its VMs go with it
  FakeHypervisor hv;
  Primary p(hv, Options(1));
  ASSERT_TRUE(p.BringUp().ok());
  EXPECT_EQ(hv.boots(), 0);
  EXPECT_EQ(hv.restores(), 1);
  EXPECT_EQ(p.host()->consumed(), 1u);
  EXPECT_EQ(p.epoch(), 2u);
}

TEST(CheckpointScheduleTest, DueAfterEnoughInputs) {
  CheckpointSchedule s(10, std::chrono::seconds(60));
  auto t = CheckpointSchedule::Clock::now();
  s.Taken(5, t);
  EXPECT_FALSE(s.Due(14, t));
  EXPECT_TRUE(s.Due(15, t));
}

TEST(CheckpointScheduleTest, DueAfterTheIntervalOnlyIfAnInputCame) {
  CheckpointSchedule s(1000, std::chrono::seconds(60));
  auto t = CheckpointSchedule::Clock::now();
  s.Taken(7, t);
  EXPECT_FALSE(s.Due(7, t + std::chrono::seconds(3600)));
  EXPECT_FALSE(s.Due(8, t + std::chrono::seconds(59)));
  EXPECT_TRUE(s.Due(8, t + std::chrono::seconds(60)));
}

TEST(CheckpointScheduleTest, FailedCheckpointsBackOffAndASuccessResetsIt) {
  using std::chrono::seconds;
  CheckpointSchedule s(100, seconds(60));
  auto t = CheckpointSchedule::Clock::now();
  s.Taken(0, t);
  EXPECT_TRUE(s.Due(500, t));  // many inputs: due at once
  s.Failed(t);
  // The input count stays over the limit, yet no try for 5 s, then 10, 20...
  EXPECT_FALSE(s.Due(500, t + seconds(4)));
  EXPECT_TRUE(s.Due(500, t + seconds(5)));
  s.Failed(t + seconds(5));
  EXPECT_FALSE(s.Due(500, t + seconds(14)));
  EXPECT_TRUE(s.Due(500, t + seconds(15)));
  for (int i = 0; i < 20; ++i) s.Failed(t + seconds(15));
  EXPECT_FALSE(s.Due(500, t + seconds(15) + seconds(299)));
  EXPECT_TRUE(s.Due(500, t + seconds(15) + CheckpointSchedule::kMaxBackoff));
  s.Taken(500, t + seconds(400));
  EXPECT_EQ(s.failures(), 0u);
  EXPECT_TRUE(s.Due(600, t + seconds(400)));
}

TEST(ServiceTypeTest, RfbIsBuiltInAndUnknownTypesAreUnsupported) {
  EXPECT_TRUE(IsServiceType("rfb"));
  EXPECT_FALSE(IsServiceType("speech"));
  auto a = ServiceAdapter::Open("speech", Endpoint{"127.0.0.1", 1}, 0, {}, 10);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), Status::Code::kUnsupported);
  EXPECT_NE(a.status().message().find("rfb"), std::string::npos);
  EXPECT_EQ(ServiceAdapter::CheckInput("speech", 1, {}).code(), Status::Code::kUnsupported);
}

TEST(ServiceTypeTest, ATypeRegistersOnceAndMustBeWhole) {
  fake::RegisterFakeService();
  EXPECT_TRUE(IsServiceType(fake::kServiceType));
  ServiceType again;
  again.name = "rfb";
  again.open = [](const Endpoint&, uint64_t, ServiceCallbacks, int) -> Result<std::unique_ptr<ServiceAdapter>> {
    return Status::Unsupported("no");
  };
  again.check_input = [](uint16_t, ByteView) { return Status::OK(); };
  EXPECT_EQ(RegisterServiceType(again).code(), Status::Code::kAlreadyExists);
  ServiceType half;
  half.name = "half";
  EXPECT_EQ(RegisterServiceType(half).code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(ServiceAdapter::CheckInput(fake::kServiceType, 1, Bytes(10)).ok());
  EXPECT_FALSE(ServiceAdapter::CheckInput(fake::kServiceType, 2, Bytes(10)).ok());
}

TEST(FakeHypervisorTest, ADeathRunsTheCallbackAndForgetsTheVm) {
  fake::RegisterFakeService();
  FakeHypervisor hv;
  std::string died, why;
  hv.OnDeath([&](const std::string& n, const std::string& w) {
    died = n;
    why = w;
  });
  VmSpec s;
  s.name = "x";
  s.service_ports = {5900};
  ASSERT_TRUE(hv.Boot(s).ok());
  auto ep = hv.ServiceEndpoint("x", 5900);
  ASSERT_TRUE(ep.ok());
  EXPECT_TRUE(fake::GuestAt(*ep));
  hv.Kill("x", "out of memory");
  EXPECT_EQ(died, "x");
  EXPECT_EQ(why, "out of memory");
  EXPECT_TRUE(hv.List().empty());
  EXPECT_FALSE(fake::GuestAt(*ep));
}

TEST(FakeHypervisorTest, AStreamOfAnotherFormatIsUnsupported) {
  FakeHypervisor a, b(FakeHypervisorOptions{"other"});
  VmSpec s;
  s.name = "x";
  ASSERT_TRUE(a.Boot(s).ok());
  Bytes stream;
  ASSERT_TRUE(a.Checkpoint("x", [&](ByteView v) {
                 stream.insert(stream.end(), v.begin(), v.end());
                 return Status::OK();
               }, true).ok());
  auto r = b.Restore(s, [&](const ByteSink& sink) { return sink(stream); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kUnsupported);
  stream[stream.size() / 2] ^= 1;
  VmSpec y;
  y.name = "y";
  auto c = a.Restore(y, [&](const ByteSink& sink) { return sink(stream); });
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsCorruption()) << c.status().ToString();
}

}  // namespace
}  // namespace slingshot
