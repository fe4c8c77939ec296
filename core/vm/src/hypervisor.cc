// Backend choice and the probes behind it.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "child.h"
#include "slingshot/base/file_util.h"
#include "slingshot/vm/hypervisor.h"
#include "slingshot/base/log.h"

namespace slingshot {

Result<HostMemory> ReadMemInfo(const std::string& path) {
  std::ifstream in(path);  // a /proc file: its size says 0, so read it as a stream
  if (!in) return Status::IOError("open " + path + ": " + std::strerror(errno));
  std::string line;
  bool total = false, available = false;
  HostMemory m;
  for (int n = 0; n < 1024 && std::getline(in, line); ++n) {  // MemTotal and MemAvailable come first
    std::istringstream fields(line);
    std::string key;
    uint64_t kib = 0;
    if (!(fields >> key >> kib)) continue;
    if (key == "MemTotal:") m.total_mib = kib / 1024, total = true;
    if (key == "MemAvailable:") m.free_mib = kib / 1024, available = true;
  }
  if (!total || !available) return Status::Corruption(path + " has no MemTotal or no MemAvailable line");
  return m;
}

const char* VmStateName(VmState s) {
  switch (s) {
    case VmState::kRunning: return "running";
    case VmState::kPaused: return "paused";
    case VmState::kDead: return "dead";
  }
  return "?";
}

bool XenIsRunning(std::string* why) {
  std::ifstream caps("/proc/xen/capabilities");
  if (caps) {
    std::string line;
    std::getline(caps, line);
    if (line.find("control_d") != std::string::npos) {
      *why = "/proc/xen/capabilities says this is a Xen dom0";
      return true;
    }
    *why = "running under Xen, but as a guest, not dom0";
    return false;
  }
  std::ifstream type("/sys/hypervisor/type");
  std::string t;
  if (type && std::getline(type, t) && t == "xen") {
    *why = "running under Xen, but /proc/xen is not mounted (mount -t xenfs xenfs /proc/xen)";
    return false;
  }
  *why = "no /proc/xen: not running under Xen";
  return false;
}

Status ProbeKvm(const std::string& qemu_binary, int timeout_ms) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) {
    return Status::Unsupported("/dev/kvm is missing or not accessible");
  }
  // A boot sector that counts down 50 million times, then writes 1 to the
  // isa-debug-exit port: QEMU exits with status (1 << 1) | 1 = 3. A working
  // KVM runs the loop in tens of milliseconds (TCG in ~0.4 s); a KVM that
  // cannot really run guests (e.g. a paravirtual kvm_pvm, which boots the
  // BIOS but crawls ~1000x slower) misses the deadline.
  uint8_t sector[512] = {0x66, 0xB9, 0x80, 0xF0, 0xFA, 0x02,  // mov ecx, 50000000
                         0x66, 0x49,                          // dec ecx
                         0x75, 0xFC,                          // jnz .-4
                         0xB0, 0x01,                          // mov al, 1
                         0xE6, 0xF4,                          // out 0xf4, al
                         0xF4,                                // hlt
                         0xEB, 0xFD};                         // jmp hlt
  sector[510] = 0x55;
  sector[511] = 0xAA;
  char dir[] = "/tmp/slingshot-kvm-probe.XXXXXX";
  if (!mkdtemp(dir)) return Status::FromErrno("mkdtemp", errno);
  std::string img = std::string(dir) + "/boot.img";
  Status s = WriteFileAtomic(img, ByteView(sector, sizeof sector));
  Status result;
  if (!s.ok()) {
    result = s;
  } else {
    SpawnOptions o;
    o.argv = {qemu_binary, "-accel", "kvm", "-machine", "pc", "-nodefaults", "-no-user-config",
              "-display", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
              "-drive", "file=" + img + ",format=raw,if=ide", "-boot", "c"};
    o.output_path = std::string(dir) + "/qemu.log";
    auto child = Child::Spawn(o);
    if (!child.ok()) {
      result = child.status();
    } else {
      std::string how;
      if (!(*child)->Wait(timeout_ms, &how)) {
        result = Status::Unsupported("a KVM guest did not finish a 50-million-step loop in " +
                                     std::to_string(timeout_ms) + " ms");
      } else if ((*child)->exit_code() != 3) {
        std::ifstream log(o.output_path);
        std::string first;
        std::getline(log, first);
        result = Status::Unsupported("qemu -accel kvm " + how + (first.empty() ? "" : ": " + first));
      }
    }
  }
  unlink(img.c_str());
  unlink((std::string(dir) + "/qemu.log").c_str());
  rmdir(dir);
  return result;
}

Result<std::unique_ptr<Hypervisor>> OpenHypervisor(const HypervisorOptions& options) {
  if (options.backend == "qemu") {
    LogInfo("hypervisor: QEMU (forced by configuration)");
    return OpenQemuHypervisor(options);
  }
  if (options.backend == "xen") {
    LogInfo("hypervisor: Xen (forced by configuration)");
    return OpenXenHypervisor(options);
  }
  if (options.backend != "auto") {
    return Status::InvalidArgument("hypervisor backend must be auto, qemu or xen, not '" +
                                   options.backend + "'");
  }
  std::string why;
  if (XenIsRunning(&why)) {
    LogInfo("hypervisor: Xen (" + why + ")");
    return OpenXenHypervisor(options);
  }
  LogInfo("hypervisor: QEMU (" + why + ")");
  return OpenQemuHypervisor(options);
}

}  // namespace slingshot
