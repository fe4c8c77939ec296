// An NBD server (the BlockExport seam's wire side, DESIGN.md §3): the disk a
// replica's VM sees, served to QEMU, the dom0 kernel's NBD client, libnbd
// tools and qemu-img.
//
// Protocol: the NBD protocol's fixed newstyle handshake (doc/proto.md in the
// NBD project) with options EXPORT_NAME, LIST, INFO, GO and ABORT (others
// are answered "unsupported"), then simple replies to READ, WRITE, FLUSH,
// TRIM and DISC. Every request is bounded (max_request) and checked against
// the export's size before the export sees it; a request the server cannot
// parse (bad magic) ends that connection only, and the server keeps serving
// the others.
//
// Thread-safety: AddExport and the Listen calls before Start(); then one
// thread per connection, which calls its BlockExport from that thread, so a
// BlockExport must be thread-safe when it is exported to more than one
// connection.
#ifndef SLINGSHOT_DISK_NBD_SERVER_H_
#define SLINGSHOT_DISK_NBD_SERVER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"
#include "slingshot/disk/block_export.h"

namespace slingshot {

// A raw image file as an export (tests, tools).
Result<std::shared_ptr<BlockExport>> OpenFileExport(const std::string& path, bool read_only);

struct NbdServerOptions {
  uint32_t max_request = 32 << 20;  // largest READ/WRITE length served
  uint32_t max_option = 4096;       // largest option payload read
};

class NbdServer {
 public:
  explicit NbdServer(const NbdServerOptions& options = {});
  ~NbdServer();  // Stop()s
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // AlreadyExists if the name is taken; names are at most 4096 bytes.
  Status AddExport(const std::string& name, std::shared_ptr<BlockExport> disk,
                   const std::string& description = "");
  // Listens on a unix socket (an existing socket file is replaced).
  Status ListenUnix(const std::string& path);
  // Listens on TCP; port 0 picks one. Returns the port.
  Result<uint16_t> ListenTcp(const std::string& host, uint16_t port);

  Status Start();
  // Closes the listeners and every connection, and waits for their threads.
  void Stop();

  struct Stats {
    uint64_t connections = 0;
    uint64_t requests = 0;
    uint64_t bad_requests = 0;  // malformed frames and refused requests
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_DISK_NBD_SERVER_H_
