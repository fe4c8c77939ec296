// disk_bench: what disks on demand cost, each figure against a baseline run
// side by side in the same process:
//   seq_read_vs_file   nbdcopy reading a disk from its chunk-table export
//                      (chunks from a Berkeley DB store, verified) over
//                      nbdcopy reading the raw image file through the same
//                      NBD server, same socket kind, alternating runs;
//   cold_fetch_vs_link a surrogate with an empty cache fetching the whole
//                      disk from the home's chunk service over TLS through
//                      a user-space link emulator (rate R, RTT D): payload
//                      throughput over the link's configured rate;
//   stale_stick_vs_home_only  the same cold fetch with a stale stick (it
//                      holds only chunks of an older disk) in the chain,
//                      over the time without a stick, alternating runs.
//   overlay_cipher_vs_plain  a guest's writes and reads through a surrogate's
//                      encrypted disk overlay (base/cipher.h) over the same
//                      through a plain one: time plain / time encrypted,
//                      alternating runs (1 = free).
// Also printed: the partly-current stick's time and bytes by source.
// Last line: RESULT seq_read_vs_file=R cold_fetch_vs_link=L stale_stick_vs_home_only=S overlay_cipher_vs_plain=C
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "../tests/support/link_emulator.h"
#include "slingshot/net/chunk_service.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/disk/chunk_table_export.h"
#include "slingshot/base/cipher.h"
#include "slingshot/base/coding.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/fetch_chain.h"
#include "slingshot/base/log.h"
#include "slingshot/disk/nbd_server.h"
#include "slingshot/store/portable.h"

namespace po = boost::program_options;
using namespace slingshot;
using namespace slingshot::testing;
using Clock = std::chrono::steady_clock;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

int Fail(const Status& s, const char* what) {
  std::fprintf(stderr, "disk_bench: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

Bytes Random(size_t n, uint64_t seed) {
  Bytes b(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(b.data() + i, &x, std::min<size_t>(8, n - i));
  }
  return b;
}

// Seconds nbdcopy takes to read export `name` to null:.
Result<double> NbdcopyRead(const std::string& sock, const std::string& name) {
  std::string cmd = "nbdcopy 'nbd+unix:///" + name + "?socket=" + sock + "' null: 2>&1";
  auto start = Clock::now();
  int rc = std::system(cmd.c_str());
  double s = Seconds(start);
  if (rc != 0) return Status::IOError("nbdcopy failed: " + cmd);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 3;
  size_t size_mb = 256, fetch_mb = 32;
  double rate_mbit = 100, rtt_ms = 20;
  po::options_description desc("disk_bench options");
  desc.add_options()("help", "this help")
      ("runs", po::value(&runs)->default_value(3), "alternating runs of each side (median kept)")
      ("size-mb", po::value(&size_mb)->default_value(256), "disk size for the sequential read")
      ("fetch-mb", po::value(&fetch_mb)->default_value(32), "disk size for the fetches over the link")
      ("rate-mbit", po::value(&rate_mbit)->default_value(100), "emulated link rate, Mbit/s")
      ("rtt-ms", po::value(&rtt_ms)->default_value(20), "emulated link round trip, ms");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "disk_bench: " << e.what() << "\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  SetLogLevel(LogLevel::kWarning);
  runs = std::max(runs, 1);
  std::string dir = (std::filesystem::temp_directory_path() / ("disk_bench." + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};

  auto store = ChunkStore::Open(dir + "/home", {});
  if (!store.ok()) return Fail(store.status(), "open store");

  // --- 1. sequential read: chunk-table export vs the raw file, same server ---
  std::string image = dir + "/disk.img";
  {
    std::ofstream f(image, std::ios::binary);
    for (size_t i = 0; i < size_mb; ++i) {
      Bytes mb = Random(1 << 20, i + 1);
      f.write(reinterpret_cast<const char*>(mb.data()), mb.size());
    }
  }
  auto imp = ImportDisk(image, store->get());
  if (!imp.ok()) return Fail(imp.status(), "import");
  double raw_s, table_s;
  {
    auto file = OpenFileExport(image, true);
    auto table = ChunkTableExport::Open(imp->table, store->get(), dir + "/overlay");
    if (!file.ok() || !table.ok()) return Fail(file.ok() ? table.status() : file.status(), "exports");
    NbdServer nbd;
    std::string sock = dir + "/nbd.sock";
    if (!nbd.AddExport("raw", *file).ok() ||
        !nbd.AddExport("table", std::shared_ptr<BlockExport>(std::move(*table))).ok() ||
        !nbd.ListenUnix(sock).ok() || !nbd.Start().ok()) {
      return Fail(Status::IOError("nbd server"), "start");
    }
    std::vector<double> raw_v, table_v;
    for (int r = 0; r < runs; ++r) {
      auto a = NbdcopyRead(sock, "raw");
      auto b = NbdcopyRead(sock, "table");
      if (!a.ok() || !b.ok()) return Fail(a.ok() ? b.status() : a.status(), "nbdcopy");
      raw_v.push_back(*a);
      table_v.push_back(*b);
    }
    raw_s = Median(raw_v);
    table_s = Median(table_v);
    nbd.Stop();
  }
  double mib = double(size_mb);
  std::printf("seq read %zu MiB with nbdcopy: raw file export %.0f MiB/s, chunk-table export %.0f MiB/s\n", size_mb,
              mib / raw_s, mib / table_s);
  const double R = raw_s / table_s;

  // --- 2. cold fetch over an emulated link, and 3. with a stale stick ---
  std::string fetch_image = dir + "/fetch.img";
  {
    std::ofstream f(fetch_image, std::ios::binary);
    for (size_t i = 0; i < fetch_mb; ++i) {
      Bytes mb = Random(1 << 20, 100000 + i);
      f.write(reinterpret_cast<const char*>(mb.data()), mb.size());
    }
  }
  auto fimp = ImportDisk(fetch_image, store->get());
  if (!fimp.ok()) return Fail(fimp.status(), "import");
  std::vector<ChunkId> ids;
  for (const auto& id : fimp->table.ids) {
    if (!id.IsNull()) ids.push_back(id);
  }

  auto ca = CertificateAuthority::Create("bench home", 3600);
  if (!ca.ok()) return Fail(ca.status(), "CA");
  auto home_creds = ca->Issue("home", Role::kHome, 3600);
  auto surrogate_creds = ca->Issue("bench-surrogate", Role::kSurrogate, 3600);
  if (!home_creds.ok() || !surrogate_creds.ok()) return Fail(home_creds.status(), "issue");
  ChunkService service(store->get());
  auto server = Server::Start(*home_creds, ServerOptions{}, &service);
  if (!server.ok()) return Fail(server.status(), "chunk service");
  LinkProfile profile;
  profile.rate_bits_per_s = rate_mbit * 1e6;
  profile.rtt_ms = rtt_ms;
  auto link = LinkEmulator::Start("127.0.0.1", (*server)->port(), profile);
  if (!link.ok()) return Fail(link.status(), "link emulator");

  // Sticks: a stale one (chunks of an older, unrelated disk) and a partly
  // current one (every other chunk of today's disk).
  std::string stale = dir + "/stale-stick", partial = dir + "/partial-stick";
  {
    auto w = PortableWriter::Open(stale);
    auto p = PortableWriter::Open(partial);
    if (!w.ok() || !p.ok()) return Fail(w.ok() ? p.status() : w.status(), "stick");
    for (size_t i = 0; i < ids.size(); ++i) {
      Bytes old = Random(64 << 10, 900000 + i);
      if (!(*w)->Add(ChunkId::Of(old), old).ok()) return 1;
      if (i % 2 == 0 && !(*p)->Add(ids[i], *(*store)->Get(ids[i])).ok()) return 1;
    }
    if (!(*w)->Commit().ok() || !(*p)->Commit().ok()) return 1;
  }

  // One cold fetch of every chunk; returns seconds and the chain's figures.
  int run_id = 0;
  auto fetch = [&](const std::string& stick, FetchChainStats* out) -> Result<double> {
    std::string cache_dir = dir + "/cache-" + std::to_string(run_id++);
    ChunkStoreOptions co;
    co.mode = ChunkStore::Mode::kCache;
    SLINGSHOT_ASSIGN_OR_RETURN(auto cache, ChunkStore::Open(cache_dir, co));
    std::unique_ptr<PortableSource> portable;
    if (!stick.empty()) {
      SLINGSHOT_ASSIGN_OR_RETURN(portable, PortableSource::Open(stick));
    }
    auto start = Clock::now();
    SLINGSHOT_ASSIGN_OR_RETURN(auto home, HomeSource::Open("127.0.0.1", (*link)->port(), *surrogate_creds));
    std::vector<ChunkSource*> sources;
    if (portable) sources.push_back(portable.get());
    sources.push_back(home.get());
    FetchChain chain(cache.get(), sources);
    SLINGSHOT_RETURN_IF_ERROR(chain.Fetch(ids));
    double s = Seconds(start);
    *out = chain.stats();
    if (out->not_found != 0) return Status::Corruption("chunks went missing");
    cache.reset();
    std::filesystem::remove_all(cache_dir);
    return s;
  };

  std::vector<double> home_v, stale_v, partial_v;
  FetchChainStats home_st, stale_st, partial_st;
  for (int r = 0; r < runs; ++r) {
    auto a = fetch("", &home_st);
    auto b = fetch(stale, &stale_st);
    auto c = fetch(partial, &partial_st);
    if (!a.ok() || !b.ok() || !c.ok()) return Fail(!a.ok() ? a.status() : !b.ok() ? b.status() : c.status(), "fetch");
    home_v.push_back(*a);
    stale_v.push_back(*b);
    partial_v.push_back(*c);
  }
  double payload = double(home_st.sources.back().bytes);
  double home_s = Median(home_v), stale_s = Median(stale_v), partial_s = Median(partial_v);
  double link_bytes_per_s = profile.rate_bits_per_s / 8;
  const double L = payload / home_s / link_bytes_per_s;
  const double S = stale_s / home_s;
  std::printf("link: %.0f Mbit/s, RTT %.0f ms (user-space emulator)\n", rate_mbit, rtt_ms);
  std::printf("cold fetch of %zu chunks (%s): home only %.2f s = %.1f Mbit/s\n", ids.size(),
              HumanBytes(uint64_t(payload)).c_str(), home_s, payload * 8 / home_s / 1e6);
  std::printf("  with a stale stick   %.2f s (stick supplied %llu chunks, home %llu)\n", stale_s,
              (unsigned long long)stale_st.sources[0].chunks, (unsigned long long)stale_st.sources[1].chunks);
  std::printf("  with a half-current stick %.2f s (stick %llu chunks, home %llu): %.2fx home only\n", partial_s,
              (unsigned long long)partial_st.sources[0].chunks, (unsigned long long)partial_st.sources[1].chunks,
              partial_s / home_s);
  (*link)->Stop();
  (*server)->Stop();

  // --- 4. the encrypted overlay against a plain one ---
  const size_t overlay_mb = std::max<size_t>(16, size_mb / 4);
  auto cipher = LocalCipher::Random();
  if (!cipher.ok()) return Fail(cipher.status(), "cipher");
  auto overlay_pass = [&](bool encrypted) -> Result<double> {
    ChunkTableExportOptions eo;
    if (encrypted) eo.cipher = *cipher;
    SLINGSHOT_ASSIGN_OR_RETURN(auto e, ChunkTableExport::Open(imp->table, store->get(), dir + "/overlay-bench", eo));
    Bytes block = Random(64 << 10, 7), back(64 << 10);
    auto t0 = std::chrono::steady_clock::now();
    for (uint64_t off = 0; off < (uint64_t(overlay_mb) << 20); off += block.size()) {
      SLINGSHOT_RETURN_IF_ERROR(e->Write(off, block));
    }
    SLINGSHOT_RETURN_IF_ERROR(e->Flush());
    for (uint64_t off = 0; off < (uint64_t(overlay_mb) << 20); off += back.size()) {
      SLINGSHOT_RETURN_IF_ERROR(e->Read(off, back));
      if (back != block) return Status::Corruption("the overlay read back other bytes at " + std::to_string(off));
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<double> plain_v, enc_v;
  for (int r = 0; r < runs; ++r) {
    auto a = overlay_pass(false);
    auto b = overlay_pass(true);
    if (!a.ok() || !b.ok()) return Fail(a.ok() ? b.status() : a.status(), "overlay");
    plain_v.push_back(*a);
    enc_v.push_back(*b);
  }
  const double plain_s = Median(plain_v), enc_s = Median(enc_v);
  const double C = plain_s / enc_s;
  std::printf("overlay: %zu MiB written and read back, plain %.0f MiB/s, encrypted %.0f MiB/s\n", overlay_mb,
              2 * double(overlay_mb) / plain_s, 2 * double(overlay_mb) / enc_s);
  std::printf("RESULT seq_read_vs_file=%.2f cold_fetch_vs_link=%.2f stale_stick_vs_home_only=%.2f "
              "overlay_cipher_vs_plain=%.2f\n", R, L, S, C);
  return 0;
}
