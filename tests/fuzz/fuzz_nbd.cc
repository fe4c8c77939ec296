// libFuzzer target: the NBD server, driven over a real unix socket by the
// fuzzed bytes as one client session (handshake, options, requests). The
// server must answer or close, never crash, hang or touch memory out of
// bounds (ASan+UBSan), for both export kinds: a file and a chunk table with
// its copy-on-write overlay.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "slingshot/store/chunk_store.h"
#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/base/log.h"
#include "slingshot/disk/nbd_server.h"

using namespace slingshot;

namespace {

struct Fixture {
  std::string dir;
  std::unique_ptr<ChunkStore> store;
  NbdServer server;
  std::string sock;

  Fixture() {
    SetLogLevel(LogLevel::kError);  // every malformed session is logged otherwise
    char tmpl[] = "/tmp/fuzz_nbd.XXXXXX";
    dir = mkdtemp(tmpl);
    {
      std::ofstream f(dir + "/disk.img", std::ios::binary);
      for (int i = 0; i < 4 * 65536; ++i) f.put(static_cast<char>(i * 7 + i / 4096));
    }
    store = std::move(ChunkStore::Open(dir + "/store", {})).value();
    DiskTable t = ImportDisk(dir + "/disk.img", store.get()).value().table;
    auto table = ChunkTableExport::Open(t, store.get(), dir + "/overlay").value();
    auto file = OpenFileExport(dir + "/disk.img", false).value();
    if (!server.AddExport("table", std::shared_ptr<BlockExport>(std::move(table))).ok() ||
        !server.AddExport("file", file).ok()) {
      std::abort();
    }
    sock = dir + "/nbd.sock";
    if (!server.ListenUnix(sock).ok() || !server.Start().ok()) std::abort();
  }
  ~Fixture() {
    server.Stop();
    std::filesystem::remove_all(dir);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* fx = new Fixture();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", fx->sock.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) std::abort();
  // Replies are drained as the session goes, so the server never blocks on a
  // full socket while we are still writing.
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  size_t off = 0;
  uint8_t buf[65536];
  while (off < size) {
    ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) off += size_t(n);
    else if (n < 0 && errno != EAGAIN) break;
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
  }
  shutdown(fd, SHUT_WR);
  // The server must end the session by itself once our bytes run out.
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN) __builtin_trap();  // the server hung
      break;
    }
  }
  close(fd);
  return 0;
}
