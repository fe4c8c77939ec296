#!/bin/bash
# Builds the surrogate appliance: a hybrid ISO (BIOS and UEFI) that boots
# Xen 4.17 by multiboot2 with a Debian bookworm dom0 whose root is a
# read-only squashfs under a tmpfs (live-boot), running slingshot-agent.
# appliance/ says what the OS is; this script only assembles it.
#
#   image-build/appliance.sh OUT_DIR DEBS_DIR
#
# DEBS_DIR holds slingshot-agent_*.deb (image-build/debs.sh). Writes
# OUT_DIR/slingshot-appliance.iso and OUT_DIR/packages.txt (every package
# and version in the image). Needs root (debootstrap, chroot).
#
# Reproducible: every timestamp comes from SOURCE_DATE_EPOCH (default: the
# date of debian/changelog's entry); files that hold build-time state
# (machine-id, apt lists, logs, caches) are removed or normalized. The same
# commit and the same Debian package versions give the same ISO bytes
# (image-build/reproducible.sh checks; README says what it found).
set -euo pipefail

out=${1:?usage: appliance.sh OUT_DIR DEBS_DIR}
debs=${2:?usage: appliance.sh OUT_DIR DEBS_DIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
debs=$(cd "$debs" && pwd)
export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C.UTF-8 TZ=UTC
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(dpkg-parsechangelog -l "$here/debian/changelog" -S Timestamp)}

[[ $(id -u) == 0 ]] || { echo "appliance: needs root (debootstrap and chroot)" >&2; exit 1; }
for t in debootstrap mksquashfs grub-mkrescue xorriso mformat faketime; do
  command -v "$t" >/dev/null || { echo "appliance: $t is missing; run scripts/install-deps.sh appliance (or make appliance)" >&2; exit 1; }
done
[[ -d /usr/lib/grub/i386-pc && -d /usr/lib/grub/x86_64-efi ]] || {
  echo "appliance: GRUB's BIOS and UEFI images are missing (grub-pc-bin, grub-efi-amd64-bin)" >&2; exit 1; }
agent_deb=$(ls "$debs"/slingshot-agent_*_amd64.deb 2>/dev/null | head -1)
[[ -n $agent_deb ]] || { echo "appliance: no slingshot-agent .deb in $debs; run make debs first" >&2; exit 1; }

work=$out/work
root=$work/root
iso=$work/iso
cache=${SLINGSHOT_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slingshot/debs}/appliance
mkdir -p "$cache"
mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
step() { echo "appliance: $* ($(( $(date +%s) - t0 )) s)"; }
t0=$(date +%s)

rm -rf "$work"
mkdir -p "$work" "$iso/boot/grub" "$iso/live"
packages=$(grep -v '^\s*#' "$top/appliance/packages" | xargs | tr ' ' ,)
step "debootstrap bookworm with $packages"
debootstrap --variant=minbase --cache-dir="$cache" --include="$packages" \
  bookworm "$root" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 || {
  echo "appliance: debootstrap failed; its log ends:" >&2; tail -20 "$work/debootstrap.log" >&2; exit 1; }

mounted=("$root/proc" "$root/sys" "$root/dev")  # (cleanup skips what is not mounted)
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"; }
# No service starts inside the build.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

step "installing $(basename "$agent_deb")"
cp "$agent_deb" "$root/tmp/slingshot-agent.deb"
rm -f "$root/etc/apt/sources.list"
cp "$here/debian.sources" "$root/etc/apt/sources.list.d/debian.sources"
in_root apt-get update -qq > "$work/apt.log" 2>&1
in_root apt-get dist-upgrade -y -qq >> "$work/apt.log" 2>&1
in_root apt-get install -y -qq --no-install-recommends /tmp/slingshot-agent.deb >> "$work/apt.log" 2>&1 || {
  echo "appliance: installing the agent failed; see $work/apt.log" >&2; tail -20 "$work/apt.log" >&2; exit 1; }

step "configuring"
cp -a "$top/appliance/rootfs/." "$root/"
chown -R root:root "$root/etc/systemd" "$root/etc/slingshot" "$root/usr/lib/slingshot" "$root/etc/modules-load.d"
echo slingshot > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tslingshot\n' > "$root/etc/hosts"
in_root systemctl enable systemd-networkd.service slingshot-setup.service slingshot-agent.service \
  slingshot-banner.service avahi-daemon.service > /dev/null 2>&1
in_root systemctl disable xendomains.service > /dev/null 2>&1 || true  # nothing of a replica outlives a boot
in_root passwd -l root > /dev/null
in_root update-initramfs -u -k all > "$work/initramfs.log" 2>&1 || {
  echo "appliance: update-initramfs failed; see $work/initramfs.log" >&2; exit 1; }

kver=$(ls "$root/lib/modules" | head -1)
cp "$root/boot/vmlinuz-$kver" "$iso/boot/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$iso/boot/initrd.img"
cp "$root/boot/xen-4.17-amd64.gz" "$iso/boot/xen.gz"
cp "$top/appliance/grub.cfg" "$iso/boot/grub/grub.cfg"
in_root dpkg-query -W -f '${Package} ${Version}\n' | LC_ALL=C sort > "$out/packages.txt"
cp "$out/packages.txt" "$iso/packages.txt"

step "removing build-time state"
cleanup
mounted=()
rm -f "$root/usr/sbin/policy-rc.d" "$root/tmp/slingshot-agent.deb"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/var/lib/dpkg/*-old "$root"/var/cache/ldconfig/aux-cache \
  "$root"/var/lib/systemd/catalog/database "$root"/boot/* "$root"/usr/share/man \
  "$root"/usr/share/locale "$root"/usr/share/info "$root"/var/lib/dbus/machine-id
find "$root/usr/share/doc" -type f ! -name copyright -delete
# Logs of the build go; the directories stay (xenstored will not start
# without /var/log/xen).
find "$root/var/log" -type f -delete
# An empty machine-id: systemd makes a new one at every boot, in RAM.
: > "$root/etc/machine-id"
# Password ages count from SOURCE_DATE_EPOCH's day, not the build's.
day=$((SOURCE_DATE_EPOCH / 86400))
for f in shadow shadow-; do
  [[ -f $root/etc/$f ]] && awk -F: -v OFS=: -v d="$day" '$3 != "" {$3 = d} {print}' "$root/etc/$f" > "$work/$f" &&
    cat "$work/$f" > "$root/etc/$f"
done
# Python byte code (none should be in dom0) would carry build times.
find "$root" -name '__pycache__' -type d -prune -exec rm -rf {} +

step "squashfs"
# SOURCE_DATE_EPOCH (exported above) sets its creation time and every
# file's time.
mksquashfs "$root" "$iso/live/filesystem.squashfs" -comp zstd -Xcompression-level 15 -b 1M \
  -noappend -no-progress -no-xattrs \
  > "$work/squashfs.log"

step "ISO"
find "$iso" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# grub-mkrescue's EFI image (mformat, mcopy: FAT dates and serial) and
# xorriso's directory records take the time of day, whatever
# SOURCE_DATE_EPOCH says; under a clock frozen there (libfaketime) two
# builds give the same bytes.
frozen=$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')
faketime -f "$frozen" grub-mkrescue -o "$out/slingshot-appliance.iso" "$iso" -- -volid SLINGSHOT \
  > "$work/grub-mkrescue.log" 2>&1 || {
  echo "appliance: grub-mkrescue failed:" >&2; tail -20 "$work/grub-mkrescue.log" >&2; exit 1; }
step "done: $out/slingshot-appliance.iso, $(du -m "$out/slingshot-appliance.iso" | cut -f1) MiB (squashfs $(du -m "$iso/live/filesystem.squashfs" | cut -f1) MiB, initrd $(du -m "$iso/boot/initrd.img" | cut -f1) MiB)"
sha256sum "$out/slingshot-appliance.iso" | cut -d' ' -f1 > "$out/slingshot-appliance.iso.sha256"
