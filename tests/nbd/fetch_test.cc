// Disks on demand, the network half: the chunk service over real TLS 1.3 on
// loopback, portable storage in a real directory, and the fetch chain that
// composes them with a real cache store. Label: nbd.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <thread>

#include "../support/link_emulator.h"
#include "../unit/test_util.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/disk/lazy_image.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/base/file_util.h"
#include "slingshot/disk/nbd_server.h"
#include "slingshot/store/portable.h"
#include "slingshot/net/transport.h"
#include "slingshot/store/working_set.h"

namespace slingshot::testing {
namespace {

void WriteFile(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}

// A home: a store holding a disk, its CA, and the chunk service on loopback.
class FetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ChunkStore::Open(dir_ / "home", {});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    home_store_ = std::move(*store);
    image_ = RandomBytes(4 << 20, 7);
    std::fill(image_.begin(), image_.begin() + (256 << 10), 0);  // four zero chunks
    WriteFile(dir_ / "disk.img", image_);
    auto imp = ImportDisk(dir_ / "disk.img", home_store_.get());
    ASSERT_TRUE(imp.ok());
    table_ = imp->table;
    auto tid = home_store_->PutObject(table_.Encode());
    ASSERT_TRUE(tid.ok());
    table_id_ = *tid;
    ASSERT_TRUE(home_store_->SetRef(Ref{"disk/test", ObjectKind::kDiskTable, table_id_}).ok());
    for (const auto& id : table_.ids) {
      if (!id.IsNull()) ids_.push_back(id);
    }

    auto ca = CertificateAuthority::Create("test home", 3600);
    ASSERT_TRUE(ca.ok()) << ca.status().ToString();
    ca_ = std::make_unique<CertificateAuthority>(std::move(*ca));
    auto home = ca_->Issue("home", Role::kHome, 3600);
    auto surrogate = ca_->Issue("hotspot-1", Role::kSurrogate, 3600);
    ASSERT_TRUE(home.ok() && surrogate.ok());
    home_creds_ = *home;
    surrogate_creds_ = *surrogate;
    service_ = std::make_unique<ChunkService>(home_store_.get());
    StartServer();
  }

  void StartServer() {
    ServerOptions o;
    o.software = "test-home";
    auto s = Server::Start(home_creds_, o, service_.get());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
  }

  std::unique_ptr<HomeSource> OpenHome(HomeSourceOptions o = {}) {
    auto h = HomeSource::Open("127.0.0.1", server_->port(), surrogate_creds_, o);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return h.ok() ? std::move(*h) : nullptr;
  }

  std::unique_ptr<ChunkStore> OpenCache(const std::string& name) {
    ChunkStoreOptions o;
    o.mode = ChunkStore::Mode::kCache;
    auto c = ChunkStore::Open(dir_ / name, o);
    EXPECT_TRUE(c.ok());
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Writes the given chunks (from the home store) to a stick directory.
  void WriteStick(const std::string& stick, const std::vector<ChunkId>& ids) {
    auto w = PortableWriter::Open(stick);
    ASSERT_TRUE(w.ok());
    for (const auto& id : ids) {
      auto raw = home_store_->Get(id);
      ASSERT_TRUE(raw.ok());
      ASSERT_TRUE((*w)->Add(id, *raw).ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());
  }

  // A stick with every chunk, one of them damaged in the pack (past its id
  // and value header).
  void WriteDamagedStick(const std::string& stick) {
    WriteStick(stick, ids_);
    std::string pack = stick + "/slingshot-chunks/pack-00000001.dat";
    Bytes p = *ReadFileBounded(pack, 1 << 30);
    p[16 + 32 + 16 + 100] ^= 0xff;
    WriteFile(pack, p);
  }

  // A cache filled through a chain from the home over an emulated link, by a
  // prefetch of every chunk running on its own thread (joined at the end).
  struct SlowPrefetch {
    std::unique_ptr<LinkEmulator> link;
    std::unique_ptr<HomeSource> home;
    std::unique_ptr<ChunkStore> cache;
    std::unique_ptr<FetchChain> chain;
    std::atomic<size_t> prefetched{0};
    std::thread thread;
    ~SlowPrefetch() {
      if (thread.joinable()) thread.join();
    }
  };
  void StartSlowPrefetch(const LinkProfile& profile, SlowPrefetch* p) {
    auto link = LinkEmulator::Start("127.0.0.1", server_->port(), profile);
    ASSERT_TRUE(link.ok());
    p->link = std::move(*link);
    auto home = HomeSource::Open("127.0.0.1", p->link->port(), surrogate_creds_);
    ASSERT_TRUE(home.ok()) << home.status().ToString();
    p->home = std::move(*home);
    p->cache = OpenCache("cache");
    p->chain = std::make_unique<FetchChain>(p->cache.get(), std::vector<ChunkSource*>{p->home.get()});
    p->thread = std::thread([this, p] {
      EXPECT_TRUE(p->chain->Fetch(ids_, [p](const ChunkId&, Result<Bytes>&& r) {
        EXPECT_TRUE(r.ok());
        ++p->prefetched;
      }).ok());
    });
  }

  // Reads the whole disk through a chunk-table export over the given source.
  Bytes ReadDisk(ChunkSource* source) {
    auto exp = ChunkTableExport::Open(table_, source, dir_ / "overlay");
    EXPECT_TRUE(exp.ok());
    Bytes out(table_.image_size);
    EXPECT_TRUE((*exp)->Read(0, out).ok());
    return out;
  }

  TempDir dir_;
  std::unique_ptr<ChunkStore> home_store_;
  Bytes image_;
  DiskTable table_;
  ChunkId table_id_;
  std::vector<ChunkId> ids_;
  std::unique_ptr<CertificateAuthority> ca_;
  TlsCredentials home_creds_, surrogate_creds_;
  std::unique_ptr<ChunkService> service_;
  std::unique_ptr<Server> server_;
};

TEST_F(FetchTest, ChunkServiceServesBatchedPipelinedVerifiedChunksOverTls) {
  HomeSourceOptions o;
  o.batch = 8;
  o.window = 4;
  auto home = OpenHome(o);
  ASSERT_TRUE(home);
  size_t got = 0;
  ASSERT_TRUE(home->GetMany(ids_, [&](const ChunkId& id, Result<Bytes>&& r) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(ChunkId::Of(*r), id);
    EXPECT_EQ(id, ids_[got]);  // in the order asked
    ++got;
  }).ok());
  EXPECT_EQ(got, ids_.size());
  auto st = home->stats();
  EXPECT_EQ(st.chunks, ids_.size());
  EXPECT_EQ(st.requests, (ids_.size() + 7) / 8);  // batched: one request per 8 ids
  EXPECT_EQ(st.connects, 1u);                      // one connection, reused
  EXPECT_EQ(service_->stats().chunks_sent, ids_.size());

  // Absent chunks are reported as absent, objects and refs come verified.
  ChunkId absent = ChunkId::Of(AsBytes("not stored anywhere"));
  EXPECT_TRUE(home->Get(absent).status().IsNotFound());
  auto ref = home->GetRef("disk/test");
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  EXPECT_EQ(ref->object, table_id_);
  auto obj = home->GetObject(table_id_);
  ASSERT_TRUE(obj.ok());
  auto t = DiskTable::Decode(*obj);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ids, table_.ids);
  EXPECT_TRUE(home->GetRef("no/such/ref").status().IsNotFound());
}

TEST_F(FetchTest, UnauthenticatedPeersGetNothing) {
  // A certificate from another CA.
  auto other_ca = CertificateAuthority::Create("someone else", 3600);
  ASSERT_TRUE(other_ca.ok());
  auto stranger = other_ca->Issue("stranger", Role::kSurrogate, 3600);
  ASSERT_TRUE(stranger.ok());
  auto h = HomeSource::Open("127.0.0.1", server_->port(), *stranger);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Status::Code::kPermissionDenied) << h.status().ToString();

  // Our CA, but expired.
  auto expired = ca_->Issue("old", Role::kSurrogate, -60);
  ASSERT_TRUE(expired.ok());
  h = HomeSource::Open("127.0.0.1", server_->port(), *expired);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Status::Code::kPermissionDenied);
  EXPECT_NE(h.status().message().find("expired"), std::string::npos) << h.status().ToString();

  // A server that is not the home (its certificate says "surrogate").
  ServerOptions so;
  auto impostor = Server::Start(surrogate_creds_, so, service_.get());
  ASSERT_TRUE(impostor.ok());
  h = HomeSource::Open("127.0.0.1", (*impostor)->port(), surrogate_creds_);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("not a home"), std::string::npos) << h.status().ToString();

  // Plain TCP speaking our framing without TLS gets no chunk.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(server_->port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  Bytes frame = wire::EncodeFrame(1, wire::GetChunks{{ids_[0]}});
  ASSERT_EQ(write(fd, frame.data(), frame.size()), ssize_t(frame.size()));
  Bytes reply(1 << 16);
  ssize_t n = read(fd, reply.data(), reply.size());
  close(fd);
  EXPECT_LT(n, 1000);  // at most a TLS alert, never a chunk

  EXPECT_EQ(service_->stats().chunks_sent, 0u);
  EXPECT_GE(server_->stats().refused, 3u);
}

// A client that does not wait for the server's Hello sends its request
// behind its own; the Hello is read and checked before the reply, and a
// refusal of its credentials fails the request.
TEST_F(FetchTest, ARequestMayFollowHelloAtOnceAndARefusalShowsAtItsReply) {
  ConnectOptions o;
  o.expected_role = Role::kHome;
  o.await_hello = false;
  auto c = Connection::Connect("127.0.0.1", server_->port(), surrogate_creds_, o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->peer().software, "");  // not read yet
  ASSERT_TRUE((*c)->Send(1, wire::GetObject{table_id_}).ok());
  auto m = (*c)->Expect(1, wire::MessageType::kObjectData);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(ChunkId::Of(std::get<wire::ObjectData>(*m).bytes), table_id_);
  EXPECT_EQ((*c)->peer().software, "test-home");

  auto expired = ca_->Issue("old", Role::kSurrogate, -60);
  ASSERT_TRUE(expired.ok());
  auto late = Connection::Connect("127.0.0.1", server_->port(), *expired, o);
  Status s = late.status();
  if (late.ok()) {
    (void)(*late)->Send(1, wire::GetObject{table_id_});
    s = (*late)->Expect(1, wire::MessageType::kObjectData).status();
    EXPECT_TRUE((*late)->broken());
  }
  // The server's refusal, or, when its close overtakes its answer (our
  // request was already on its way), the connection closed: never a reply.
  EXPECT_TRUE(s.code() == Status::Code::kPermissionDenied || s.code() == Status::Code::kUnavailable)
      << s.ToString();
  // The server counts the refusal as it closes, which may be after we saw it.
  for (int i = 0; i < 200 && server_->stats().refused == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(server_->stats().refused, 1u);
}

TEST_F(FetchTest, MalformedFramesGetACleanErrorAndTheServerKeepsServing) {
  auto c = Connection::Connect("127.0.0.1", server_->port(), surrogate_creds_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();

  // A payload that fails its checksum: an Error, and the connection goes on.
  Bytes frame = wire::EncodeFrame(5, wire::GetChunks{{ids_[0]}});
  frame.back() ^= 1;
  ASSERT_TRUE((*c)->SendRaw(frame).ok());
  auto f = (*c)->Receive(5000);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto* e = std::get_if<wire::Error>(&f->message);
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->message.find("checksum"), std::string::npos) << e->message;
  ASSERT_TRUE((*c)->Send(6, wire::GetChunks{{ids_[0]}}).ok());
  auto ok = (*c)->Expect(6, wire::MessageType::kChunkData);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();

  // A request the service does not answer: an Error naming it.
  ASSERT_TRUE((*c)->Send(7, wire::Hello{}).ok());
  auto bad = (*c)->Expect(7, wire::MessageType::kChunkData);
  EXPECT_EQ(bad.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("Hello"), std::string::npos);

  // A frame from a future version: an Error naming both versions, then close.
  Bytes future = wire::EncodeFrame(8, wire::GetChunks{{ids_[0]}});
  PutU16(future.data() + 4, 2);
  PutU32(future.data() + 20, crc32c::Value(future.data(), 20));
  ASSERT_TRUE((*c)->SendRaw(future).ok());
  f = (*c)->Receive(5000);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  e = std::get_if<wire::Error>(&f->message);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, Status::Code::kUnsupported);
  EXPECT_NE(e->message.find("version 2"), std::string::npos) << e->message;
  EXPECT_FALSE((*c)->Receive(5000).ok());  // closed by the server

  // Garbage instead of a header: an Error, then close.
  auto c2 = Connection::Connect("127.0.0.1", server_->port(), surrogate_creds_);
  ASSERT_TRUE(c2.ok());
  ASSERT_TRUE((*c2)->SendRaw(Bytes(wire::kHeaderSize, 'x')).ok());
  f = (*c2)->Receive(5000);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(std::holds_alternative<wire::Error>(f->message));
  EXPECT_NE(std::get<wire::Error>(f->message).message.find("magic"), std::string::npos);

  // Others are served all along.
  auto home = OpenHome();
  ASSERT_TRUE(home);
  EXPECT_TRUE(home->Get(ids_[1]).ok());
  EXPECT_GE(server_->stats().bad_frames, 3u);
}

TEST_F(FetchTest, ACorruptedStickChunkIsCaughtAndFetchedFromHome) {
  std::string stick = dir_ / "stick";
  WriteDamagedStick(stick);

  auto portable = PortableSource::Open(stick);
  ASSERT_TRUE(portable.ok());
  auto home = OpenHome();
  auto cache = OpenCache("cache");
  FetchChain chain(cache.get(), {portable->get(), home.get()});
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(ReadDisk(&chain) == image_);
  const std::string said = ::testing::internal::GetCapturedStderr();
  auto st = chain.stats();
  EXPECT_EQ(st.sources[0].corrupt, 1u);
  // Said: which stick, which chunk, and that it was fetched elsewhere.
  EXPECT_NE(said.find("from stick " + stick + " is damaged"), std::string::npos) << said;
  EXPECT_NE(said.find("fetching it from the next source"), std::string::npos) << said;
  // Every chunk came from one source or the other, the damaged one from
  // home. (Which source serves the rest is timing: a read goes to the
  // source measured faster, and on a loaded machine that can be home.)
  EXPECT_EQ(st.sources[0].chunks + st.sources[1].chunks, ids_.size());
  EXPECT_GE(st.sources[1].chunks, 1u);
  EXPECT_EQ(st.sources[1].corrupt + st.sources[1].errors + st.sources[1].misses, 0u);
  EXPECT_EQ(st.not_found, 0u);
  // The good copy is now cached: reading again touches no source.
  EXPECT_TRUE(ReadDisk(&chain) == image_);
  EXPECT_EQ(chain.stats().cache_hits, ids_.size());
}

// A table's image read through a LazyImage (as a lazy replica's RAM is):
// the file's bytes are the image's, a damaged chunk on the stick is caught
// and read from home instead, and each chunk read is recorded once, in the
// order first read.
TEST_F(FetchTest, ALazyImageReadsTheImageAndADamagedStickChunkComesFromHome) {
  std::string stick = dir_ / "stick";
  WriteDamagedStick(stick);
  auto portable = PortableSource::Open(stick);
  ASSERT_TRUE(portable.ok());
  auto home = OpenHome();
  auto cache = OpenCache("cache");
  FetchChain chain(cache.get(), {portable->get(), home.get()});
  LazyImageOptions lo;
  lo.dir = dir_ / "lazy";
  lo.table = table_;
  lo.chunks = &chain;
  ::testing::internal::CaptureStderr();
  auto lazy = LazyImage::Mount(lo);
  ASSERT_TRUE(lazy.ok()) << lazy.status().ToString();
  EXPECT_EQ((*lazy)->size(), image_.size());
  // Read the last MiB first, then the whole file.
  UniqueFd fd(open((*lazy)->path().c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << strerror(errno);
  Bytes tail(1 << 20);
  ASSERT_EQ(pread(fd.get(), tail.data(), tail.size(), static_cast<off_t>(image_.size() - tail.size())),
            static_cast<ssize_t>(tail.size()));
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), image_.end() - static_cast<ptrdiff_t>(tail.size())));
  Bytes all(image_.size());
  ASSERT_EQ(pread(fd.get(), all.data(), all.size(), 0), static_cast<ssize_t>(all.size()));
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(all == image_);
  EXPECT_TRUE((*lazy)->error().ok()) << (*lazy)->error().ToString();
  EXPECT_EQ(chain.stats().sources[0].corrupt, 1u);
  EXPECT_NE(said.find("is damaged"), std::string::npos) << said;
  // Every stored chunk once, the tail's first.
  std::vector<ChunkId> first = (*lazy)->FirstReads();
  EXPECT_EQ(first.size(), ids_.size());
  EXPECT_EQ(first.front(), table_.ids[(image_.size() - tail.size()) / table_.chunk_size]);
  fd.Reset();
}

// A lazy image's prefetch stores each chunk it has into the kernel's page
// cache: reading the whole file then reads through the image only its zero
// chunks (no round trip for the others), and the bytes are the image's.
// Without that, every chunk is a read, recorded as the working set.
TEST_F(FetchTest, ALazyImagesPrefetchFillsThePageCacheSoReadsNeedNoRoundTrip) {
  for (bool fill : {true, false}) {
    SCOPED_TRACE(fill ? "filling the page cache" : "not filling it");
    auto home = OpenHome();
    auto cache = OpenCache(fill ? "cache-fill" : "cache-nofill");
    FetchChain chain(cache.get(), {home.get()});
    LazyImageOptions lo;
    lo.dir = dir_ / (fill ? "lazy-fill" : "lazy-nofill");
    lo.table = table_;
    lo.chunks = &chain;
    lo.prefetch = &chain;
    lo.order = ids_;
    lo.fill_page_cache = fill;
    auto lazy = LazyImage::Mount(lo);
    ASSERT_TRUE(lazy.ok()) << lazy.status().ToString();
    ASSERT_TRUE((*lazy)->WaitPrefetched().ok());
    EXPECT_EQ((*lazy)->stats().prefetched, ids_.size());
    EXPECT_EQ((*lazy)->stats().stored, fill ? ids_.size() : 0u);
    UniqueFd fd(open((*lazy)->path().c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid()) << strerror(errno);
    Bytes all(image_.size());
    ASSERT_EQ(pread(fd.get(), all.data(), all.size(), 0), static_cast<ssize_t>(all.size()));
    EXPECT_TRUE(all == image_);
    EXPECT_TRUE((*lazy)->error().ok()) << (*lazy)->error().ToString();
    EXPECT_EQ((*lazy)->stats().chunks_read, fill ? table_.ids.size() - ids_.size() : table_.ids.size());
    EXPECT_EQ((*lazy)->FirstReads().size(), fill ? 0u : ids_.size());
    fd.Reset();
  }
}

// The home stops answering while a lazy image is read: what was read stays
// readable (the page cache and the cache store hold it), a chunk never read
// fails its read with EIO, and the image says why.
TEST_F(FetchTest, ALazyImageWhoseHomeGoesAwayFailsTheReadsItCannotServe) {
  auto home = OpenHome();
  auto cache = OpenCache("cache");
  FetchChain chain(cache.get(), {home.get()});
  LazyImageOptions lo;
  lo.dir = dir_ / "lazy";
  lo.table = table_;
  lo.chunks = &chain;
  auto lazy = LazyImage::Mount(lo);
  ASSERT_TRUE(lazy.ok()) << lazy.status().ToString();
  UniqueFd fd(open((*lazy)->path().c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  Bytes head(1 << 20);
  ASSERT_EQ(pread(fd.get(), head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
  EXPECT_TRUE(std::equal(head.begin(), head.end(), image_.begin()));
  server_->Stop();
  Bytes tail(64 << 10);
  errno = 0;
  ssize_t n = pread(fd.get(), tail.data(), tail.size(), static_cast<off_t>(image_.size() - tail.size()));
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_FALSE((*lazy)->error().ok());
  // What was read before is still there.
  ASSERT_EQ(pread(fd.get(), head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
  EXPECT_TRUE(std::equal(head.begin(), head.end(), image_.begin()));
  fd.Reset();
}

TEST_F(FetchTest, ACompleteStickServesTheDiskOverNbdWithHomeUnreachable) {
  std::string stick = dir_ / "stick";
  WriteStick(stick, ids_);
  uint16_t port = server_->port();
  server_->Stop();
  auto home = HomeSource::Open("127.0.0.1", port, surrogate_creds_);
  ASSERT_FALSE(home.ok());
  EXPECT_EQ(home.status().code(), Status::Code::kUnavailable) << home.status().ToString();

  auto portable = PortableSource::Open(stick);
  ASSERT_TRUE(portable.ok());
  auto cache = OpenCache("cache");
  FetchChain chain(cache.get(), {portable->get()});
  auto exp = ChunkTableExport::Open(table_, &chain, dir_ / "overlay");
  ASSERT_TRUE(exp.ok());
  NbdServer nbd;
  ASSERT_TRUE(nbd.AddExport("disk", std::shared_ptr<BlockExport>(std::move(*exp))).ok());
  std::string sock = dir_ / "nbd.sock";
  ASSERT_TRUE(nbd.ListenUnix(sock).ok());
  ASSERT_TRUE(nbd.Start().ok());
  std::string out = dir_ / "read.img";
  std::string cmd = "nbdcopy 'nbd+unix:///disk?socket=" + sock + "' " + out + " 2>&1";
  ASSERT_EQ(system(cmd.c_str()), 0);
  auto got = ReadFileBounded(out, 1 << 30);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == image_);
  EXPECT_EQ(chain.stats().sources[0].chunks, ids_.size());
  nbd.Stop();
}

TEST_F(FetchTest, AStaleStickCostsTheFetchNothing) {
  // The stick holds an older disk: a quarter of today's chunks and many
  // chunks no longer used.
  std::vector<ChunkId> stale;
  for (size_t i = 0; i < ids_.size(); i += 4) stale.push_back(ids_[i]);
  std::string stick = dir_ / "stick";
  WriteStick(stick, stale);
  {
    auto w = PortableWriter::Open(stick);
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 20; ++i) {
      Bytes old = RandomBytes(64 << 10, 1000 + i);
      ASSERT_TRUE((*w)->Add(ChunkId::Of(old), old).ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());
  }
  HomeSourceOptions o;
  o.batch = 8;
  // Home alone, as the baseline.
  auto home_alone = OpenHome(o);
  auto cache_a = OpenCache("cache-a");
  FetchChain alone(cache_a.get(), {home_alone.get()});
  ASSERT_TRUE(alone.Fetch(ids_).ok());

  auto portable = PortableSource::Open(stick);
  ASSERT_TRUE(portable.ok());
  auto home = OpenHome(o);
  auto cache = OpenCache("cache-b");
  FetchChain chain(cache.get(), {portable->get(), home.get()});
  size_t delivered = 0;
  ASSERT_TRUE(chain.Fetch(ids_, [&](const ChunkId& id, Result<Bytes>&& r) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(ChunkId::Of(*r), id);
    ++delivered;
  }).ok());
  EXPECT_EQ(delivered, ids_.size());
  auto st = chain.stats();
  // The stick was never asked for what it lacks (its index said so) ...
  EXPECT_EQ((*portable)->stats().misses, 0u);
  EXPECT_EQ(st.sources[0].misses, 0u);
  // ... every chunk came from exactly one source ...
  EXPECT_EQ(st.sources[0].chunks + st.sources[1].chunks, ids_.size());
  EXPECT_LE(st.sources[0].chunks, stale.size());
  // ... and the home got no more requests than when it worked alone.
  EXPECT_LE(home->stats().requests, home_alone->stats().requests);
  EXPECT_LE(home->stats().chunks, ids_.size());
}

TEST_F(FetchTest, TheHomesWorkingSetIsPrefetchedInOrderByTheSurrogate) {
  // At home, the primary reads chunks in some order after boot.
  auto primary = ChunkTableExport::Open(table_, home_store_.get(), dir_ / "home-overlay");
  ASSERT_TRUE(primary.ok());
  std::vector<size_t> order = {40, 5, 63, 5, 17, 2, 40, 33};  // chunks 0-3 are zero
  Bytes buf(4096);
  for (size_t i : order) ASSERT_TRUE((*primary)->Read(i * table_.chunk_size + 10, buf).ok());
  std::vector<ChunkId> ws = (*primary)->FirstReads();
  ASSERT_EQ(ws.size(), 5u);  // repeats recorded once, the zero chunk 2 not at all
  EXPECT_EQ(ws[0], table_.ids[40]);
  EXPECT_EQ(ws[1], table_.ids[5]);
  EXPECT_EQ(ws[4], table_.ids[33]);
  ASSERT_TRUE(SaveWorkingSet(home_store_.get(), WorkingSetRecord{table_id_, ws}).ok());

  // The surrogate asks for it and prefetches it in the background.
  auto home = OpenHome();
  auto got = home->GetWorkingSet(table_id_);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, ws);
  auto none = home->GetWorkingSet(ChunkId::Of(AsBytes("no such table")));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  auto cache = OpenCache("cache");
  FetchChain chain(cache.get(), {home.get()});
  Prefetcher pf(&chain, *got);
  ASSERT_TRUE(pf.Wait().ok());
  EXPECT_EQ(pf.done(), ws.size());
  // The replica's first reads now hit the cache and cost the home nothing more.
  uint64_t fetched = home->stats().chunks;
  auto replica = ChunkTableExport::Open(table_, &chain, dir_ / "replica-overlay");
  ASSERT_TRUE(replica.ok());
  for (size_t i : order) ASSERT_TRUE((*replica)->Read(i * table_.chunk_size + 10, buf).ok());
  EXPECT_EQ(home->stats().chunks, fetched);
  EXPECT_EQ(chain.stats().cache_hits, ws.size());
}

// What an instantiation asks before its VM starts (tables, lists, working
// sets) goes out at once: six answers over a 300 ms link in about one
// round trip, each verified and each failing on its own.
TEST_F(FetchTest, ObjectsAndWorkingSetsComeTogetherInOneRoundTrip) {
  ASSERT_TRUE(SaveWorkingSet(home_store_.get(), WorkingSetRecord{table_id_, {ids_[3], ids_[1]}}).ok());
  auto list = home_store_->PutObject(AsBytes("a second object"));
  ASSERT_TRUE(list.ok());
  LinkProfile far;
  far.rtt_ms = 300;
  auto link = LinkEmulator::Start("127.0.0.1", server_->port(), far);
  ASSERT_TRUE(link.ok());
  auto home = HomeSource::Open("127.0.0.1", (*link)->port(), surrogate_creds_);
  ASSERT_TRUE(home.ok()) << home.status().ToString();
  const ChunkId absent = ChunkId::Of(AsBytes("no such object"));
  const std::vector<ChunkId> objects{table_id_, absent, *list};
  const std::vector<ChunkId> tables{table_id_, *list};
  const auto start = std::chrono::steady_clock::now();
  auto b = (*home)->GetObjectsAndWorkingSets(objects, tables);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(b->objects.size(), 3u);
  ASSERT_TRUE(b->objects[0].ok()) << b->objects[0].status().ToString();
  EXPECT_EQ(ChunkId::Of(*b->objects[0]), table_id_);
  EXPECT_TRUE(b->objects[1].status().IsNotFound()) << b->objects[1].status().ToString();
  ASSERT_TRUE(b->objects[2].ok());
  EXPECT_EQ(std::string(b->objects[2]->begin(), b->objects[2]->end()), "a second object");
  ASSERT_EQ(b->working_sets.size(), 2u);
  ASSERT_TRUE(b->working_sets[0].ok());
  EXPECT_EQ(*b->working_sets[0], (std::vector<ChunkId>{ids_[3], ids_[1]}));
  ASSERT_TRUE(b->working_sets[1].ok());
  EXPECT_TRUE(b->working_sets[1]->empty());
  // One after the other they take six round trips (1.8 s).
  EXPECT_LT(took, std::chrono::milliseconds(900));
  EXPECT_EQ((*home)->stats().connects, 1u);
  // The connection is still in order for what comes next.
  auto again = (*home)->GetObject(*list);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
}

TEST_F(FetchTest, PortableWriterKeepsOnlyWantedChunksAndADamagedIndexIsRefused) {
  std::string stick = dir_ / "stick";
  WriteStick(stick, std::vector<ChunkId>(ids_.begin(), ids_.begin() + 10));
  // Sync to a new wanted set: the other chunks are added, unwanted ones dropped.
  std::unordered_set<ChunkId, ChunkIdHash> want(ids_.begin() + 5, ids_.end());
  {
    auto w = PortableWriter::Open(stick);
    ASSERT_TRUE(w.ok());
    for (const auto& id : want) {
      if ((*w)->Has(id)) continue;
      ASSERT_TRUE((*w)->Add(id, *home_store_->Get(id)).ok());
    }
    ASSERT_TRUE((*w)->Commit(&want).ok());
    EXPECT_EQ((*w)->stats().added, want.size() - 5);
    EXPECT_EQ((*w)->stats().dropped, 5u);
  }
  auto p = PortableSource::Open(stick);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->size(), want.size());
  for (const auto& id : want) ASSERT_TRUE((*p)->Get(id).ok());
  EXPECT_FALSE((*p)->MayHave(ids_[0]));
  // A damaged index is refused with a clear error (and loses nothing else).
  std::string index = stick + "/slingshot-chunks/INDEX";
  Bytes b = *ReadFileBounded(index, 1 << 30);
  b[b.size() / 2] ^= 1;
  WriteFile(index, b);
  auto broken = PortableSource::Open(stick);
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(broken.status().IsCorruption()) << broken.status().ToString();
}

// A stick that is current but slow: the home takes the chunks the stick has
// not reached yet from the back of its queue, so the slow source gets few.
TEST_F(FetchTest, ASlowStickGetsFewChunksBecauseTheHomeStealsTheRest) {
  std::string stick = dir_ / "stick";
  WriteStick(stick, ids_);
  auto portable = PortableSource::Open(stick);
  ASSERT_TRUE(portable.ok());
  struct Slow final : ChunkSource {
    ChunkSource* inner;
    explicit Slow(ChunkSource* s) : inner(s) {}
    Result<Bytes> Get(const ChunkId& id) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      return inner->Get(id);
    }
    bool MayHave(const ChunkId& id) const override { return inner->MayHave(id); }
    std::string Describe() const override { return "slow " + inner->Describe(); }
  } slow(portable->get());
  auto home = OpenHome();
  auto cache = OpenCache("cache");
  FetchChainOptions o;
  o.steal_claim = 4;
  FetchChain chain(cache.get(), {&slow, home.get()}, o);
  ASSERT_TRUE(chain.Fetch(ids_).ok());
  auto st = chain.stats();
  EXPECT_EQ(st.sources[0].chunks + st.sources[1].chunks, ids_.size());
  EXPECT_LT(st.sources[0].chunks, ids_.size() / 2) << "the slow stick was not worked around";
  EXPECT_TRUE(ReadDisk(&chain) == image_);
}

// A reader does not wait behind a prefetch: the prefetch has every chunk
// queued on a slow link, and a read of the last one still comes back long
// before the prefetch reaches it.
TEST_F(FetchTest, AReadDoesNotWaitBehindAPrefetchQueue) {
  LinkProfile slow;
  slow.rate_bits_per_s = 20e6;  // the whole disk takes ~1.6 s
  slow.rtt_ms = 10;
  SlowPrefetch pf;
  StartSlowPrefetch(slow, &pf);
  ASSERT_FALSE(HasFatalFailure());
  FetchChain& chain = *pf.chain;
  std::atomic<size_t>& prefetched = pf.prefetched;
  while (prefetched == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto last = chain.Get(ids_.back());
  size_t when = prefetched;
  pf.thread.join();
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  EXPECT_EQ(ChunkId::Of(*last), ids_.back());
  EXPECT_LT(when, ids_.size() / 2) << "the read waited for the prefetch";
  EXPECT_EQ(prefetched, ids_.size());
}

// On one shared slow link (an access link: every connection's bytes queue
// behind the others'), a bulk fetch keeps only about a round trip's worth
// plus a short queue in flight, so a single read on another connection is
// not stuck behind megabytes the prefetch asked for.
TEST_F(FetchTest, APrefetchLeavesAShortQueueOnASharedSlowLink) {
  LinkProfile slow;
  slow.rate_bits_per_s = 8e6;  // the whole disk takes ~4 s
  slow.rtt_ms = 60;
  slow.shared = true;
  SlowPrefetch pf;
  StartSlowPrefetch(slow, &pf);
  ASSERT_FALSE(HasFatalFailure());
  FetchChain& chain = *pf.chain;
  std::atomic<size_t>& prefetched = pf.prefetched;
  // Once the prefetch is under way, reads of chunks it has not reached.
  while (prefetched < 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::vector<size_t> at;
  for (size_t k = 1; k <= 3; ++k) {
    auto r = chain.Get(ids_[ids_.size() - k]);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    at.push_back(prefetched);
  }
  const size_t window = pf.home->bulk_window();
  pf.thread.join();
  EXPECT_EQ(prefetched, ids_.size());
  // Unpaced, the prefetch asked for every chunk at once and each read came
  // back only after the whole disk had crossed the link.
  EXPECT_LT(at.back(), ids_.size() / 2) << "the reads waited behind the prefetch";
  // About (8 Mbit/s x (60 + 100) ms) / 64 KiB = 2.4 chunks; the pacer's
  // ceiling is 512.
  EXPECT_LE(window, 8u);
}

// A chunk fetched from home reached the cache decompressed and compressed
// again; it is kept as the value the home sent, once verified.
TEST_F(FetchTest, FetchedChunksAreCachedAsTheHomesVerifiedValue) {
  // Compressible chunks the home stored at another level than the cache's.
  std::vector<ChunkId> ids;
  std::vector<EncodedChunk> values;
  for (int i = 0; i < 6; ++i) {
    Bytes raw = TextBytes(64 << 10, 100 + i);
    ChunkId id = ChunkId::Of(raw);
    ids.push_back(id);
    values.push_back(EncodedChunk{id, ChunkStore::EncodeValue(raw, 19)});
  }
  ASSERT_TRUE(home_store_->PutEncoded(values).ok());
  auto home = OpenHome();
  ASSERT_TRUE(home);
  auto cache = OpenCache("cache");
  FetchChain chain(cache.get(), {home.get()});
  ASSERT_TRUE(chain.Get(ids[0]).ok());                                        // one read
  ASSERT_TRUE(chain.Fetch(std::span<const ChunkId>(ids).subspan(1)).ok());  // a bulk fetch
  for (size_t i = 0; i < ids.size(); ++i) {
    auto cached = cache->GetEncoded(ids[i]);
    ASSERT_TRUE(cached.ok()) << cached.status().ToString();
    EXPECT_EQ(*cached, values[i].value) << "chunk " << i << " was encoded again";
    EXPECT_EQ(*cache->Get(ids[i]), *home_store_->Get(ids[i]));
  }
}

}  // namespace
}  // namespace slingshot::testing
