// vm_bench: what checkpoints of a real VM cost, on the backend this machine
// picks (QEMU TCG here). Boots the notepad guest twice, side by side: one on
// a backend with live checkpoints, one with them off (the guest paused for
// the whole save, the baseline), types into both, then `--runs` times, in
// turn:
//   - the baseline's checkpoint, straight into a chunk store through FastCDC;
//   - the live guest's checkpoint with its RAM kept apart (QEMU: device
//     state in the stream, RAM copied aside in the pause and stored after
//     as a table of 64 KiB chunks by offset), as the home takes them;
//   - the live guest's checkpoint as one stream saved while it runs (QEMU:
//     a background snapshot), for comparison;
// and reports how long each guest stood still, how long the copy of RAM
// took within the pause, and
//   - a key typed into the live guest while its RAM-apart checkpoint is
//     stored: how long until its screen shows it, beside the same key at rest;
//   - stored bytes after dedup and zstd over guest RAM (first checkpoint);
//   - the second RAM-apart checkpoint (after an idle pause): its new bytes
//     over its bytes (stream and RAM);
//   - a restore of the first RAM-apart checkpoint from the store, until the
//     guest answers with its document, with its RAM fetched whole first, and
//     again lazily (RAM mapped from a LazyImage over the store): the time
//     to the document, the share of RAM read by then, and the p99 of the
//     next 50 keys (page faults on the way) beside that of the 50 after.
// Last line: RESULT ckpt_pause_ms=P paused_ckpt_pause_ms=Q stream_ckpt_pause_ms=S
//            ram_copy_ms=C key_during_ckpt_ms=K key_at_rest_ms=R stored_vs_ram=V
//            second_ckpt_new_bytes_ratio=N restore_ms=T lazy_ready_ms=L
//            lazy_read_ratio=F first50_keys_p99_ms=K1 steady_keys_p99_ms=K2
//            backend=B live=yes|no ram_apart=yes|no
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <iostream>
#include <optional>
#include <thread>

#include "notepad_client.h"
#include "slingshot/disk/lazy_image.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/replica/checkpoint.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/base/coding.h"
#include "slingshot/vm/hypervisor.h"
#include "slingshot/base/log.h"
#include "slingshot/store/memory_image.h"

namespace po = boost::program_options;
using namespace slingshot;
using namespace slingshot::testing;
using namespace std::chrono_literals;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * double(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int Fail(const Status& s, const char* what) {
  std::fprintf(stderr, "vm_bench: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 3;
  double idle_seconds = 2;
  std::string backend = "auto", accel = "auto";
  po::options_description desc("vm_bench options");
  desc.add_options()("help", "this help")
      ("runs", po::value(&runs)->default_value(3), "checkpoints of each kind (>= 2)")
      ("idle-seconds", po::value(&idle_seconds)->default_value(2), "idle time before the second checkpoint")
      ("backend", po::value(&backend)->default_value("auto"), "auto, qemu or xen")
      ("accel", po::value(&accel)->default_value("auto"), "QEMU: auto, kvm or tcg");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vm_bench: %s\n", e.what());
    return 2;
  }
  if (runs < 2) {
    std::fprintf(stderr, "vm_bench: --runs must be at least 2 (the second checkpoint is measured)\n");
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  SetLogLevel(LogLevel::kWarning);
  std::string dir = (std::filesystem::temp_directory_path() / "slingshot-vm-bench-XXXXXX").string();
  if (!mkdtemp(dir.data())) return 1;
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};

  // The guest under test (live checkpoints) and the baseline (paused for
  // the save), each on a backend of its own.
  struct Guest {
    std::unique_ptr<Hypervisor> hv;
    VmSpec spec;
    Endpoint ctl, rfb;
  };
  auto start = [&](bool live, const std::string& name) -> Result<Guest> {
    HypervisorOptions ho;
    ho.backend = backend;
    ho.accel = accel;
    ho.live_checkpoints = live;
    Guest g;
    SLINGSHOT_ASSIGN_OR_RETURN(g.hv, OpenHypervisor(ho));
    g.spec = NotepadSpec(name, dir + "/" + name);
    SLINGSHOT_RETURN_IF_ERROR(g.hv->Boot(g.spec));
    SLINGSHOT_ASSIGN_OR_RETURN(g.ctl, g.hv->ServiceEndpoint(name, kControlPort));
    SLINGSHOT_ASSIGN_OR_RETURN(g.rfb, g.hv->ServiceEndpoint(name, kRfbPort));
    SLINGSHOT_RETURN_IF_ERROR(WaitForNotepad(g.ctl, 120s));
    SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<RfbSession> rfb, RfbSession::Connect(g.rfb));
    SLINGSHOT_RETURN_IF_ERROR(rfb->Type("benchmark document\n"));
    SLINGSHOT_RETURN_IF_ERROR(WaitForText(g.ctl, "benchmark document\n", 30s, rfb.get()));
    return g;
  };
  auto live_guest = start(true, "bench");
  if (!live_guest.ok()) return Fail(live_guest.status(), "the guest with live checkpoints");
  auto paused_guest = start(false, "baseline");
  if (!paused_guest.ok()) return Fail(paused_guest.status(), "the guest paused for its saves");
  Hypervisor& h = *live_guest->hv;
  const VmSpec& spec = live_guest->spec;

  auto store = ChunkStore::Open(dir + "/store", {});
  if (!store.ok()) return Fail(store.status(), "chunk store");

  // One key into the live guest, until its screen shows it; ms.
  auto rfb = RfbSession::Connect(live_guest->rfb);
  if (!rfb.ok()) return Fail(rfb.status(), "RFB");
  std::string typed = "benchmark document\n";
  auto key = [&]() -> Result<double> {
    auto t0 = std::chrono::steady_clock::now();
    typed += "k";
    SLINGSHOT_RETURN_IF_ERROR((*rfb)->Type("k"));
    SLINGSHOT_RETURN_IF_ERROR(WaitForText(live_guest->ctl, typed, 30s, rfb->get()));
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };

  std::vector<double> pause_apart, pause_stream, pause_paused, copy_ms, key_during, key_rest;
  uint64_t first_stored = 0, second_new = 0, second_bytes = 0, first_stream = 0;
  ChunkList first_list;
  DiskTable first_ram;
  bool live = false, apart = false;
  for (int i = 0; i < runs; ++i) {
    // The baseline first: the same guest, paused for its whole save.
    MemoryImageWriter wp(store->get(), ChunkerOptions{});
    auto p = paused_guest->hv->Checkpoint("baseline", [&](ByteView b) { return wp.Write(b); }, true);
    if (!p.ok()) return Fail(p.status(), "checkpoint of the baseline");
    if (auto l = wp.Finish(); !l.ok()) return Fail(l.status(), "storing the baseline's checkpoint");
    pause_paused.push_back(p->pause_ms);
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));

    auto rest = key();
    if (!rest.ok()) return Fail(rest.status(), "a key at rest");
    key_rest.push_back(*rest);
    // RAM apart, as the home checkpoints, with a key typed once the guest
    // runs again (while its RAM is hashed and stored).
    MemoryImageWriter w(store->get(), ChunkerOptions{});
    std::promise<void> running;
    std::optional<DiskImport> ram;
    CheckpointHooks hooks;
    hooks.running = [&] { running.set_value(); };
    hooks.ram = [&](const GuestRam& g) -> Status {
      SLINGSHOT_ASSIGN_OR_RETURN(ram, ImportGuestRam(g, store->get()));
      return Status::OK();
    };
    std::future<Result<double>> during = std::async(std::launch::async, [&]() -> Result<double> {
      if (running.get_future().wait_for(60s) != std::future_status::ready) {
        return Status::IOError("the guest did not run again during its checkpoint");
      }
      return key();
    });
    auto c = h.Checkpoint("bench", [&](ByteView b) { return w.Write(b); }, true, hooks);
    if (!c.ok()) return Fail(c.status(), "checkpoint to the store");
    auto list = w.Finish();
    if (!list.ok()) return Fail(list.status(), "storing the checkpoint");
    auto d = during.get();
    if (!d.ok()) return Fail(d.status(), "a key during the checkpoint");
    key_during.push_back(*d);
    pause_apart.push_back(c->pause_ms);
    copy_ms.push_back(c->ram_copy_ms);
    live = c->live;
    apart = c->ram_apart;
    const IngestStats none{};
    const IngestStats& rs = ram ? ram->stats : none;
    const uint64_t ram_bytes = ram ? ram->table.image_size : 0;
    if (i == 0) {
      first_stored = w.stats().stored_bytes + rs.stored_bytes;
      first_list = *list;
      first_stream = c->stream_bytes;
      if (ram) first_ram = ram->table;
    } else if (i == 1) {
      second_new = w.stats().new_bytes + rs.new_bytes;
      second_bytes = c->stream_bytes + ram_bytes;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds / 2));
    // The same guest, one stream saved while it runs.
    MemoryImageWriter ws(store->get(), ChunkerOptions{});
    auto bg = h.Checkpoint("bench", [&](ByteView b) { return ws.Write(b); }, true);
    if (!bg.ok()) return Fail(bg.status(), "a one-stream checkpoint");
    if (auto l = ws.Finish(); !l.ok()) return Fail(l.status(), "storing the one-stream checkpoint");
    pause_stream.push_back(bg->pause_ms);
    std::printf("checkpoint %d: %s pause %.0f ms (RAM copy %.0f ms) of %.0f ms; one stream %s: pause %.0f ms of "
                "%.0f ms; paused for the save: %.0f ms of %.0f ms; a key %.0f ms during it, %.0f ms at rest; "
                "stream %s, RAM new %s\n",
                i + 1, c->ram_apart ? "RAM apart" : "NOT APART", c->pause_ms, c->ram_copy_ms, c->total_ms,
                bg->live ? "live" : "NOT LIVE", bg->pause_ms, bg->total_ms, p->pause_ms, p->total_ms, *d, *rest,
                HumanBytes(c->stream_bytes).c_str(), HumanBytes(rs.new_bytes).c_str());
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds / 2));
  }
  rfb->reset();
  double new_ratio = second_bytes ? double(second_new) / double(second_bytes) : 0;

  // Restore the first checkpoint from the store: the document as it was
  // when that checkpoint paused the guest.
  if (Status s = h.Destroy("bench"); !s.ok()) return Fail(s, "destroy");
  auto t0 = std::chrono::steady_clock::now();
  RestoreRam given;
  given.size = first_ram.image_size;
  given.fill = [&](const RestoreRam::Put& put) { return ReadImage(first_ram, store->get(), put); };
  auto r = h.Restore(spec, [&](const ByteSink& sink) {
    return ReadMemoryImage(first_list, store->get(), sink);
  }, apart ? &given : nullptr);
  if (!r.ok()) return Fail(r.status(), "restore");
  auto ctl = h.ServiceEndpoint("bench", kControlPort);
  if (Status s = WaitForText(*ctl, "benchmark document\nk", 30s); !s.ok()) return Fail(s, "restored guest");
  double restore_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // The same checkpoint restored lazily: RAM mapped from a FUSE file over
  // the store, each page read as the guest first touches it; then 50 keys
  // (faults on the way) and 50 more (steady state), each until the screen
  // shows it.
  double lazy_ready_ms = 0, first50_p99 = 0, steady_p99 = 0;
  size_t lazy_read = 0, lazy_stored = 0;
  if (apart) {
    if (Status s = h.Destroy("bench"); !s.ok()) return Fail(s, "destroy");
    LazyImageOptions lo;
    lo.dir = dir + "/lazy";
    lo.table = first_ram;
    lo.chunks = store->get();
    auto lazy = LazyImage::Mount(lo);
    if (!lazy.ok()) return Fail(lazy.status(), "mounting the lazy RAM");
    RestoreRam lazy_ram;
    lazy_ram.size = first_ram.image_size;
    lazy_ram.lazy_file = (*lazy)->path();
    auto t1 = std::chrono::steady_clock::now();
    auto lr = h.Restore(spec, [&](const ByteSink& sink) { return ReadMemoryImage(first_list, store->get(), sink); },
                        &lazy_ram);
    if (!lr.ok()) return Fail(lr.status(), "lazy restore");
    auto lctl = h.ServiceEndpoint("bench", kControlPort);
    auto lrfb_ep = h.ServiceEndpoint("bench", kRfbPort);
    if (Status s = WaitForText(*lctl, "benchmark document\nk", 30s); !s.ok()) return Fail(s, "lazily restored guest");
    lazy_ready_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    auto lrfb = RfbSession::Connect(*lrfb_ep);
    if (!lrfb.ok()) return Fail(lrfb.status(), "RFB to the lazy guest");
    auto doc = DocumentText(*lctl);
    if (!doc.ok()) return Fail(doc.status(), "the lazy guest's document");
    std::string text = *doc;
    std::vector<double> first50, steady50;
    for (int i = 0; i < 100; ++i) {
      auto t = std::chrono::steady_clock::now();
      text += "z";
      if (Status s = (*lrfb)->Type("z"); !s.ok()) return Fail(s, "a key to the lazy guest");
      if (Status s = WaitForText(*lctl, text, 30s, lrfb->get()); !s.ok()) return Fail(s, "a key to the lazy guest");
      (i < 50 ? first50 : steady50).push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
    }
    first50_p99 = Percentile(first50, 0.99);
    steady_p99 = Percentile(steady50, 0.99);
    lazy_read = (*lazy)->FirstReads().size();
    for (const auto& id : first_ram.ids) lazy_stored += !id.IsNull();
    lrfb->reset();
    if (Status s = h.Destroy("bench"); !s.ok()) return Fail(s, "destroy");
    lazy->reset();
  }

  double ram = double(spec.memory_mib) * (1 << 20);
  double pause = Median(pause_apart), pause0 = Median(pause_paused), pause_bg = Median(pause_stream);
  std::printf("guest RAM %s, first checkpoint: stream %s, stored as %s in all\n", HumanBytes(uint64_t(ram)).c_str(),
              HumanBytes(first_stream).c_str(), HumanBytes(first_stored).c_str());
  std::printf("pause: %.0f ms %s (RAM copy %.0f ms) vs %.0f ms as one live stream vs %.0f ms paused for the save "
              "(x%.3f of the paused)\n",
              pause, apart ? "RAM apart" : "NOT APART", Median(copy_ms), pause_bg, pause0, pause / pause0);
  std::printf("a key: %.0f ms during a checkpoint vs %.0f ms at rest (medians)\n", Median(key_during),
              Median(key_rest));
  std::printf("idle second checkpoint: %s new of %s\n", HumanBytes(second_new).c_str(),
              HumanBytes(second_bytes).c_str());
  std::printf("restore: %.0f ms to a guest answering with its document (QEMU load %.0f ms)\n",
              restore_ms, r->total_ms);
  if (apart) {
    std::printf("lazy restore: %.0f ms to a guest answering with its document, having read %zu of %zu stored RAM "
                "chunks; keys after it: p99 %.0f ms for the first 50, %.0f ms for the next 50\n",
                lazy_ready_ms, lazy_read, lazy_stored, first50_p99, steady_p99);
  }
  std::printf("RESULT ckpt_pause_ms=%.0f paused_ckpt_pause_ms=%.0f stream_ckpt_pause_ms=%.0f ram_copy_ms=%.1f "
              "key_during_ckpt_ms=%.0f key_at_rest_ms=%.0f stored_vs_ram=%.3f second_ckpt_new_bytes_ratio=%.3f "
              "restore_ms=%.0f lazy_ready_ms=%.0f lazy_read_ratio=%.3f first50_keys_p99_ms=%.0f "
              "steady_keys_p99_ms=%.0f backend=%s live=%s ram_apart=%s\n",
              pause, pause0, pause_bg, Median(copy_ms), Median(key_during), Median(key_rest),
              double(first_stored) / ram, new_ratio, restore_ms, lazy_ready_ms,
              lazy_stored ? double(lazy_read) / double(lazy_stored) : 0.0, first50_p99, steady_p99,
              h.Name().c_str(), live ? "yes" : "no", apart ? "yes" : "no");
  return 0;
}
