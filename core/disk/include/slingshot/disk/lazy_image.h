// LazyImage: a table's image (a guest's RAM) as a file whose pages arrive
// on demand (DESIGN.md §5 "Instantiate a replica").
//
// A FUSE file system (libfuse3, low-level API) of one read-only file,
// DIR/image, of the table's size. A read fetches the chunks it covers
// through the source (the fetch chain: cache, stick, home; every chunk
// verified against its id), so QEMU can map the file as a guest's RAM
// (memory-backend-file, share=off) and start before any of it has arrived:
// each page the guest touches first faults in through here, and the
// kernel's page cache keeps it. The guest's own writes stay in its private
// mapping. A background prefetch (Prefetcher, through the chain) fetches
// the rest in the order given (the recorded working set first), and a read
// of a chunk the prefetch has queued is served at once, not behind the
// queue (the chain's Get). Each chunk the prefetch has had is also stored
// into the kernel's page cache (FUSE notify_store) wherever the guest has
// not read yet, so the guest's first touch of it costs no round trip here.
//
// A chunk that cannot be had (the home gone, every copy damaged) fails the
// read with EIO: QEMU then dies of SIGBUS on that page, so a lazy replica
// whose source dies mid-fetch ends, and its death is reported as any other;
// error() says why.
//
// The order chunks are first read in is recorded (FirstReads): the
// replica's memory working set, which the next instantiation prefetches
// first. Pages the prefetch stored are never read, so with a prefetch that
// fills the page cache the record is whole only while stats().stored is 0.
//
// Mounting needs root (or fusermount3). The destructor unmounts; the VM
// mapping the file must be gone by then. A mount left by a killed process
// at DIR is detached before the new one.
#ifndef SLINGSHOT_DISK_LAZY_IMAGE_H_
#define SLINGSHOT_DISK_LAZY_IMAGE_H_

#include <memory>
#include <string>
#include <vector>

#include "slingshot/store/chunk_source.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/fetch_chain.h"

namespace slingshot {

struct LazyImageOptions {
  std::string dir;  // the mount point (created, mode 0700)
  DiskTable table;
  ChunkSource* chunks = nullptr;  // reads; must outlive the image
  // Background prefetch through this chain, in this order (chunk ids;
  // typically PrefetchOrder of the working set and the table); null: none.
  FetchChain* prefetch = nullptr;
  std::vector<ChunkId> order;
  // Whether the prefetch stores what it has into the page cache.
  bool fill_page_cache = true;
};

struct LazyImageStats {
  uint64_t reads = 0;          // FUSE read requests
  uint64_t bytes = 0;          // bytes they returned
  uint64_t chunks_read = 0;    // distinct chunks read so far
  uint64_t prefetched = 0;     // chunks the background prefetch has fetched
  uint64_t stored = 0;         // chunk places it stored into the page cache before the guest read them
  uint64_t prefetch_total = 0;
};

class LazyImage {
 public:
  static Result<std::unique_ptr<LazyImage>> Mount(LazyImageOptions options);
  ~LazyImage();  // stops the prefetch, unmounts
  LazyImage(const LazyImage&) = delete;
  LazyImage& operator=(const LazyImage&) = delete;

  // The file to map: DIR/image.
  const std::string& path() const;
  uint64_t size() const;
  // Chunk ids in the order they were first read (null chunks left out).
  std::vector<ChunkId> FirstReads() const;
  LazyImageStats stats() const;
  // The first read that failed, with why; OK if none.
  Status error() const;
  // Blocks until the background prefetch is done (or stopped).
  Status WaitPrefetched();

  struct Impl;

 private:
  explicit LazyImage(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Detaches every lazy image mounted at or below dir (by this or a killed
// process), so that dir can be removed; returns how many. For a program's
// start-up, to clear what a killed run left.
int DetachLazyImagesUnder(const std::string& dir);

}  // namespace slingshot

#endif  // SLINGSHOT_DISK_LAZY_IMAGE_H_
