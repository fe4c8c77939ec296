// vm_bench: what checkpoints of a real VM cost, on the backend this machine
// picks (QEMU TCG here). Boots the notepad guest, types into it, then:
//   - checkpoints it (keep running) straight into a chunk store through
//     FastCDC, `--runs` times: guest pause, and the same with a sink that
//     discards the stream, side by side (the store's share of the pause);
//   - stored bytes after dedup and zstd over guest RAM;
//   - the second checkpoint (after an idle pause): its new bytes over its
//     stream's bytes;
//   - a restore fed chunk by chunk from the store, until the guest answers.
// Last line: RESULT ckpt_pause_ms=P stored_vs_ram=S
//            second_ckpt_new_bytes_ratio=N restore_ms=T backend=B
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
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

  HypervisorOptions ho;
  ho.backend = backend;
  ho.accel = accel;
  auto hv = OpenHypervisor(ho);
  if (!hv.ok()) return Fail(hv.status(), "opening the hypervisor");
  Hypervisor& h = **hv;
  VmSpec spec = NotepadSpec("bench", dir + "/bench");
  if (Status s = h.Boot(spec); !s.ok()) return Fail(s, "boot");
  auto ctl = h.ServiceEndpoint("bench", kControlPort);
  auto rfb_ep = h.ServiceEndpoint("bench", kRfbPort);
  if (Status s = WaitForNotepad(*ctl, 120s); !s.ok()) return Fail(s, "waiting for the guest");
  {
    auto rfb = RfbSession::Connect(*rfb_ep);
    if (!rfb.ok()) return Fail(rfb.status(), "RFB");
    (void)(*rfb)->Type("benchmark document\n");
    if (Status s = WaitForText(*ctl, "benchmark document\n", 30s, rfb->get()); !s.ok()) {
      return Fail(s, "typing");
    }
  }

  auto store = ChunkStore::Open(dir + "/store", {});
  if (!store.ok()) return Fail(store.status(), "chunk store");

  std::vector<double> pause_store, pause_null;
  uint64_t stream_bytes = 0;
  IngestStats first{}, second{};
  uint64_t second_stream = 0;
  ChunkList first_list;
  for (int i = 0; i < runs; ++i) {
    // Baseline: the same checkpoint into a sink that drops the bytes.
    auto n = h.Checkpoint("bench", [](ByteView) { return Status::OK(); }, true);
    if (!n.ok()) return Fail(n.status(), "checkpoint to a null sink");
    pause_null.push_back(n->pause_ms);
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));

    MemoryImageWriter w(store->get(), ChunkerOptions{});
    auto c = h.Checkpoint("bench", [&](ByteView b) { return w.Write(b); }, true);
    if (!c.ok()) return Fail(c.status(), "checkpoint to the store");
    auto list = w.Finish();
    if (!list.ok()) return Fail(list.status(), "storing the checkpoint");
    pause_store.push_back(c->pause_ms);
    if (i == 0) {
      first = w.stats();
      first_list = *list;
      stream_bytes = c->stream_bytes;
    } else if (i == 1) {
      second = w.stats();
      second_stream = c->stream_bytes;
    }
    std::printf("checkpoint %d: pause %.0f ms (null sink %.0f ms), stream %s, new %s, stored %s\n",
                i + 1, c->pause_ms, n->pause_ms, HumanBytes(c->stream_bytes).c_str(),
                HumanBytes(w.stats().new_bytes).c_str(), HumanBytes(w.stats().stored_bytes).c_str());
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));
  }
  double new_ratio = double(second.new_bytes) / double(second_stream);

  // Restore the first checkpoint from the store.
  if (Status s = h.Destroy("bench"); !s.ok()) return Fail(s, "destroy");
  auto t0 = std::chrono::steady_clock::now();
  auto r = h.Restore(spec, [&](const ByteSink& sink) {
    return ReadMemoryImage(first_list, store->get(), sink);
  });
  if (!r.ok()) return Fail(r.status(), "restore");
  ctl = h.ServiceEndpoint("bench", kControlPort);
  if (Status s = WaitForText(*ctl, "benchmark document\n", 30s); !s.ok()) return Fail(s, "restored guest");
  double restore_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  double ram = double(spec.memory_mib) * (1 << 20);
  double pause = Median(pause_store), pause0 = Median(pause_null);
  std::printf("guest RAM %s, stream %s, first checkpoint stored as %s\n",
              HumanBytes(uint64_t(ram)).c_str(), HumanBytes(stream_bytes).c_str(),
              HumanBytes(first.stored_bytes).c_str());
  std::printf("pause: %.0f ms into the store vs %.0f ms into a null sink (x%.2f)\n", pause, pause0,
              pause / pause0);
  std::printf("idle second checkpoint: %s new of %s\n", HumanBytes(second.new_bytes).c_str(),
              HumanBytes(second_stream).c_str());
  std::printf("restore: %.0f ms to a guest answering with its document (QEMU load %.0f ms)\n",
              restore_ms, r->total_ms);
  std::printf("RESULT ckpt_pause_ms=%.0f stored_vs_ram=%.3f second_ckpt_new_bytes_ratio=%.3f "
              "restore_ms=%.0f backend=%s\n",
              pause, double(first.stored_bytes) / ram, new_ratio, restore_ms, h.Name().c_str());
  return 0;
}
