// The NBD server against real clients: libnbd's nbdinfo and nbdcopy,
// qemu-img, QEMU's block driver under a booting guest, and raw sockets for
// malformed input. Label: nbd.
#include "slingshot/disk/nbd_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "../unit/test_util.h"
#include "notepad_client.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/net/transport.h"
#include "slingshot/base/file_util.h"

namespace slingshot::testing {
namespace {

using namespace std::chrono_literals;

struct Ran {
  int exit_code;
  std::string output;
};

Ran Shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

void WriteFile(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}

Bytes Slurp(const std::string& path) {
  auto r = ReadFileBounded(path, 1 << 30);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : Bytes();
}

class NbdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = RandomBytes(8 << 20, 42);
    WriteFile(dir_ / "disk.img", data_);
    WriteFile(dir_ / "blank.img", Bytes(8 << 20, 0));
    sock_ = dir_ / "nbd.sock";
  }

  void Serve(bool writable = false) {
    auto ro = OpenFileExport(dir_ / "disk.img", true);
    auto rw = OpenFileExport(dir_ / "blank.img", false);
    ASSERT_TRUE(ro.ok() && rw.ok());
    ASSERT_TRUE(server_.AddExport("disk", *ro, "the test image").ok());
    ASSERT_TRUE(server_.AddExport("blank", *rw).ok());
    ASSERT_TRUE(server_.ListenUnix(sock_).ok());
    auto port = server_.ListenTcp("127.0.0.1", 0);
    ASSERT_TRUE(port.ok());
    port_ = *port;
    ASSERT_TRUE(server_.Start().ok());
    (void)writable;
  }

  std::string Unix(const std::string& exp) { return "'nbd+unix:///" + exp + "?socket=" + sock_ + "'"; }
  std::string Tcp(const std::string& exp) {
    return "nbd://127.0.0.1:" + std::to_string(port_) + "/" + exp;
  }

  // A raw client: handshake with NBD_OPT_EXPORT_NAME, returns the socket.
  UniqueFd RawConnect(const std::string& exp) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, sock_.c_str());
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    uint8_t hello[18];
    EXPECT_EQ(recv(fd.get(), hello, 18, MSG_WAITALL), 18);
    std::string m;
    auto be32 = [&](uint32_t v) { for (int i = 3; i >= 0; --i) m.push_back(char(v >> (8 * i))); };
    be32(3);  // fixed newstyle, no zeroes
    m += "IHAVEOPT";
    be32(1);  // EXPORT_NAME
    be32(static_cast<uint32_t>(exp.size()));
    m += exp;
    EXPECT_EQ(send(fd.get(), m.data(), m.size(), 0), static_cast<ssize_t>(m.size()));
    uint8_t info[10];
    EXPECT_EQ(recv(fd.get(), info, 10, MSG_WAITALL), 10);
    return fd;
  }

  static std::string Request(uint16_t type, uint64_t handle, uint64_t offset, uint32_t length,
                             uint32_t magic = 0x25609513) {
    std::string r;
    auto be = [&](uint64_t v, int n) { for (int i = n - 1; i >= 0; --i) r.push_back(char(v >> (8 * i))); };
    be(magic, 4);
    be(0, 2);
    be(type, 2);
    be(handle, 8);
    be(offset, 8);
    be(length, 4);
    return r;
  }

  TempDir dir_;
  Bytes data_;
  std::string sock_;
  uint16_t port_ = 0;
  NbdServer server_;
};

TEST_F(NbdTest, NbdinfoReadsSizeAndListsExports) {
  Serve();
  Ran r = Shell("nbdinfo --size " + Unix("disk"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "8388608\n");
  r = Shell("nbdinfo --list 'nbd+unix://?socket=" + sock_ + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("export=\"disk\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("export=\"blank\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("the test image"), std::string::npos) << r.output;
  r = Shell("nbdinfo " + Unix("disk"));
  EXPECT_NE(r.output.find("is_read_only: true"), std::string::npos) << r.output;
}

TEST_F(NbdTest, NbdcopyReadsBitIdenticalOverUnixAndTcp) {
  Serve();
  Ran r = Shell("nbdcopy " + Unix("disk") + " " + (dir_ / "out1.img"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir_ / "out1.img") == data_);
  r = Shell("nbdcopy " + Tcp("disk") + " " + (dir_ / "out2.img"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir_ / "out2.img") == data_);
}

TEST_F(NbdTest, NbdcopyWritesAndFlushes) {
  Serve();
  Ran r = Shell("nbdcopy --flush " + (dir_ / "disk.img") + " " + Tcp("blank"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir_ / "blank.img") == data_);
}

TEST_F(NbdTest, QemuImgConvertsFromAndToTheServer) {
  Serve();
  Ran r = Shell("qemu-img convert -f raw -O raw " + Unix("disk") + " " + (dir_ / "q.img"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir_ / "q.img") == data_);
  r = Shell("qemu-img convert -n -f raw -O raw " + (dir_ / "disk.img") + " " + Unix("blank"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir_ / "blank.img") == data_);
}

TEST_F(NbdTest, ReadOnlyExportRefusesWritesAndUnknownExportsAreRefused) {
  Serve();
  Ran r = Shell("nbdcopy " + (dir_ / "blank.img") + " " + Unix("disk"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir_ / "disk.img") == data_);
  r = Shell("nbdinfo " + Unix("nope"));
  EXPECT_NE(r.exit_code, 0);
  // NBD_REP_ERR_UNKNOWN, which libnbd reports as ENOENT.
  EXPECT_NE(r.output.find("No such file or directory for export: nope"), std::string::npos)
      << r.output;
  // The server still serves.
  EXPECT_EQ(Shell("nbdinfo --size " + Unix("disk")).exit_code, 0);
}

TEST_F(NbdTest, BadRequestsGetErrorsAndMalformedFramesEndOnlyTheirConnection) {
  Serve();
  UniqueFd fd = RawConnect("disk");
  // A read past the end: EINVAL, and the connection goes on.
  std::string req = Request(0, 7, 8 << 20, 4096);
  ASSERT_EQ(send(fd.get(), req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  uint8_t reply[16];
  ASSERT_EQ(recv(fd.get(), reply, 16, MSG_WAITALL), 16);
  EXPECT_EQ(reply[7], 22);   // error = EINVAL
  EXPECT_EQ(reply[15], 7);   // handle echoed
  req = Request(0, 8, 4096, 16);
  ASSERT_EQ(send(fd.get(), req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  uint8_t ok[32];
  ASSERT_EQ(recv(fd.get(), ok, 32, MSG_WAITALL), 32);
  EXPECT_EQ(ok[7], 0);
  EXPECT_EQ(std::memcmp(ok + 16, data_.data() + 4096, 16), 0);
  // A write to a read-only export: EPERM.
  req = Request(1, 9, 0, 4) + "abcd";
  ASSERT_EQ(send(fd.get(), req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  ASSERT_EQ(recv(fd.get(), reply, 16, MSG_WAITALL), 16);
  EXPECT_EQ(reply[7], 1);

  // Meanwhile another client is served; then garbage ends the raw one.
  EXPECT_EQ(Shell("nbdinfo --size " + Unix("disk")).exit_code, 0);
  req = Request(0, 10, 0, 16, 0xdeadbeef);
  ASSERT_EQ(send(fd.get(), req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  char c;
  EXPECT_EQ(recv(fd.get(), &c, 1, 0), 0);  // closed, no reply
  EXPECT_GE(server_.stats().bad_requests, 3u);
  // An oversized option and junk instead of a handshake.
  UniqueFd junk(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strcpy(a.sun_path, sock_.c_str());
  ASSERT_EQ(connect(junk.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  std::string j = std::string("\0\0\0\3", 4) + "IHAVEOPT" + std::string("\0\0\0\7\x7f\xff\xff\xff", 8);
  ASSERT_EQ(send(junk.get(), j.data(), j.size(), 0), static_cast<ssize_t>(j.size()));
  char drain[64];
  while (recv(junk.get(), drain, sizeof drain, 0) > 0) {
  }
  Ran r = Shell("nbdcopy " + Unix("disk") + " " + (dir_ / "after.img"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir_ / "after.img") == data_);
}

TEST(NbdChunkTableTest, ChunkTableExportServesNbdcopyAndQemuImgAndFreezes) {
  TempDir dir;
  auto store = ChunkStore::Open(dir / "store", {});
  ASSERT_TRUE(store.ok());
  Bytes image = RandomBytes(4 << 20, 9);
  std::fill(image.begin(), image.begin() + (1 << 20), 0);
  WriteFile(dir / "disk.img", image);
  auto imp = ImportDisk(dir / "disk.img", store->get());
  ASSERT_TRUE(imp.ok());
  auto exp = ChunkTableExport::Open(imp->table, store->get(), dir / "overlay");
  ASSERT_TRUE(exp.ok());
  ChunkTableExport* raw = exp->get();
  NbdServer server;
  ASSERT_TRUE(server.AddExport("disk", std::shared_ptr<BlockExport>(std::move(*exp))).ok());
  std::string sock = dir / "nbd.sock";
  ASSERT_TRUE(server.ListenUnix(sock).ok());
  ASSERT_TRUE(server.Start().ok());
  const std::string uri = "'nbd+unix:///disk?socket=" + sock + "'";

  Ran r = Shell("nbdcopy " + uri + " " + (dir / "read.img"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Slurp(dir / "read.img") == image);

  // qemu-img writes a new image through the export; freeze stores it.
  Bytes next = RandomBytes(4 << 20, 10);
  WriteFile(dir / "next.img", next);
  r = Shell("qemu-img convert -n -f raw -O raw " + (dir / "next.img") + " " + uri);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(raw->stats().dirty_chunks, 0u);
  auto frozen = raw->Freeze(store->get());
  ASSERT_TRUE(frozen.ok());
  ASSERT_TRUE(ExportDisk(*frozen, store->get(), dir / "frozen.img").ok());
  EXPECT_TRUE(Slurp(dir / "frozen.img") == next);
  // The original table still describes the original disk.
  ASSERT_TRUE(ExportDisk(imp->table, store->get(), dir / "orig.img").ok());
  EXPECT_TRUE(Slurp(dir / "orig.img") == image);
  server.Stop();
}

TEST_F(NbdTest, QemuGuestBootsWithItsDiskOnTheServer) {
  Serve();
  HypervisorOptions o;
  o.backend = "qemu";
  o.accel = "tcg";
  auto hv = OpenHypervisor(o);
  ASSERT_TRUE(hv.ok());
  VmSpec spec = NotepadSpec("nbdvm", dir_ / "vm");
  spec.cmdline += " slingshot.disk=auto";
  spec.disk = NbdDisk{sock_, "", 0, "blank", false};
  ASSERT_TRUE((*hv)->Boot(spec).ok());
  auto ctl = (*hv)->ServiceEndpoint("nbdvm", kControlPort);
  ASSERT_TRUE(WaitForNotepad(*ctl, 60s).ok());
  auto rfb = RfbSession::Connect(*(*hv)->ServiceEndpoint("nbdvm", kRfbPort));
  ASSERT_TRUE(rfb.ok());
  ASSERT_TRUE((*rfb)->Type("on our NBD").ok());
  ASSERT_TRUE(WaitForText(*ctl, "on our NBD", 30s, rfb->get()).ok());
  auto saved = Control(*ctl, "save");
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(*saved, "saved 10\n");
  ASSERT_TRUE((*hv)->Destroy("nbdvm").ok());
  Bytes b = Slurp(dir_ / "blank.img");
  EXPECT_EQ(std::string(b.begin(), b.begin() + 4), "NPAD");
  EXPECT_EQ(std::string(b.begin() + 512, b.begin() + 522), "on our NBD");
  EXPECT_GE(server_.stats().requests, 4u);  // at least: reads, the write, a flush
}

// The whole disk-on-demand path with a real guest: at home the notepad runs
// on a chunk-table disk and saves to it; a checkpoint stores its memory and
// freezes its disk; a replica is restored elsewhere with memory and disk
// fetched from the home's chunk service over TLS through a fetch chain, and
// it has the saved document both in memory and on its disk, and writes of
// its own go to its overlay only.
TEST(NbdChunkTableTest, GuestWritesToAChunkTableDiskAndTheWritesSurviveCheckpointRestore) {
  TempDir dir;
  auto store = ChunkStore::Open(dir / "home", {});
  ASSERT_TRUE(store.ok());
  WriteFile(dir / "blank.img", Bytes(8 << 20, 0));
  auto imp = ImportDisk(dir / "blank.img", store->get());
  ASSERT_TRUE(imp.ok());
  auto home_disk = ChunkTableExport::Open(imp->table, store->get(), dir / "home-overlay");
  ASSERT_TRUE(home_disk.ok());
  ChunkTableExport* primary_disk = home_disk->get();
  NbdServer home_nbd;
  ASSERT_TRUE(home_nbd.AddExport("disk", std::shared_ptr<BlockExport>(std::move(*home_disk))).ok());
  ASSERT_TRUE(home_nbd.ListenUnix(dir / "home.sock").ok());
  ASSERT_TRUE(home_nbd.Start().ok());

  HypervisorOptions o;
  o.backend = "qemu";
  o.accel = "tcg";
  auto hv = OpenHypervisor(o);
  ASSERT_TRUE(hv.ok());
  VmSpec spec = NotepadSpec("primary", dir / "primary");
  spec.cmdline += " slingshot.disk=auto";
  spec.disk = NbdDisk{dir / "home.sock", "", 0, "disk", false};
  ASSERT_TRUE((*hv)->Boot(spec).ok());
  auto ctl = *(*hv)->ServiceEndpoint("primary", kControlPort);
  ASSERT_TRUE(WaitForNotepad(ctl, 60s).ok());
  {
    auto rfb = RfbSession::Connect(*(*hv)->ServiceEndpoint("primary", kRfbPort));
    ASSERT_TRUE(rfb.ok());
    ASSERT_TRUE((*rfb)->Type("kept on disk").ok());
    ASSERT_TRUE(WaitForText(ctl, "kept on disk", 30s, rfb->get()).ok());
  }
  ASSERT_EQ(*Control(ctl, "save"), "saved 12\n");
  EXPECT_GT(primary_disk->stats().dirty_chunks, 0u);

  // Checkpoint: memory into the store, then freeze the disk table.
  MemoryImageWriter mem(store->get(), ChunkerOptions{});
  auto ck = (*hv)->Checkpoint("primary", [&](ByteView b) { return mem.Write(b); }, true);
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  auto memory = mem.Finish();
  ASSERT_TRUE(memory.ok());
  auto frozen = primary_disk->Freeze(store->get());
  ASSERT_TRUE(frozen.ok()) << frozen.status().ToString();
  EXPECT_NE(frozen->ids, imp->table.ids);

  // The primary goes on and writes more; the frozen table does not change.
  {
    auto rfb = RfbSession::Connect(*(*hv)->ServiceEndpoint("primary", kRfbPort));
    ASSERT_TRUE(rfb.ok());
    ASSERT_TRUE((*rfb)->Type(" later").ok());
    ASSERT_TRUE(WaitForText(ctl, "kept on disk later", 30s, rfb->get()).ok());
  }
  ASSERT_EQ(*Control(ctl, "save"), "saved 18\n");

  // The surrogate: chunks from the home's chunk service over TLS.
  auto ca = CertificateAuthority::Create("home", 3600);
  ASSERT_TRUE(ca.ok());
  ChunkService service(store->get());
  auto server = Server::Start(*ca->Issue("home", Role::kHome, 3600), ServerOptions{}, &service);
  ASSERT_TRUE(server.ok());
  auto home = HomeSource::Open("127.0.0.1", (*server)->port(), *ca->Issue("hotspot", Role::kSurrogate, 3600));
  ASSERT_TRUE(home.ok()) << home.status().ToString();
  ChunkStoreOptions co;
  co.mode = ChunkStore::Mode::kCache;
  auto cache = ChunkStore::Open(dir / "cache", co);
  ASSERT_TRUE(cache.ok());
  FetchChain chain(cache->get(), {home->get()});
  auto replica_disk = ChunkTableExport::Open(*frozen, &chain, dir / "replica-overlay");
  ASSERT_TRUE(replica_disk.ok());
  ChunkTableExport* rdisk = replica_disk->get();
  NbdServer replica_nbd;
  ASSERT_TRUE(replica_nbd.AddExport("disk", std::shared_ptr<BlockExport>(std::move(*replica_disk))).ok());
  ASSERT_TRUE(replica_nbd.ListenUnix(dir / "replica.sock").ok());
  ASSERT_TRUE(replica_nbd.Start().ok());

  VmSpec rspec = NotepadSpec("replica", dir / "replica");
  rspec.cmdline = spec.cmdline;
  rspec.disk = NbdDisk{dir / "replica.sock", "", 0, "disk", false};
  auto r = (*hv)->Restore(rspec, [&](const ByteSink& sink) { return ReadMemoryImage(*memory, &chain, sink); });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto rctl = *(*hv)->ServiceEndpoint("replica", kControlPort);
  ASSERT_TRUE(WaitForText(rctl, "kept on disk", 20s).ok());
  // Its disk, read through its export, holds the checkpoint-time save.
  Bytes sector(1024);
  ASSERT_TRUE(rdisk->Read(0, sector).ok());
  EXPECT_EQ(std::string(sector.begin(), sector.begin() + 4), "NPAD");
  EXPECT_EQ(std::string(sector.begin() + 512, sector.begin() + 524), "kept on disk");
  EXPECT_NE(std::string(sector.begin() + 512, sector.begin() + 530), "kept on disk later");
  auto cs = chain.stats();
  EXPECT_GT(cs.sources[0].chunks, 0u);  // memory and disk came from home
  EXPECT_EQ(cs.not_found, 0u);

  // The replica's own save lands in its overlay, not at home.
  {
    auto rfb = RfbSession::Connect(*(*hv)->ServiceEndpoint("replica", kRfbPort));
    ASSERT_TRUE(rfb.ok());
    ASSERT_TRUE((*rfb)->Type("!").ok());
    ASSERT_TRUE(WaitForText(rctl, "kept on disk!", 30s, rfb->get()).ok());
  }
  ASSERT_EQ(*Control(rctl, "save"), "saved 13\n");
  ASSERT_TRUE(rdisk->Read(0, sector).ok());
  EXPECT_EQ(std::string(sector.begin() + 512, sector.begin() + 525), "kept on disk!");
  auto home_view = ExportDisk(*frozen, store->get(), dir / "frozen.img");
  ASSERT_TRUE(home_view.ok());
  Bytes f = Slurp(dir / "frozen.img");
  EXPECT_EQ(std::string(f.begin() + 512, f.begin() + 524), "kept on disk");
  EXPECT_NE(f[524], '!');
  ASSERT_TRUE((*hv)->Destroy("replica").ok());
  ASSERT_TRUE((*hv)->Destroy("primary").ok());
  replica_nbd.Stop();
  home_nbd.Stop();
}

}  // namespace
}  // namespace slingshot::testing
