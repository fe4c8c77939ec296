// Real VMs under QEMU (TCG on these machines) running the notepad guest,
// driven with real RFB input. Label: vm.
#include <gtest/gtest.h>
#include <signal.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <set>
#include <thread>

#include "../unit/test_util.h"
#include "notepad_client.h"
#include "slingshot/disk/lazy_image.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/replica/checkpoint.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/mutex.h"
#include "slingshot/vm/hypervisor.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/vm/vm_stream.h"

namespace slingshot::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kBootTimeout = 60s;

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HypervisorOptions o;
    o.backend = "qemu";
    o.accel = "tcg";
    auto h = OpenHypervisor(o);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    hv_ = std::move(*h);
    std::string error;
    auto font = notepad::LoadPsf(GuestDir() + "/notepad.psf", &error);
    ASSERT_TRUE(font) << error;
    font_ = *font;
  }

  VmSpec Spec(const std::string& name) { return NotepadSpec(name, dir_ / name); }

  Endpoint Ep(const std::string& name, uint16_t port) {
    auto ep = hv_->ServiceEndpoint(name, port);
    EXPECT_TRUE(ep.ok()) << ep.status().ToString();
    return ep.ok() ? *ep : Endpoint{};
  }

  void BootAndWait(const VmSpec& spec) {
    ASSERT_TRUE(hv_->Boot(spec).ok());
    Status s = WaitForNotepad(Ep(spec.name, kControlPort), kBootTimeout);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void TypeAndWait(const std::string& vm, const std::string& keys, const std::string& want) {
    auto rfb = RfbSession::Connect(Ep(vm, kRfbPort));
    ASSERT_TRUE(rfb.ok()) << rfb.status().ToString();
    ASSERT_TRUE((*rfb)->Type(keys).ok());
    Status s = WaitForText(Ep(vm, kControlPort), want, 30s, rfb->get());
    ASSERT_TRUE(s.ok()) << s.ToString();
    s = (*rfb)->WaitForScreen(font_, want, 30s);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  Result<CheckpointStats> CheckpointTo(const std::string& vm, Bytes* out, bool keep_running = true) {
    out->clear();
    return hv_->Checkpoint(vm, [out](ByteView b) {
      out->insert(out->end(), b.begin(), b.end());
      return Status::OK();
    }, keep_running);
  }

  static StreamProducer From(const Bytes& bytes, size_t piece = 100000) {
    return [&bytes, piece](const ByteSink& sink) {
      for (size_t off = 0; off < bytes.size(); off += piece) {
        SLINGSHOT_RETURN_IF_ERROR(
            sink(ByteView(bytes).subspan(off, std::min(piece, bytes.size() - off))));
      }
      return Status::OK();
    };
  }

  TempDir dir_;
  std::unique_ptr<Hypervisor> hv_;
  notepad::Font font_;
};

TEST_F(VmTest, CheckpointKeepsRunningAndRestoresExactState) {
  BootAndWait(Spec("a"));
  TypeAndWait("a", "Hello, Slingshot!\nline two", "Hello, Slingshot!\nline two");

  Bytes ckpt;
  auto stats = CheckpointTo("a", &ckpt);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GT(stats->stream_bytes, 1u << 20);
  EXPECT_EQ(stats->stream_bytes, ckpt.size());
  ASSERT_EQ(hv_->Info("a")->state, VmState::kRunning);

  // The original keeps running and takes more input.
  TypeAndWait("a", " and more", "Hello, Slingshot!\nline two and more");

  auto r = hv_->Restore(Spec("b"), From(ckpt));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stream_bytes, ckpt.size());
  // The replica shows exactly the checkpoint-time document, on screen too,
  // and takes new input.
  auto text = DocumentText(Ep("b", kControlPort));
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "Hello, Slingshot!\nline two");
  auto rfb = RfbSession::Connect(Ep("b", kRfbPort));
  ASSERT_TRUE(rfb.ok());
  Status s = (*rfb)->WaitForScreen(font_, "Hello, Slingshot!\nline two", 30s);
  EXPECT_TRUE(s.ok()) << s.ToString();
  rfb->reset();
  TypeAndWait("b", "!", "Hello, Slingshot!\nline two!");
  // The two replicas are independent.
  EXPECT_TRUE(WaitForText(Ep("a", kControlPort), "Hello, Slingshot!\nline two and more", 5s).ok());
  EXPECT_EQ(hv_->List().size(), 2u);
}

// RAM kept apart: the stream carries device state only, the RAM is handed
// to the caller as it was at the pause (copied aside while the guest stood
// still), and a restore given that RAM back brings the guest back exactly;
// without it, the restore is refused.
TEST_F(VmTest, RamKeptApartIsCopiedAtThePauseAndRestoresTheGuestExactly) {
  BootAndWait(Spec("a"));
  TypeAndWait("a", "kept apart", "kept apart");
  Bytes ckpt, ram;
  std::vector<GuestRam::Extent> extents;
  bool ran = false, ram_after_run = false;
  CheckpointHooks hooks;
  hooks.running = [&] { ran = true; };
  hooks.ram = [&](const GuestRam& g) {
    ram_after_run = ran;
    ram.assign(g.bytes.begin(), g.bytes.end());
    extents = g.data;
    return Status::OK();
  };
  auto c = hv_->Checkpoint("a", [&](ByteView b) {
    ckpt.insert(ckpt.end(), b.begin(), b.end());
    return Status::OK();
  }, true, hooks);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->ram_apart);
  EXPECT_TRUE(ram_after_run) << "RAM went to the caller before the guest ran again";
  EXPECT_LT(ckpt.size(), 4u << 20) << "the stream should hold device state only";
  ASSERT_EQ(ram.size(), uint64_t{Spec("a").memory_mib} << 20);
  ASSERT_FALSE(extents.empty());
  uint64_t data_bytes = 0;
  for (const auto& e : extents) data_bytes += e.length;
  EXPECT_GT(data_bytes, 8u << 20) << "a booted guest has written some of its RAM";
  // After the checkpoint: not in it.
  TypeAndWait("a", " later", "kept apart later");

  auto refused = hv_->Restore(Spec("none"), From(ckpt));
  EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument) << refused.status().ToString();

  RestoreRam given;
  given.size = ram.size();
  given.fill = [&](const RestoreRam::Put& put) -> Status {
    for (const auto& e : extents) SLINGSHOT_RETURN_IF_ERROR(put(e.offset, ByteView(ram.data() + e.offset, e.length)));
    return Status::OK();
  };
  auto r = hv_->Restore(Spec("b"), From(ckpt), &given);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto text = DocumentText(Ep("b", kControlPort));
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "kept apart");
  TypeAndWait("b", "!", "kept apart!");

  // The restored VM keeps its RAM apart too: its own checkpoint restores.
  Bytes ckpt2, ram2;
  std::vector<GuestRam::Extent> extents2;
  hooks.ram = [&](const GuestRam& g) {
    ram2.assign(g.bytes.begin(), g.bytes.end());
    extents2 = g.data;
    return Status::OK();
  };
  auto c2 = hv_->Checkpoint("b", [&](ByteView b) {
    ckpt2.insert(ckpt2.end(), b.begin(), b.end());
    return Status::OK();
  }, true, hooks);
  ASSERT_TRUE(c2.ok()) << c2.status().ToString();
  EXPECT_TRUE(c2->ram_apart);
  RestoreRam given2;
  given2.size = ram2.size();
  given2.fill = [&](const RestoreRam::Put& put) -> Status {
    for (const auto& e : extents2) SLINGSHOT_RETURN_IF_ERROR(put(e.offset, ByteView(ram2.data() + e.offset, e.length)));
    return Status::OK();
  };
  // And QEMU restores without the guest's boot files (its kernel is in the
  // restored RAM): a replica need not fetch them.
  EXPECT_FALSE(hv_->RestoreNeedsBootFiles());
  VmSpec bare = Spec("c");
  bare.kernel.clear();
  bare.initrd.clear();
  auto r2 = hv_->Restore(bare, From(ckpt2), &given2);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_TRUE(WaitForText(Ep("c", kControlPort), "kept apart!", 30s).ok());
  TypeAndWait("c", "?", "kept apart!?");
}

// A checkpoint of vm with its RAM kept apart and stored in store as a RAM
// table; the stream (device state) into *stream.
Result<DiskTable> CheckpointRamApart(Hypervisor& hv, const std::string& vm, ChunkStore* store, Bytes* stream) {
  std::optional<DiskTable> table;
  CheckpointHooks hooks;
  hooks.ram = [&](const GuestRam& g) -> Status {
    SLINGSHOT_ASSIGN_OR_RETURN(DiskImport imp, ImportGuestRam(g, store));
    table = imp.table;
    return Status::OK();
  };
  stream->clear();
  SLINGSHOT_ASSIGN_OR_RETURN(CheckpointStats st, hv.Checkpoint(vm, [stream](ByteView b) {
    stream->insert(stream->end(), b.begin(), b.end());
    return Status::OK();
  }, true, hooks));
  if (!st.ram_apart || !table) return Status::IOError("the checkpoint did not keep RAM apart");
  return *table;
}

// The RAM a restore maps lazily from image.
RestoreRam LazyRam(const LazyImage& image) {
  RestoreRam ram;
  ram.size = image.size();
  ram.lazy_file = image.path();
  return ram;
}

// A source that fails every read once told to (the home gone).
class FailingSource final : public ChunkSource {
 public:
  explicit FailingSource(ChunkSource* inner) : inner_(inner) {}
  Result<Bytes> Get(const ChunkId& id) override {
    if (fail_) return Status::IOError("the home went away");
    return inner_->Get(id);
  }
  std::string Describe() const override { return "failing " + inner_->Describe(); }
  std::atomic<bool> fail_{false};

 private:
  ChunkSource* inner_;
};

// A lazy restore: the VM maps its RAM from a LazyImage (FUSE) over the RAM
// table and runs having read only the pages it touched: the document is
// exact and the guest takes keys. Then the background prefetch (through a
// fetch chain into a cache) brings the rest, and the first reads were
// recorded in order.
TEST_F(VmTest, ALazyRestoreRunsTheGuestBeforeItsRamHasArrived) {
  BootAndWait(Spec("a"));
  TypeAndWait("a", "lazy", "lazy");
  auto home = ChunkStore::Open(dir_ / "home", {});
  ASSERT_TRUE(home.ok()) << home.status().ToString();
  Bytes stream;
  auto table = CheckpointRamApart(*hv_, "a", home->get(), &stream);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  size_t stored = 0;
  for (const auto& id : table->ids) stored += !id.IsNull();
  ASSERT_TRUE(hv_->Destroy("a").ok());

  auto cache = ChunkStore::Open(dir_ / "cache", {});
  ASSERT_TRUE(cache.ok());
  FetchChain chain(cache->get(), {home->get()});
  LazyImageOptions lo;
  lo.dir = dir_ / "lazy";
  lo.table = *table;
  lo.chunks = &chain;
  // No prefetch yet: what the guest reads, it reads on demand.
  auto lazy = LazyImage::Mount(lo);
  ASSERT_TRUE(lazy.ok()) << lazy.status().ToString();
  RestoreRam given = LazyRam(**lazy);
  auto r = hv_->Restore(Spec("b"), From(stream), &given);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto text = DocumentText(Ep("b", kControlPort));
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "lazy");
  TypeAndWait("b", "!", "lazy!");
  const LazyImageStats st = (*lazy)->stats();
  const std::vector<ChunkId> first = (*lazy)->FirstReads();
  std::printf("lazy restore: %zu of %zu stored RAM chunks read on demand (%llu reads, %s)\n", first.size(), stored,
              static_cast<unsigned long long>(st.reads), HumanBytes(st.bytes).c_str());
  EXPECT_TRUE((*lazy)->error().ok()) << (*lazy)->error().ToString();
  EXPECT_GT(first.size(), 0u);
  // Faults bring in their own pages, not megabytes around them (a guest
  // that had read 60% of its RAM by now would mean read-around is back).
  EXPECT_LT(first.size() * 10, stored * 6) << "the guest read most of its RAM before it answered";
  // Each first read is a chunk of the table, once.
  std::set<ChunkId> in_table(table->ids.begin(), table->ids.end());
  for (const auto& id : first) EXPECT_TRUE(in_table.count(id));
  ASSERT_TRUE(hv_->Destroy("b").ok());
  lazy->reset();

  // Again with a prefetch through the chain, the first replica's reads
  // first (its working set): it brings the rest into the cache while the
  // guest runs.
  auto cache2 = ChunkStore::Open(dir_ / "cache2", {});
  ASSERT_TRUE(cache2.ok());
  FetchChain chain2(cache2->get(), {home->get()});
  lo.dir = dir_ / "lazy2";
  lo.chunks = &chain2;
  lo.prefetch = &chain2;
  std::set<ChunkId> ordered;
  for (const auto& id : first) {
    if (ordered.insert(id).second) lo.order.push_back(id);
  }
  for (const auto& id : table->ids) {
    if (!id.IsNull() && ordered.insert(id).second) lo.order.push_back(id);
  }
  auto lazy2 = LazyImage::Mount(lo);
  ASSERT_TRUE(lazy2.ok()) << lazy2.status().ToString();
  given = LazyRam(**lazy2);
  auto r2 = hv_->Restore(Spec("c"), From(stream), &given);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  TypeAndWait("c", "?", "lazy?");
  ASSERT_TRUE((*lazy2)->WaitPrefetched().ok());
  EXPECT_EQ((*lazy2)->stats().prefetched, (*lazy2)->stats().prefetch_total);
  for (const auto& id : table->ids) {
    if (id.IsNull()) continue;
    auto has = (*cache2)->Contains(id);
    ASSERT_TRUE(has.ok() && *has) << id.Short();
  }
  EXPECT_TRUE((*lazy2)->error().ok());
  ASSERT_TRUE(hv_->Destroy("c").ok());
  lazy2->reset();
}

// A lazy replica whose source fails (its home gone) ends, cleanly: the
// guest's read of a page that cannot be had fails, QEMU dies of it and is
// reported dead (or the restore itself fails), the lazy image says why,
// and no QEMU is left running.
TEST_F(VmTest, ALazyReplicaWhoseSourceFailsDiesCleanly) {
  BootAndWait(Spec("a"));
  TypeAndWait("a", "doomed", "doomed");
  auto home = ChunkStore::Open(dir_ / "home", {});
  ASSERT_TRUE(home.ok());
  Bytes stream;
  auto table = CheckpointRamApart(*hv_, "a", home->get(), &stream);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  ASSERT_TRUE(hv_->Destroy("a").ok());
  std::atomic<bool> died{false};
  hv_->OnDeath([&](const std::string& name, const std::string&) {
    if (name == "b") died = true;
  });
  FailingSource source(home->get());
  source.fail_ = true;
  LazyImageOptions lo;
  lo.dir = dir_ / "lazy";
  lo.table = *table;
  lo.chunks = &source;
  auto lazy = LazyImage::Mount(lo);
  ASSERT_TRUE(lazy.ok()) << lazy.status().ToString();
  RestoreRam given = LazyRam(**lazy);
  auto r = hv_->Restore(Spec("b"), From(stream), &given);
  if (r.ok()) {
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!died && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
    EXPECT_TRUE(died) << "the guest ran on without its RAM";
    auto info = hv_->Info("b");
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->state, VmState::kDead);
  }
  EXPECT_FALSE((*lazy)->error().ok());
  EXPECT_NE((*lazy)->error().message().find("the home went away"), std::string::npos) << (*lazy)->error().ToString();
  (void)hv_->Destroy("b");
  lazy->reset();
}

// A live checkpoint (QEMU's background snapshot): the caller's at_pause
// runs while the guest stands still, the guest runs again while most of its
// memory is still to stream, and what is saved is the guest as it was at
// the pause: what it is typed after is not in the checkpoint.
TEST_F(VmTest, ALiveCheckpointRunsTheGuestWhileItsMemoryStreamsAndSavesItAsAtThePause) {
  BootAndWait(Spec("a"));
  TypeAndWait("a", "before", "before");
  Bytes ckpt;
  bool paused = false;
  std::optional<size_t> streamed_when_running;
  CheckpointHooks hooks;
  hooks.at_pause = [&] {
    paused = true;
    return Status::OK();
  };
  hooks.running = [&] { streamed_when_running = ckpt.size(); };
  auto c = hv_->Checkpoint("a", [&](ByteView b) {
    ckpt.insert(ckpt.end(), b.begin(), b.end());
    return Status::OK();
  }, true, hooks);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->live);
  EXPECT_TRUE(paused);
  ASSERT_TRUE(streamed_when_running.has_value());
  EXPECT_LT(*streamed_when_running, ckpt.size() / 4) << "the guest ran again only once its memory had streamed";
  ASSERT_EQ(hv_->Info("a")->state, VmState::kRunning);
  TypeAndWait("a", " after", "before after");
  auto r = hv_->Restore(Spec("b"), From(ckpt));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto text = DocumentText(Ep("b", kControlPort));
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "before");
  TypeAndWait("b", "!", "before!");
}

// With live checkpoints off, the guest stands still for the whole save.
TEST_F(VmTest, WithLiveCheckpointsOffTheGuestRunsAgainOnlyAfterTheSave) {
  HypervisorOptions o;
  o.backend = "qemu";
  o.accel = "tcg";
  o.live_checkpoints = false;
  auto h = OpenHypervisor(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  hv_ = std::move(*h);
  BootAndWait(Spec("a"));
  size_t streamed = 0;
  std::optional<size_t> streamed_when_running;
  CheckpointHooks hooks;
  hooks.running = [&] { streamed_when_running = streamed; };
  auto c = hv_->Checkpoint("a", [&](ByteView b) {
    streamed += b.size();
    return Status::OK();
  }, true, hooks);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->live);
  ASSERT_TRUE(streamed_when_running.has_value());
  EXPECT_EQ(*streamed_when_running, streamed);
  TypeAndWait("a", "on", "on");
}

// A listening TCP socket on the host, on every address, that accepts and
// counts connections.
class HostListener {
 public:
  HostListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "listen: " << std::strerror(errno);
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        ++accepted_;
        ::close(c);
      }
    });
  }
  ~HostListener() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

// An IPv4 address of this host other than loopback ("" if none): the LAN.
std::string HostLanAddress() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* i = list; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK)) continue;
    char buf[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    found = buf;
  }
  ::freeifaddrs(list);
  return found;
}

// A replica's network (QEMU's user network, restricted): the guest reaches
// itself, and neither the host (10.0.2.2, where another replica's
// forwarded ports and the agent's are), nor the host's LAN address, nor the
// internet.
TEST_F(VmTest, AReplicaReachesNeitherTheHostNorAnotherReplicaNorTheLan) {
  BootAndWait(Spec("a"));
  BootAndWait(Spec("b"));
  HostListener host;
  auto reach = [&](const std::string& addr, uint16_t port) {
    auto r = Control(Ep("a", kControlPort), "reach " + addr + " " + std::to_string(port));
    return r.ok() ? *r : "control: " + r.status().ToString();
  };
  // The probe works: the guest's own service answers.
  EXPECT_EQ(reach("10.0.2.15", kRfbPort), "reach ok\n");
  EXPECT_NE(reach("10.0.2.2", host.port()).find("reach failed"), std::string::npos);
  const Endpoint other = Ep("b", kControlPort);  // b's control port, forwarded on the host
  EXPECT_NE(reach("10.0.2.2", other.port).find("reach failed"), std::string::npos);
  const std::string lan = HostLanAddress();
  if (!lan.empty()) {
    EXPECT_NE(reach(lan, host.port()).find("reach failed"), std::string::npos) << lan;
  }
  EXPECT_NE(reach("1.1.1.1", 443).find("reach failed"), std::string::npos);
  EXPECT_EQ(host.accepted(), 0);
  // b's document is untouched and b still answers.
  EXPECT_TRUE(DocumentText(other).ok());
}

// The notepad's F4 probe (slingshot.probe=...), which the nested appliance
// test reads off a replica's screen: what it reached goes into the document.
TEST_F(VmTest, TheProbeKeyWritesWhatTheGuestReached) {
  HostListener host;
  VmSpec spec = Spec("p");
  spec.cmdline += " slingshot.probe=10.0.2.15:5900,10.0.2.2:" + std::to_string(host.port());
  BootAndWait(spec);
  auto rfb = RfbSession::Connect(Ep("p", kRfbPort));
  ASSERT_TRUE(rfb.ok()) << rfb.status().ToString();
  ASSERT_TRUE((*rfb)->KeyToScreenMs(notepad::kKeyProbe, 30000).ok());
  const std::string want = "[10.0.2.15:5900 ok][10.0.2.2:" + std::to_string(host.port()) + " no]";
  Status s = WaitForText(Ep("p", kControlPort), want, 30s, rfb->get());
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(host.accepted(), 0);
}

TEST_F(VmTest, KilledQemuIsReportedDead) {
  std::atomic<int> deaths{0};
  std::string why;
  slingshot::Mutex mu;
  hv_->OnDeath([&](const std::string& name, const std::string& reason) {
    slingshot::MutexLock l(&mu);
    why = name + ": " + reason;
    deaths++;
  });
  ASSERT_TRUE(hv_->Boot(Spec("victim")).ok());
  auto info = hv_->Info("victim");
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->state, VmState::kRunning);
  int pid = std::stoi(info->detail.substr(4));  // "pid N"
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  for (int i = 0; i < 100 && deaths == 0; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_EQ(deaths, 1);
  {
    slingshot::MutexLock l(&mu);
    EXPECT_NE(why.find("victim: qemu killed by signal 9"), std::string::npos) << why;
  }
  EXPECT_EQ(hv_->Info("victim")->state, VmState::kDead);
  auto c = hv_->Checkpoint("victim", [](ByteView) { return Status::OK(); }, true);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("dead"), std::string::npos) << c.status().ToString();
  EXPECT_TRUE(hv_->Destroy("victim").ok());
  EXPECT_TRUE(hv_->List().empty());
}

TEST_F(VmTest, DamagedCheckpointStreamIsRefusedAndLeavesNoProcess) {
  BootAndWait(Spec("src"));
  TypeAndWait("src", "abc", "abc");
  Bytes ckpt;
  ASSERT_TRUE(CheckpointTo("src", &ckpt).ok());

  Bytes corrupt = ckpt;
  corrupt[corrupt.size() / 2] ^= 0x40;
  auto r = hv_->Restore(Spec("bad"), From(corrupt));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorruption) << r.status().ToString();
  EXPECT_NE(r.status().message().find("checksum"), std::string::npos) << r.status().ToString();
  EXPECT_FALSE(hv_->Info("bad").ok());
  EXPECT_TRUE(ProcessesMatching(dir_ / "bad").empty());

  Bytes truncated(ckpt.begin(), ckpt.begin() + ckpt.size() * 6 / 10);
  r = hv_->Restore(Spec("short"), From(truncated));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorruption);
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().ToString();
  EXPECT_TRUE(ProcessesMatching(dir_ / "short").empty());

  // Same VM stream, wrong machine: refused before any QEMU starts.
  VmSpec big = Spec("big");
  big.memory_mib = 256;
  r = hv_->Restore(big, From(ckpt));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(ProcessesMatching(dir_ / "big").empty());

  // A stream that is not a VM stream at all.
  Bytes junk = RandomBytes(100000, 7);
  r = hv_->Restore(Spec("junk"), From(junk));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a Slingshot VM stream"), std::string::npos);

  // The intact stream still restores, and the source is untouched.
  r = hv_->Restore(Spec("good"), From(ckpt));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(WaitForText(Ep("good", kControlPort), "abc", 10s).ok());
  EXPECT_EQ(hv_->List().size(), 2u);
}

TEST_F(VmTest, FailingSinkAbandonsCheckpointAndGuestRunsOn) {
  BootAndWait(Spec("a"));
  uint64_t seen = 0;
  auto r = hv_->Checkpoint("a", [&](ByteView b) {
    seen += b.size();
    return seen > (2u << 20) ? Status::IOError("disk full (test)") : Status::OK();
  }, true);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("disk full (test)"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(hv_->Info("a")->state, VmState::kRunning);
  TypeAndWait("a", "still here", "still here");
  // And the next checkpoint works.
  Bytes ckpt;
  auto ok = CheckpointTo("a", &ckpt);
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

TEST_F(VmTest, IdleCheckpointsShareMostChunksAndRestoreFromTheStore) {
  BootAndWait(Spec("idle"));
  TypeAndWait("idle", "idle guest", "idle guest");
  auto store = ChunkStore::Open(dir_ / "store", {});
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  IngestStats first, second;
  ChunkList last;
  for (IngestStats* st : {&first, &second}) {
    MemoryImageWriter w(store->get(), ChunkerOptions{});
    auto c = hv_->Checkpoint("idle", [&](ByteView b) { return w.Write(b); }, true);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    auto list = w.Finish();
    ASSERT_TRUE(list.ok());
    EXPECT_EQ(list->total_size, c->stream_bytes);
    last = *list;
    *st = w.stats();
    std::this_thread::sleep_for(1s);
  }
  double ratio = double(second.new_bytes) / double(second.logical_bytes);
  std::printf("first: %s new, second: %s new (%.3f of its stream)\n",
              HumanBytes(first.new_bytes).c_str(), HumanBytes(second.new_bytes).c_str(), ratio);
  EXPECT_GT(first.new_bytes, first.logical_bytes / 2);
  // Paused for the save, an idle guest's second checkpoint is 5-8%
  // new; saved live, a little more (0.18-0.24 seen): the guest runs, and
  // the pages it writes are saved first, out of their order in the stream.
  EXPECT_LE(ratio, 0.3);

  // The stored checkpoint, read back chunk by chunk (each re-hashed), makes
  // a replica with the checkpoint-time document.
  TypeAndWait("idle", " later", "idle guest later");
  auto r = hv_->Restore(Spec("fromstore"), [&](const ByteSink& sink) {
    return ReadMemoryImage(last, store->get(), sink);
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(WaitForText(Ep("fromstore", kControlPort), "idle guest", 10s).ok());
}

TEST_F(VmTest, DiskServedOverNbdKeepsTheDocument) {
  auto qemu_nbd = [&](const std::string& sock, const std::string& file) {
    pid_t pid = fork();
    if (pid == 0) {
      execlp("qemu-nbd", "qemu-nbd", "--persistent", "--shared=4", "-f", "raw",
             ("--socket=" + sock).c_str(), file.c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 100 && access(sock.c_str(), F_OK) != 0; ++i) std::this_thread::sleep_for(20ms);
    return pid;
  };
  std::string image = dir_ / "disk.img";
  ASSERT_EQ(truncate((image).c_str(), 0), -1);  // does not exist yet
  {
    std::ofstream f(image);
  }
  ASSERT_EQ(truncate(image.c_str(), 16 << 20), 0);
  std::string sock = dir_ / "nbd.sock";
  pid_t server = qemu_nbd(sock, image);
  ASSERT_GT(server, 0);

  VmSpec spec = Spec("disk1");
  spec.cmdline += " slingshot.disk=auto";
  spec.disk = NbdDisk{sock, "", 0, "", false};
  BootAndWait(spec);
  TypeAndWait("disk1", "kept on disk", "kept on disk");
  auto saved = Control(Ep("disk1", kControlPort), "save");
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(*saved, "saved 12\n");
  ASSERT_TRUE(hv_->Destroy("disk1").ok());

  // The bytes really went through NBD into the file.
  auto raw = ReadFileBounded(image, 16 << 20);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(std::string(raw->begin(), raw->begin() + 4), "NPAD");
  EXPECT_EQ(std::string(raw->begin() + 512, raw->begin() + 524), "kept on disk");

  // A fresh VM on the same disk starts with the document.
  VmSpec again = spec;
  again.name = "disk2";
  again.run_dir = dir_ / "disk2";
  BootAndWait(again);
  EXPECT_TRUE(WaitForText(Ep("disk2", kControlPort), "kept on disk", 10s).ok());

  // The editor's keys, each checked on screen: an unsaved edit, Escape
  // (closed: a blank screen; typing is ignored), F3 (opened again from the disk: the unsaved
  // edit is gone), an edit and F2 (saved: the bar, and the bytes on disk).
  auto rfb = RfbSession::Connect(Ep("disk2", kRfbPort));
  ASSERT_TRUE(rfb.ok()) << rfb.status().ToString();
  ASSERT_TRUE((*rfb)->WaitForScreen(font_, "kept on disk", 30s).ok());
  std::vector<uint32_t> want(size_t(notepad::kWidth) * notepad::kHeight);
  auto press = [&](uint32_t key, const std::string& doc, notepad::Mode mode) {
    notepad::Render(font_, doc, want.data(), mode);
    auto ms = (*rfb)->KeyUntilScreenMs(key, want, 30000);
    EXPECT_TRUE(ms.ok()) << "key 0x" << std::hex << key << ": " << ms.status().ToString();
  };
  press('?', "kept on disk?", notepad::Mode::kEditing);
  press(notepad::kKeyClose, "", notepad::Mode::kClosed);
  ASSERT_TRUE((*rfb)->Type("x").ok());
  press(notepad::kKeyOpen, "kept on disk", notepad::Mode::kEditing);
  press('!', "kept on disk!", notepad::Mode::kEditing);
  press(notepad::kKeySave, "kept on disk!", notepad::Mode::kSaved);
  EXPECT_TRUE(WaitForText(Ep("disk2", kControlPort), "kept on disk!", 10s).ok());
  raw = ReadFileBounded(image, 16 << 20);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(std::string(raw->begin() + 512, raw->begin() + 525), "kept on disk!");
  EXPECT_EQ((*raw)[20], 1) << "the mode on disk is 'saved'";
  rfb->reset();
  ASSERT_TRUE(hv_->Destroy("disk2").ok());
  kill(server, SIGTERM);
  waitpid(server, nullptr, 0);
}

TEST_F(VmTest, NoQemuOutlivesItsProcess) {
  // A child process boots a VM and dies without cleaning up (SIGKILL):
  // its qemu must go with it.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::string run = dir_ / "orphan";
  pid_t pid = fork();
  if (pid == 0) {
    alarm(120);  // never hang the suite
    HypervisorOptions o;
    o.backend = "qemu";
    o.accel = "tcg";
    auto h = OpenHypervisor(o);
    if (!h.ok() || !(*h)->Boot(NotepadSpec("orphan", run)).ok()) _exit(1);
    int qpid = std::stoi((*h)->Info("orphan")->detail.substr(4));
    if (write(fds[1], &qpid, sizeof qpid) != sizeof qpid) _exit(2);
    pause();
    _exit(0);
  }
  close(fds[1]);
  int qpid = 0;
  ASSERT_EQ(read(fds[0], &qpid, sizeof qpid), static_cast<ssize_t>(sizeof qpid));
  close(fds[0]);
  ASSERT_EQ(kill(qpid, 0), 0);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = ProcessesMatching(run).empty();
    if (!gone) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(gone) << "qemu " << qpid << " outlived its parent";

  // Destroying the Hypervisor object takes its VMs along.
  ASSERT_TRUE(hv_->Boot(Spec("owned")).ok());
  hv_.reset();
  EXPECT_TRUE(ProcessesMatching(dir_ / "owned").empty());
}

}  // namespace
}  // namespace slingshot::testing
