#define FUSE_USE_VERSION 312
#include "slingshot/disk/lazy_image.h"

#include <fuse_lowlevel.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "slingshot/base/log.h"
#include "slingshot/base/mutex.h"

namespace slingshot {
namespace {

constexpr fuse_ino_t kImageIno = 2;
constexpr const char kImageName[] = "image";
constexpr double kForever = 1e9;  // attribute and entry timeouts: nothing changes

}  // namespace

struct LazyImage::Impl {
  LazyImageOptions options;
  std::string path;
  fuse_session* session = nullptr;
  std::thread loop;
  std::unique_ptr<Prefetcher> prefetcher;
  // Held open while the image is mounted, so the kernel keeps its inode
  // (and the pages stored into it) whoever else has it open.
  int pin = -1;
  // Where each chunk sits (by index), for the prefetch to store it there.
  std::unordered_map<ChunkId, std::vector<size_t>, ChunkIdHash> at;

  std::atomic<uint64_t> reads{0}, bytes{0}, stored{0};
  std::atomic<bool> store_failed{false};
  std::unique_ptr<std::atomic<bool>[]> touched;  // per chunk: read at least once

  mutable Mutex mu;
  std::vector<ChunkId> first_reads GUARDED_BY(mu);
  std::unordered_set<ChunkId, ChunkIdHash> recorded GUARDED_BY(mu);
  uint64_t chunks_read GUARDED_BY(mu) = 0;
  Status error GUARDED_BY(mu);

  ~Impl() {
    if (prefetcher) prefetcher->Stop();
    prefetcher.reset();
    if (pin >= 0) ::close(pin);
    if (session) {
      fuse_session_exit(session);
      fuse_session_unmount(session);
    }
    if (loop.joinable()) loop.join();
    if (session) fuse_session_destroy(session);
  }

  void Attr(fuse_ino_t ino, struct stat* st) const {
    std::memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = getuid();
    st->st_gid = getgid();
    if (ino == FUSE_ROOT_ID) {
      st->st_mode = S_IFDIR | 0700;
      st->st_nlink = 2;
    } else {
      st->st_mode = S_IFREG | 0600;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(options.table.image_size);
      st->st_blksize = static_cast<blksize_t>(options.table.chunk_size);
      st->st_blocks = static_cast<blkcnt_t>((options.table.image_size + 511) / 512);
    }
  }

  void Failed(const Status& s) {
    MutexLock l(&mu);
    if (error.ok()) {
      error = s;
      LogWarning("lazy image " + path + ": " + s.ToString() + "; the page's reader gets EIO");
    }
  }

  void Touch(size_t i) {
    if (touched[i].exchange(true, std::memory_order_relaxed)) return;
    MutexLock l(&mu);
    ++chunks_read;
    // A chunk's content may sit at several offsets: recorded once.
    const ChunkId& id = options.table.ids[i];
    if (!id.IsNull() && recorded.insert(id).second) first_reads.push_back(id);
  }

  // Fills out with the image's bytes at [off, off + out.size()).
  Status Read(uint64_t off, std::span<uint8_t> out) {
    const DiskTable& t = options.table;
    const uint64_t end = off + out.size();
    for (uint64_t i = off / t.chunk_size; i * t.chunk_size < end; ++i) {
      Touch(i);
      const uint64_t c0 = i * t.chunk_size;
      const uint64_t from = std::max(off, c0), to = std::min<uint64_t>(end, c0 + t.ChunkLength(i));
      if (t.ids[i].IsNull()) {
        std::memset(out.data() + (from - off), 0, to - from);
        continue;
      }
      auto chunk = options.chunks->Get(t.ids[i]);
      if (!chunk.ok()) return chunk.status().Annotate("chunk " + std::to_string(i) + " (" + t.ids[i].Short() + ")");
      if (chunk->size() != t.ChunkLength(i)) {
        return Status::Corruption("chunk " + std::to_string(i) + " (" + t.ids[i].Short() + ") is " +
                                  std::to_string(chunk->size()) + " bytes, the table expects " +
                                  std::to_string(t.ChunkLength(i)));
      }
      std::memcpy(out.data() + (from - off), chunk->data() + (from - c0), to - from);
    }
    return Status::OK();
  }

  // A chunk the prefetch has had goes straight into the kernel's page
  // cache at each offset it sits at that the guest has not read yet: the
  // guest's first touch of those pages is then a minor fault, with no
  // round trip through here. (Stored pages make no reads, so they are not
  // in FirstReads: see LazyImageStats::stored.)
  void Store(const ChunkId& id, const Result<Bytes>& chunk) {
    if (!chunk.ok() || store_failed.load(std::memory_order_relaxed)) return;
    auto it = at.find(id);
    if (it == at.end()) return;
    const DiskTable& t = options.table;
    for (size_t i : it->second) {
      if (touched[i].load(std::memory_order_relaxed)) continue;
      if (chunk->size() != t.ChunkLength(i)) return;  // a read of it says why
      fuse_bufvec v = FUSE_BUFVEC_INIT(chunk->size());
      v.buf[0].mem = const_cast<uint8_t*>(chunk->data());
      int rc = fuse_lowlevel_notify_store(session, kImageIno, static_cast<off_t>(i * t.chunk_size), &v,
                                          static_cast<fuse_buf_copy_flags>(0));
      if (rc != 0) {
        // Not worth a retry: reads still work, one round trip each.
        store_failed = true;
        LogInfo("lazy image " + path + ": the kernel took no prefetched pages (" + std::strerror(-rc) +
                "); the guest's reads fetch them");
        return;
      }
      stored.fetch_add(1, std::memory_order_relaxed);
    }
  }

  static Impl* Of(fuse_req_t req) { return static_cast<Impl*>(fuse_req_userdata(req)); }

  // The kernel reads ahead at most a chunk: a fault brings in its own chunk,
  // not a megabyte around it (the prefetch brings the rest, in order).
  static void OnInit(void* userdata, fuse_conn_info* conn) {
    auto* d = static_cast<Impl*>(userdata);
    conn->max_readahead = std::min<unsigned>(conn->max_readahead, d->options.table.chunk_size);
  }

  static void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    if (parent != FUSE_ROOT_ID || std::strcmp(name, kImageName) != 0) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    fuse_entry_param e{};
    e.ino = kImageIno;
    e.attr_timeout = kForever;
    e.entry_timeout = kForever;
    Of(req)->Attr(kImageIno, &e.attr);
    fuse_reply_entry(req, &e);
  }

  static void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    if (ino != FUSE_ROOT_ID && ino != kImageIno) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    struct stat st;
    Of(req)->Attr(ino, &st);
    fuse_reply_attr(req, &st, kForever);
  }

  static void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    if (ino != kImageIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    // Writable opens are allowed (QEMU opens RAM files read-write even to
    // map them privately), but nothing is ever written: there is no write
    // operation, and truncation is refused.
    if (fi->flags & O_TRUNC) {
      fuse_reply_err(req, EPERM);
      return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  }

  static void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Impl* d = Of(req);
    const uint64_t total = d->options.table.image_size;
    if (ino != kImageIno) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    if (off < 0 || static_cast<uint64_t>(off) >= total) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    size = static_cast<size_t>(std::min<uint64_t>(size, total - static_cast<uint64_t>(off)));
    thread_local std::vector<uint8_t> buf;
    buf.resize(size);
    Status s = d->Read(static_cast<uint64_t>(off), std::span<uint8_t>(buf.data(), size));
    d->reads.fetch_add(1, std::memory_order_relaxed);
    if (!s.ok()) {
      d->Failed(s.Annotate("reading " + std::to_string(size) + " bytes at " + std::to_string(off)));
      fuse_reply_err(req, EIO);
      return;
    }
    d->bytes.fetch_add(size, std::memory_order_relaxed);
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), size);
  }
};

LazyImage::LazyImage(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LazyImage::~LazyImage() = default;

Result<std::unique_ptr<LazyImage>> LazyImage::Mount(LazyImageOptions options) {
  if (!options.chunks) return Status::InvalidArgument("a lazy image needs a chunk source");
  const DiskTable& t = options.table;
  if (t.chunk_size == 0 || t.ids.size() != (t.image_size + t.chunk_size - 1) / t.chunk_size) {
    return Status::InvalidArgument("a lazy image needs a well-formed table");
  }
  // A mount a killed process left here answers ENOTCONN: detach it.
  struct stat st;
  if (stat(options.dir.c_str(), &st) != 0 && errno == ENOTCONN) umount2(options.dir.c_str(), MNT_DETACH);
  if (mkdir(options.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno("creating the lazy image's mount point " + options.dir, errno);
  }
  auto impl = std::make_unique<Impl>();
  impl->path = options.dir + "/" + kImageName;
  impl->touched.reset(new std::atomic<bool>[t.ids.size()]);
  for (size_t i = 0; i < t.ids.size(); ++i) impl->touched[i] = false;
  impl->options = std::move(options);

  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = &Impl::OnInit;
    o.lookup = &Impl::OnLookup;
    o.getattr = &Impl::OnGetattr;
    o.open = &Impl::OnOpen;
    o.read = &Impl::OnRead;
    return o;
  }();
  // The mount is the caller's alone (no allow_other), and the kernel checks
  // the file's mode too.
  std::vector<std::string> argv = {"slingshot", "-o", "fsname=slingshot-lazy,subtype=slingshot,default_permissions"};
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(cargv.size()), cargv.data());
  impl->session = fuse_session_new(&args, &ops, sizeof ops, impl.get());
  fuse_opt_free_args(&args);  // what fuse_session_new's parsing allocated
  if (!impl->session) return Status::IOError("could not start a FUSE session for the lazy image (see the log)");
  if (fuse_session_mount(impl->session, impl->options.dir.c_str()) != 0) {
    fuse_session_destroy(impl->session);
    impl->session = nullptr;
    return Status::IOError("could not mount the lazy image at " + impl->options.dir +
                           ": FUSE needs /dev/fuse and root, or fusermount3 (package fuse3)");
  }
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, 16);
    fuse_loop_cfg_set_idle_threads(cfg, 4);
    fuse_session_loop_mt(raw->session, cfg);
    fuse_loop_cfg_destroy(cfg);
  });
  if (impl->options.prefetch && !impl->options.order.empty()) {
    ChunkSource::Sink store;
    if (impl->options.fill_page_cache) {
      const std::vector<ChunkId>& ids = impl->options.table.ids;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (!ids[i].IsNull()) impl->at[ids[i]].push_back(i);
      }
      // Our own open makes the kernel look the file up: from then on it
      // takes pages for it.
      impl->pin = ::open(impl->path.c_str(), O_RDONLY | O_CLOEXEC);
      if (impl->pin >= 0) store = [raw](const ChunkId& id, Result<Bytes>&& chunk) { raw->Store(id, chunk); };
    }
    impl->prefetcher = std::make_unique<Prefetcher>(impl->options.prefetch, impl->options.order, 256, std::move(store));
  }
  return std::unique_ptr<LazyImage>(new LazyImage(std::move(impl)));
}

int DetachLazyImagesUnder(const std::string& dir) {
  // /proc/self/mountinfo: "id parent major:minor root mountpoint options ...
  // - fstype source superoptions"; ours are fuse.slingshot from
  // slingshot-lazy. Mount points escape spaces as \040.
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> ours;
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 15, "fuse.slingshot ") != 0) continue;
    std::string unescaped;
    for (size_t i = 0; i < point.size(); ++i) {
      if (point[i] == '\\' && i + 3 < point.size()) {
        unescaped += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        unescaped += point[i];
      }
    }
    if (unescaped == dir || unescaped.rfind(dir + "/", 0) == 0) ours.push_back(unescaped);
  }
  int n = 0;
  for (const auto& p : ours) n += umount2(p.c_str(), MNT_DETACH) == 0;
  return n;
}

const std::string& LazyImage::path() const { return impl_->path; }
uint64_t LazyImage::size() const { return impl_->options.table.image_size; }

std::vector<ChunkId> LazyImage::FirstReads() const {
  MutexLock l(&impl_->mu);
  return impl_->first_reads;
}

LazyImageStats LazyImage::stats() const {
  LazyImageStats s;
  s.reads = impl_->reads.load();
  s.bytes = impl_->bytes.load();
  s.stored = impl_->stored.load();
  {
    MutexLock l(&impl_->mu);
    s.chunks_read = impl_->chunks_read;
  }
  if (impl_->prefetcher) {
    s.prefetched = impl_->prefetcher->done();
    s.prefetch_total = impl_->prefetcher->total();
  }
  return s;
}

Status LazyImage::error() const {
  MutexLock l(&impl_->mu);
  return impl_->error;
}

Status LazyImage::WaitPrefetched() { return impl_->prefetcher ? impl_->prefetcher->Wait() : Status::OK(); }

}  // namespace slingshot
