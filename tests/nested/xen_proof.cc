// xen_proof: runs inside a Xen dom0 (see xen_nested.sh) and puts the Xen
// backend through what a replica's life needs: boot the notepad guest as a
// PV domain, type into it over RFB, checkpoint it while it keeps running,
// type more, destroy it, restore the checkpoint, check the document is the
// checkpoint-time text, and type into the restored domain.
// The disk is an NBD export (qemu-nbd on dom0's loopback) that the backend
// attaches with the dom0 kernel's NBD client; the document saved to it must
// reach the image file. A child of our own, started before libxl runs its
// hotplug scripts, must still be ours to reap (libxl reaps selectively). A
// domain killed behind the backend's back (xl destroy) must be reported
// dead through the @releaseDomain watch.
// Last line: XEN-PROOF RESULT boot_s=.. ckpt_pause_ms=.. stream_mib=..
//            restore_ms=.. backend=xen
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "notepad_client.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/file_util.h"
#include "slingshot/base/log.h"

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

  std::atomic<int> deaths{0};
  h.OnDeath([&](const std::string& name, const std::string& why) {
    std::printf("XEN-PROOF death reported: %s: %s\n", name.c_str(), why.c_str());
    deaths++;
  });

  // The replica's disk: a 16 MiB image served by qemu-nbd over TCP.
  const std::string image = "/tmp/notepad-disk.img";
  {
    std::ofstream f(image);
  }
  if (truncate(image.c_str(), 16 << 20) != 0) return Fail(Status::FromErrno("truncate", errno), "disk");
  pid_t nbd = fork();
  if (nbd == 0) {
    execlp("qemu-nbd", "qemu-nbd", "--persistent", "--shared=4", "-f", "raw", "-b", "127.0.0.1",
           "-p", "10809", "-x", "notepad", image.c_str(), nullptr);
    _exit(127);
  }
  std::this_thread::sleep_for(2s);

  VmSpec spec = NotepadSpec("notepad", "/run/slingshot/notepad");
  spec.cmdline += " slingshot.disk=auto";
  spec.disk = NbdDisk{"", "127.0.0.1", 10809, "notepad", false};

  // A child of ours that libxl must leave alone.
  pid_t mine = fork();
  if (mine == 0) {
    sleep(3);
    _exit(7);
  }
  auto t = Clock::now();
  if (Status s = h.Boot(spec); !s.ok()) return Fail(s, "boot");
  int wst = 0;
  if (waitpid(mine, &wst, 0) != mine || !WIFEXITED(wst) || WEXITSTATUS(wst) != 7) {
    return Fail(Status::IOError("our own child was reaped by someone else"), "SIGCHLD");
  }
  std::printf("XEN-PROOF our own child reaped by us (libxl reaps selectively)\n");
  auto ctl = h.ServiceEndpoint("notepad", kControlPort);
  if (Status s = WaitForNotepad(*ctl, 300s); !s.ok()) return Fail(s, "waiting for the guest");
  double boot_s = Seconds(t);
  std::printf("XEN-PROOF booted in %.1f s\n", boot_s);
  if (Status s = TypeAndCheck(h, "notepad", "typed in Xen", "typed in Xen"); !s.ok()) {
    return Fail(s, "typing");
  }

  auto saved = Control(*ctl, "save");
  if (!saved.ok() || *saved != "saved 12\n") {
    return Fail(saved.ok() ? Status::IOError("save answered " + *saved) : saved.status(), "save");
  }
  auto raw = ReadFileBounded(image, 16 << 20);
  if (!raw.ok() || std::string(raw->begin(), raw->begin() + 4) != "NPAD" ||
      std::string(raw->begin() + 512, raw->begin() + 524) != "typed in Xen") {
    return Fail(Status::IOError("the saved document is not in the NBD-served image"), "disk");
  }
  std::printf("XEN-PROOF document saved through /dev/nbd and qemu-nbd into the image\n");

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
  if (deaths != 0) return Fail(Status::IOError("a death was reported for a destroy"), "death");

  // Killed behind the backend's back: reported dead.
  if (system("/usr/lib/xen-4.17/bin/xl destroy notepad") != 0) {
    return Fail(Status::IOError("xl destroy failed"), "xl destroy");
  }
  for (int i = 0; i < 300 && deaths == 0; ++i) std::this_thread::sleep_for(100ms);
  auto info = h.Info("notepad");
  if (deaths != 1 || !info.ok() || info->state != VmState::kDead) {
    return Fail(Status::IOError("xl destroy was not reported as a death"), "death");
  }
  (void)h.Destroy("notepad");
  kill(nbd, SIGTERM);
  waitpid(nbd, nullptr, 0);
  std::printf("XEN-PROOF RESULT boot_s=%.1f ckpt_pause_ms=%.0f stream_mib=%.1f restore_ms=%.0f "
              "backend=xen\n",
              boot_s, c->pause_ms, double(c->stream_bytes) / (1 << 20), r->total_ms);
  return 0;
}
