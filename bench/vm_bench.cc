// vm_bench: what checkpoints of a real VM cost, on the backend this machine
// picks (QEMU TCG here). Boots the notepad guest twice, side by side: one on
// a backend with live checkpoints (QEMU: a background snapshot), one with
// them off (the guest paused for the whole save), types into both, then:
//   - checkpoints each (keep running) straight into a chunk store through
//     FastCDC, alternately, `--runs` times: how long each guest stood still,
//     and how long the whole checkpoint took;
//   - a key typed into the live guest while its checkpoint streams: how long
//     until its screen shows it (a guest write to memory not yet saved
//     waits for its page to be saved), beside the same key at rest;
//   - stored bytes after dedup and zstd over guest RAM;
//   - the second checkpoint (after an idle pause): its new bytes over its
//     stream's bytes;
//   - a restore of the first live checkpoint fed chunk by chunk from the
//     store, until the guest answers.
// Last line: RESULT ckpt_pause_ms=P paused_ckpt_pause_ms=Q key_during_ckpt_ms=K
//            key_at_rest_ms=R stored_vs_ram=S second_ckpt_new_bytes_ratio=N
//            restore_ms=T backend=B live=yes|no
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <iostream>
#include <thread>

#include "notepad_client.h"
#include "slingshot/store/chunk_store.h"
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

  std::vector<double> pause_live, pause_paused, key_during, key_rest;
  uint64_t stream_bytes = 0;
  IngestStats first{}, second{};
  uint64_t second_stream = 0;
  ChunkList first_list;
  bool live = false;
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
    // The live checkpoint, with a key typed once the guest runs again.
    MemoryImageWriter w(store->get(), ChunkerOptions{});
    std::promise<void> running;
    CheckpointHooks hooks;
    hooks.running = [&] { running.set_value(); };
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
    pause_live.push_back(c->pause_ms);
    live = c->live;
    if (i == 0) {
      first = w.stats();
      first_list = *list;
      stream_bytes = c->stream_bytes;
    } else if (i == 1) {
      second = w.stats();
      second_stream = c->stream_bytes;
    }
    std::printf("checkpoint %d: %s pause %.0f ms of %.0f ms (paused for the save: %.0f ms of %.0f ms); "
                "a key %.0f ms during it, %.0f ms at rest; stream %s, new %s, stored %s\n",
                i + 1, c->live ? "live" : "NOT LIVE", c->pause_ms, c->total_ms, p->pause_ms, p->total_ms, *d, *rest,
                HumanBytes(c->stream_bytes).c_str(), HumanBytes(w.stats().new_bytes).c_str(),
                HumanBytes(w.stats().stored_bytes).c_str());
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));
  }
  rfb->reset();
  double new_ratio = double(second.new_bytes) / double(second_stream);

  // Restore the first checkpoint from the store: the document as it was
  // when that checkpoint paused the guest.
  if (Status s = h.Destroy("bench"); !s.ok()) return Fail(s, "destroy");
  auto t0 = std::chrono::steady_clock::now();
  auto r = h.Restore(spec, [&](const ByteSink& sink) {
    return ReadMemoryImage(first_list, store->get(), sink);
  });
  if (!r.ok()) return Fail(r.status(), "restore");
  auto ctl = h.ServiceEndpoint("bench", kControlPort);
  if (Status s = WaitForText(*ctl, "benchmark document\nk", 30s); !s.ok()) return Fail(s, "restored guest");
  double restore_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  double ram = double(spec.memory_mib) * (1 << 20);
  double pause = Median(pause_live), pause0 = Median(pause_paused);
  std::printf("guest RAM %s, stream %s, first checkpoint stored as %s\n",
              HumanBytes(uint64_t(ram)).c_str(), HumanBytes(stream_bytes).c_str(),
              HumanBytes(first.stored_bytes).c_str());
  std::printf("pause: %.0f ms %s vs %.0f ms paused for the save (x%.3f)\n", pause, live ? "live" : "NOT LIVE",
              pause0, pause / pause0);
  std::printf("a key: %.0f ms during a live checkpoint vs %.0f ms at rest (medians)\n", Median(key_during),
              Median(key_rest));
  std::printf("idle second checkpoint: %s new of %s\n", HumanBytes(second.new_bytes).c_str(),
              HumanBytes(second_stream).c_str());
  std::printf("restore: %.0f ms to a guest answering with its document (QEMU load %.0f ms)\n",
              restore_ms, r->total_ms);
  std::printf("RESULT ckpt_pause_ms=%.0f paused_ckpt_pause_ms=%.0f key_during_ckpt_ms=%.0f key_at_rest_ms=%.0f "
              "stored_vs_ram=%.3f second_ckpt_new_bytes_ratio=%.3f restore_ms=%.0f backend=%s live=%s\n",
              pause, pause0, Median(key_during), Median(key_rest), double(first.stored_bytes) / ram, new_ratio,
              restore_ms, h.Name().c_str(), live ? "yes" : "no");
  return 0;
}
