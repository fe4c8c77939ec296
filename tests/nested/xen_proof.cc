// xen_proof: runs inside a Xen dom0 (see xen_nested.sh) and puts the Xen
// backend through what a replica's life needs: boot the notepad guest as a
// PV domain, type into it over RFB, checkpoint it while it keeps running,
// type more, destroy it, restore the checkpoint, check the document is the
// checkpoint-time text, and type into the restored domain.
// Last line: XEN-PROOF RESULT boot_s=.. ckpt_pause_ms=.. stream_mib=..
//            restore_ms=.. backend=xen
#include <chrono>
#include <cstdio>

#include "notepad_client.h"
#include "slingshot/coding.h"
#include "slingshot/log.h"

using namespace slingshot;
using namespace slingshot::testing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

int Fail(const Status& s, const char* step) {
  std::printf("XEN-PROOF FAILED at %s: %s\n", step, s.ToString().c_str());
  return 1;
}

double Seconds(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

Status TypeAndCheck(Hypervisor& h, const std::string& vm, const std::string& keys,
                    const std::string& want) {
  SLINGSHOT_ASSIGN_OR_RETURN(Endpoint rfb_ep, h.ServiceEndpoint(vm, kRfbPort));
  SLINGSHOT_ASSIGN_OR_RETURN(Endpoint ctl, h.ServiceEndpoint(vm, kControlPort));
  SLINGSHOT_ASSIGN_OR_RETURN(std::unique_ptr<RfbSession> rfb, RfbSession::Connect(rfb_ep));
  SLINGSHOT_RETURN_IF_ERROR(rfb->Type(keys));
  return WaitForText(ctl, want, 120s, rfb.get());
}

}  // namespace

int main() {
  SetLogLevel(LogLevel::kInfo);
  auto hv = OpenHypervisor(HypervisorOptions{});
  if (!hv.ok()) return Fail(hv.status(), "open");
  Hypervisor& h = **hv;
  if (h.Name() != "xen") return Fail(Status::Unsupported("picked " + h.Name()), "probe");
  std::printf("XEN-PROOF backend %s\n", h.Name().c_str());

  VmSpec spec = NotepadSpec("notepad", "/run/slingshot/notepad");
  auto t = Clock::now();
  if (Status s = h.Boot(spec); !s.ok()) return Fail(s, "boot");
  auto ctl = h.ServiceEndpoint("notepad", kControlPort);
  if (Status s = WaitForNotepad(*ctl, 300s); !s.ok()) return Fail(s, "waiting for the guest");
  double boot_s = Seconds(t);
  std::printf("XEN-PROOF booted in %.1f s\n", boot_s);
  if (Status s = TypeAndCheck(h, "notepad", "typed in Xen", "typed in Xen"); !s.ok()) {
    return Fail(s, "typing");
  }

  Bytes ckpt;
  auto c = h.Checkpoint("notepad", [&](ByteView b) {
    ckpt.insert(ckpt.end(), b.begin(), b.end());
    return Status::OK();
  }, /*keep_running=*/true);
  if (!c.ok()) return Fail(c.status(), "checkpoint");
  std::printf("XEN-PROOF checkpoint: %s, guest paused %.0f ms\n",
              HumanBytes(c->stream_bytes).c_str(), c->pause_ms);
  if (Status s = TypeAndCheck(h, "notepad", ", still running", "typed in Xen, still running");
      !s.ok()) {
    return Fail(s, "typing after the checkpoint");
  }
  if (Status s = h.Destroy("notepad"); !s.ok()) return Fail(s, "destroy");

  auto r = h.Restore(spec, [&](const ByteSink& sink) {
    for (size_t off = 0; off < ckpt.size(); off += 1 << 20) {
      SLINGSHOT_RETURN_IF_ERROR(
          sink(ByteView(ckpt).subspan(off, std::min<size_t>(1 << 20, ckpt.size() - off))));
    }
    return Status::OK();
  });
  if (!r.ok()) return Fail(r.status(), "restore");
  ctl = h.ServiceEndpoint("notepad", kControlPort);
  if (Status s = WaitForText(*ctl, "typed in Xen", 120s); !s.ok()) return Fail(s, "restored document");
  if (Status s = TypeAndCheck(h, "notepad", "!", "typed in Xen!"); !s.ok()) {
    return Fail(s, "typing into the restored domain");
  }
  // A damaged stream is refused and leaves no domain.
  Bytes bad = ckpt;
  bad[bad.size() / 2] ^= 1;
  VmSpec other = spec;
  other.name = "damaged";
  auto rb = h.Restore(other, [&](const ByteSink& sink) { return sink(bad); });
  if (rb.ok() || rb.status().code() != Status::Code::kCorruption) {
    return Fail(rb.ok() ? Status::IOError("damaged stream was accepted") : rb.status(),
                "damaged restore");
  }
  std::printf("XEN-PROOF damaged stream refused: %s\n", rb.status().ToString().c_str());
  if (h.List().size() != 1) return Fail(Status::IOError("unexpected domains left"), "list");
  (void)h.Destroy("notepad");
  std::printf("XEN-PROOF RESULT boot_s=%.1f ckpt_pause_ms=%.0f stream_mib=%.1f restore_ms=%.0f "
              "backend=xen\n",
              boot_s, c->pause_ms, double(c->stream_bytes) / (1 << 20), r->total_ms);
  return 0;
}
