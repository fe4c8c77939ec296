#!/usr/bin/env bash
# Installs what Slingshot needs to build, test and run the demo on Debian 12,
# plus any packages named as arguments (e.g. clang for `make analyze`).
# Skips packages already installed; uses sudo when not root.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config
  libssl-dev libdb5.3++-dev libzstd-dev libarchive-dev libboost-program-options-dev
  nlohmann-json3-dev libvncserver-dev libxen-dev libavahi-client-dev libfuse3-dev fuse3
  # virtual machines: QEMU (TCG here), qemu-nbd for disks in tests; the test
  # guest image is packed with cpio from packages fetched by apt-get download
  qemu-system-x86 qemu-utils cpio gzip kmod
  # NBD interop tests: libnbd's nbdinfo and nbdcopy
  libnbd-bin
  # tests (DNS-SD: an avahi-daemon and a D-Bus per test namespace)
  libgtest-dev avahi-daemon dbus-daemon
  # demo: listing and checking bundles with stock tools
  zstd tar coreutils
  "$@"
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-deps: these packages are missing and I am not root (and there is no sudo):" >&2
    echo "  ${missing[*]}" >&2
    echo "install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
