// store_bench: ingest throughput of the chunk store against plain SHA-256
// over the same bytes, measured side by side in one run.
//
// Generates an image of --size bytes in 64 KiB blocks (by default 1 GiB:
// 40% random, 30% repeats of earlier random blocks, 20% zero, 10% text) and
// times:
//   sha256     one thread hashing every 64 KiB block of the file (the
//              baseline; measured before and after the ingests, the faster
//              run is kept so the ratios are conservative)
//   ingest     ImportDisk into a new transactional store (synchronous commits);
//              --runs times, each into a fresh store, the median is reported
//   reingest   the same import again (everything already stored); median
//   memory     the same bytes through FastCDC into the store (for reference)
//   log        8 threads appending 100-byte events with sync (group commit)
// and prints, last, the RESULT line.
#include <fcntl.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <thread>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/event_log.h"
#include "slingshot/base/file_util.h"
#include "slingshot/store/memory_image.h"

namespace slingshot {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
constexpr size_t kBlock = 64 * 1024;

void Fail(const Status& st) {
  std::fprintf(stderr, "store_bench: %s\n", st.ToString().c_str());
  std::exit(1);
}

// xoshiro-like fast generator: the data must be made faster than it is hashed.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  void Fill(uint8_t* p, size_t n) {
    for (size_t i = 0; i + 8 <= n; i += 8) {
      uint64_t v = Next();
      std::memcpy(p + i, &v, 8);
    }
  }
};

Status Generate(const std::string& path, uint64_t size) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::FromErrno("create " + path, errno);
  Rng rng{42};
  std::vector<Bytes> pool;  // random blocks that later repeat
  Bytes block(kBlock);
  static const char kText[] = "the quick brown fox edits a document on a surrogate replica; ";
  for (uint64_t i = 0; i < size / kBlock; ++i) {
    uint64_t kind = rng.Next() % 10;
    if (kind < 4 || (kind < 7 && pool.empty())) {
      rng.Fill(block.data(), kBlock);
      if (pool.size() < 256) pool.push_back(block);
    } else if (kind < 7) {
      block = pool[rng.Next() % pool.size()];
    } else if (kind < 9) {
      std::fill(block.begin(), block.end(), 0);
    } else {
      for (size_t j = 0; j < kBlock; ++j) block[j] = static_cast<uint8_t>(kText[(j + i * 7) % (sizeof(kText) - 1)]);
      uint64_t v = rng.Next();
      std::memcpy(block.data() + (v % (kBlock - 8)), &v, 8);  // unique per block
    }
    SLINGSHOT_RETURN_IF_ERROR(WriteAll(fd.get(), block.data(), kBlock, path));
  }
  if (::fsync(fd.get()) != 0) return Status::FromErrno("fsync", errno);
  return Status::OK();
}

// The baseline: plain SHA-256 of every 64 KiB block, one thread.
double Sha256Seconds(const std::string& path, uint64_t size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  Bytes buf(8u << 20);
  uint64_t sink = 0;
  auto t0 = Clock::now();
  for (uint64_t off = 0; off < size; off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    if (!PreadExact(fd.get(), buf.data(), n, off, path).ok()) std::exit(1);
    for (size_t p = 0; p < n; p += kBlock) sink += ChunkId::Of(buf.data() + p, std::min(kBlock, n - p)).bytes[0];
  }
  double s = Since(t0);
  if (sink == 1) std::puts("");  // keep the hashes observable
  return s;
}

}  // namespace
}  // namespace slingshot

int main(int argc, char** argv) {
  using namespace slingshot;
  namespace po = boost::program_options;
  po::options_description desc("store_bench options");
  desc.add_options()("help", "show this")
      ("size-mb", po::value<uint64_t>()->default_value(1024), "image size in MiB")
      ("dir", po::value<std::string>(), "work directory (default: a new one under $TMPDIR)")
      ("threads", po::value<int>()->default_value(0), "ingest threads (0 = one per core)")
      ("runs", po::value<int>()->default_value(3), "ingest and reingest runs (the median is reported)")
      ("log-seconds", po::value<double>()->default_value(2.0), "how long to measure log appends");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
  } catch (const po::error& e) {
    std::cerr << e.what() << "\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  namespace fs = std::filesystem;
  std::string dir;
  bool own_dir = !vm.count("dir");
  if (own_dir) {
    std::string tmpl = (fs::temp_directory_path() / "store-bench-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) Fail(Status::FromErrno("mkdtemp", errno));
    dir = tmpl;
  } else {
    dir = vm["dir"].as<std::string>();
    fs::create_directories(dir);
  }
  const uint64_t size = vm["size-mb"].as<uint64_t>() << 20;
  const std::string image = dir + "/image.raw";
  std::printf("store_bench: %s image in %s, %u cores\n", HumanBytes(size).c_str(), dir.c_str(),
              std::thread::hardware_concurrency());
  Status st = Generate(image, size);
  if (!st.ok()) Fail(st);

  double sha_before = Sha256Seconds(image, size);

  ChunkStoreOptions so;  // transactional: every batch commit is fsynced
  DiskImportOptions io;
  io.writer.threads = vm["threads"].as<int>();
  const int runs = std::max(1, vm["runs"].as<int>());
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> ingests, reingests;
  std::unique_ptr<ChunkStore> store;
  Result<DiskImport> first = Status::NotFound("no run");
  for (int r = 0; r < runs; ++r) {
    store.reset();
    fs::remove_all(dir + "/store");
    auto opened = ChunkStore::Open(dir + "/store", so);
    if (!opened.ok()) Fail(opened.status());
    store = std::move(opened).value();
    auto t0 = Clock::now();
    first = ImportDisk(image, store.get(), io);
    if (!first.ok()) Fail(first.status());
    ingests.push_back(Since(t0));
  }
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    auto again = ImportDisk(image, store.get(), io);
    if (!again.ok()) Fail(again.status());
    reingests.push_back(Since(t0));
    if (again->table.ids != first->table.ids || again->stats.new_chunks != 0) Fail(Status::Corruption("reingest differs"));
  }
  const double ingest = median(ingests), reingest = median(reingests);
  auto list = [](const std::vector<double>& v) {
    std::string s;
    for (double x : v) s += (s.empty() ? "" : " ") + std::to_string(x).substr(0, 5);
    return s;
  };
  Clock::time_point t0;

  // The same bytes as a memory image through FastCDC, into a fresh store.
  double memory;
  {
    auto mstore = ChunkStore::Open(dir + "/mstore", so);
    if (!mstore.ok()) Fail(mstore.status());
    UniqueFd fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
    Bytes buf(4u << 20);
    t0 = Clock::now();
    MemoryImageWriter w(mstore->get(), ChunkerOptions{}, io.writer);
    for (uint64_t off = 0; off < size; off += buf.size()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
      if (!PreadExact(fd.get(), buf.data(), n, off, image).ok()) Fail(Status::IOError("read"));
      if (Status s = w.Write(ByteView(buf.data(), n)); !s.ok()) Fail(s);
    }
    auto list = w.Finish();
    if (!list.ok()) Fail(list.status());
    memory = Since(t0);
  }

  double sha_after = Sha256Seconds(image, size);
  double sha = std::min(sha_before, sha_after);

  // Group commit: 8 writers, synchronous appends.
  uint64_t appends = 0;
  double log_secs;
  {
    auto log = EventLog::Open(dir + "/log");
    if (!log.ok()) Fail(log.status());
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> count{0};
    std::vector<std::thread> ts;
    Bytes payload(100, 0x5a);
    t0 = Clock::now();
    for (int i = 0; i < 8; ++i) {
      ts.emplace_back([&] {
        while (!stop) {
          if (!(*log)->Append(1, payload).ok()) std::exit(1);
          ++count;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(vm["log-seconds"].as<double>()));
    stop = true;
    for (auto& t : ts) t.join();
    log_secs = Since(t0);
    appends = count;
  }

  const IngestStats& s = first->stats;
  double gbs = static_cast<double>(size) / 1e9;
  std::printf("  sha256 baseline   %.2f GB/s (one thread; %.3f s before, %.3f s after)\n", gbs / sha, sha_before, sha_after);
  std::printf("  ingest            %.2f GB/s (median of %s s): %s new in %llu chunks stored as %s, %s duplicate, %s zero\n",
              gbs / ingest, list(ingests).c_str(), HumanBytes(s.new_bytes).c_str(), static_cast<unsigned long long>(s.new_chunks),
              HumanBytes(s.stored_bytes).c_str(), HumanBytes(s.dup_bytes).c_str(), HumanBytes(s.zero_bytes).c_str());
  std::printf("  reingest          %.2f GB/s (median of %s s)\n", gbs / reingest, list(reingests).c_str());
  std::printf("  memory (FastCDC)  %.2f GB/s (%.3f s)\n", gbs / memory, memory);
  std::printf("  log appends       %.0f/s synced, 8 writers, %.1f s\n", appends / log_secs, log_secs);
  double dedup = static_cast<double>(s.logical_bytes) / static_cast<double>(std::max<uint64_t>(1, s.new_bytes));
  std::printf("RESULT ingest_vs_sha256=%.2f reingest_vs_sha256=%.2f dedup=%.2f log_appends_per_s=%.0f\n", sha / ingest,
              sha / reingest, dedup, appends / log_secs);
  store.reset();
  if (own_dir) fs::remove_all(dir);
  return 0;
}
