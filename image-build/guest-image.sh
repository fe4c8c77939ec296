#!/bin/bash
# Builds the test guest: a Debian kernel (linux-image-amd64) and an initramfs
# holding busybox-static, the virtio and Xen front-end drivers, and
# slingshot-notepad with the shared libraries it links.
#
#   image-build/guest-image.sh OUT_DIR NOTEPAD_BINARY
#
# Writes OUT_DIR/vmlinuz, OUT_DIR/initrd.img, OUT_DIR/notepad.psf and
# OUT_DIR/versions.txt. Debian packages are fetched once with
# `apt-get download` into $SLINGSHOT_DEB_CACHE (default
# ~/.cache/slingshot/debs; nothing is installed on the host) and reused by
# every build directory. The initramfs is packed with sorted names and zero mtimes, so the
# same inputs give the same bytes.
#
# Guest kernel parameters read by /init:
#   slingshot.ip=ADDR/PREFIX   address for eth0 (default 10.0.2.15/24); the
#                              default route is via 10.0.2.2, as a real guest's
#   slingshot.alias=ADDR/PREFIX a second address on eth0
#   slingshot.probe=A.B.C.D:PORT,...  targets the notepad's F4 key tries
#   slingshot.disk=DEV|auto    block device the notepad keeps its document on
#                              (auto: /dev/vda under QEMU, /dev/xvda under Xen)
#   slingshot.autosave=1       write the document there at every edit
#   slingshot.root=DEV|auto    instead of the notepad: mount DEV (ext4; auto as
#                              above) and hand over to its /sbin/slingshot-desktop
#                              (the desktop guest, image-build/desktop-image.sh)
set -euo pipefail

out=${1:?usage: guest-image.sh OUT_DIR NOTEPAD_BINARY}
notepad=${2:?usage: guest-image.sh OUT_DIR NOTEPAD_BINARY}
debs=${SLINGSHOT_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slingshot/debs}
mkdir -p "$out" "$debs"
out=$(cd "$out" && pwd)
debs=$(cd "$debs" && pwd)

fetch() {  # fetch PACKAGE -> path of its .deb in the cache
  local pkg=$1 deb
  deb=$(ls "$debs"/"${pkg}"_*.deb 2>/dev/null | head -1 || true)
  if [[ -z $deb ]]; then
    (cd "$debs" && apt-get download "$pkg" >/dev/null 2>&1) || {
      echo "guest-image: cannot download $pkg; run 'apt-get update' (or scripts/install-deps.sh) and retry" >&2
      exit 1
    }
    deb=$(ls "$debs"/"${pkg}"_*.deb | head -1)
  fi
  echo "$deb"
}

kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
             awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z $kernel_pkg ]]; then
  kernel_pkg=$(ls "$debs"/linux-image-[0-9]*_*.deb 2>/dev/null | head -1 |
               xargs -r basename | cut -d_ -f1)
fi
[[ -n $kernel_pkg ]] || { echo "guest-image: cannot resolve linux-image-amd64; run 'apt-get update'" >&2; exit 1; }

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

dpkg-deb -x "$(fetch "$kernel_pkg")" "$work/kernel"
dpkg-deb -x "$(fetch busybox-static)" "$work/busybox"
dpkg-deb -x "$(fetch console-setup-linux)" "$work/fonts"

mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,lib/modules,usr/share}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
gunzip -c "$work/fonts/usr/share/consolefonts/Lat15-Fixed16.psf.gz" > "$root/usr/share/notepad.psf"

# Drivers, with their dependencies first (modules.dep lists them).
kver=$(ls "$work/kernel/lib/modules")
moddir=$work/kernel/lib/modules/$kver
# The package carries no modules.dep (its postinst makes it): make it here.
/sbin/depmod -b "$work/kernel" "$kver"
declare -A seen=()
order=()
add_module() {
  local rel=$1 dep
  [[ -n ${seen[$rel]:-} ]] && return
  seen[$rel]=1
  for dep in $(awk -v m="$rel:" '$1 == m { $1 = ""; print }' "$moddir/modules.dep"); do
    add_module "$dep"
  done
  order+=("$rel")
}
for name in virtio_pci virtio_net virtio_blk xen-netfront xen-blkfront crc32c_generic ext4; do
  rel=$(awk -F: -v n="/$name.ko" 'index($1, n) && substr($1, length($1) - length(n) + 1) == n { print $1; exit }' "$moddir/modules.dep")
  [[ -n $rel ]] || { echo "guest-image: kernel $kver has no module $name" >&2; exit 1; }
  add_module "$rel"
done
: > "$root/etc/modules.order"
for rel in "${order[@]}"; do
  cp "$moddir/$rel" "$root/lib/modules/"
  basename "$rel" >> "$root/etc/modules.order"
done

# The notepad and every shared library it needs, at the same paths.
install -m 0755 "$notepad" "$root/bin/slingshot-notepad"
for lib in $(ldd "$notepad" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
ln -s lib "$root/lib64" 2>/dev/null || true
if [[ ! -e $root/lib64/ld-linux-x86-64.so.2 ]]; then
  cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib/ld-linux-x86-64.so.2"
fi

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip=10.0.2.15/24
disk=
autosave=
newroot=
alias=
probe=
for arg in $(cat /proc/cmdline); do
  case $arg in
    slingshot.ip=*) ip=${arg#slingshot.ip=} ;;
    slingshot.disk=*) disk=${arg#slingshot.disk=} ;;
    slingshot.autosave=1) autosave=--autosave ;;
    slingshot.alias=*) alias=${arg#slingshot.alias=} ;;
    slingshot.probe=*) probe="--probe ${arg#slingshot.probe=}" ;;
    slingshot.root=*) disk=${arg#slingshot.root=}; newroot=1 ;;
  esac
done
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m 2>/dev/null; done
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
ip link set eth0 up && ip addr add "$ip" dev eth0
[ -n "$alias" ] && ip addr add "$alias" dev eth0
ip route add default via 10.0.2.2 2>/dev/null
if [ -n "$disk" ]; then
  n=0
  while [ $n -lt 50 ]; do
    if [ "$disk" = auto ]; then
      for d in /dev/vda /dev/xvda; do [ -b $d ] && disk=$d; done
    fi
    [ -b "$disk" ] && break
    sleep 0.1; n=$((n + 1))
  done
  if [ -n "$newroot" ]; then
    mkdir -p /newroot
    mount -t ext4 "$disk" /newroot || { echo "init: cannot mount $disk"; exec sh; }
    umount /proc /sys
    mount --move /dev /newroot/dev
    exec switch_root /newroot /sbin/slingshot-desktop
  fi
  exec /bin/slingshot-notepad --disk "$disk" $autosave $probe
fi
exec /bin/slingshot-notepad $probe
INIT
chmod 0755 "$root/init"

find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
   cpio --quiet -o -H newc --reproducible -R 0:0) | gzip -n -1 > "$work/initrd.img"

cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/usr/share/notepad.psf" "$work/notepad.psf"
{
  echo "kernel $kernel_pkg $kver"
  for d in "$debs"/*.deb; do basename "$d"; done
} > "$work/versions.txt"
for f in vmlinuz initrd.img notepad.psf versions.txt; do mv -f "$work/$f" "$out/$f"; done
echo "guest-image: $out/vmlinuz ($kver), $out/initrd.img ($(du -k "$out/initrd.img" | cut -f1) KiB)"
