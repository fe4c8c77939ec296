// Used when the build found no libxl (Debian: libxen-dev).
#include "slingshot/vm/hypervisor.h"

namespace slingshot {

Result<std::unique_ptr<Hypervisor>> OpenXenHypervisor(const HypervisorOptions&) {
  return Status::Unsupported(
      "this build of Slingshot has no Xen backend (libxl was not found at build time; "
      "install libxen-dev and rebuild)");
}

}  // namespace slingshot
