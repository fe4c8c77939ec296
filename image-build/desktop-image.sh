#!/bin/bash
# Builds the desktop test guest's disk: a Debian bookworm root file system
# with an X server (Xvfb), a VNC server (x11vnc) and a real text editor from
# Debian (GNU nano, in an xterm). It boots with the test guest's kernel and
# initramfs (image-build/guest-image.sh): `slingshot.root=auto` there mounts
# this disk and hands over to its /sbin/slingshot-desktop.
#
#   image-build/desktop-image.sh OUT_DIR
#
# Writes OUT_DIR/desktop.img (a sparse 1 GiB ext4 image) and
# OUT_DIR/packages.txt. Needs root (debootstrap). Packages are cached in
# $SLINGSHOT_DEB_CACHE/desktop (default ~/.cache/slingshot/debs/desktop);
# file times, the file system's UUID and hash seed are fixed, so the same
# packages give the same image.
#
# On screen (640x400): an xterm that says the document is closed; Enter
# opens /root/document.txt in nano; Ctrl-O Enter saves, Ctrl-X closes.
set -euo pipefail
out=${1:?usage: desktop-image.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C.UTF-8 TZ=UTC
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(dpkg-parsechangelog -l "$here/debian/changelog" -S Timestamp)}
[[ $(id -u) == 0 ]] || { echo "desktop-image: needs root (debootstrap)" >&2; exit 1; }
for t in debootstrap mkfs.ext4; do
  command -v "$t" >/dev/null || { echo "desktop-image: $t is missing (apt-get install debootstrap e2fsprogs)" >&2; exit 1; }
done
cache=${SLINGSHOT_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slingshot/debs}/desktop
mkdir -p "$cache"
work=$out/work
root=$work/root
rm -rf "$work"
mkdir -p "$work"
t0=$(date +%s)
step() { echo "desktop-image: $* ($(( $(date +%s) - t0 )) s)"; }

packages=xvfb,x11vnc,xterm,nano,xfonts-base,x11-xkb-utils,xkb-data
step "debootstrap bookworm with $packages"
debootstrap --variant=minbase --cache-dir="$cache" --include="$packages" \
  bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
  echo "desktop-image: debootstrap failed; its log ends:" >&2; tail -20 "$work/debootstrap.log" >&2; exit 1; }
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' | LC_ALL=C sort >"$work/packages.txt"

# PID 1 after the initramfs hands over: the X server, the VNC server on
# port 5900 (the service port), and the editor's terminal, restarted if it
# ever exits.
cat >"$root/sbin/slingshot-desktop" <<'XEOF'
#!/bin/sh
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
export HOME=/root DISPLAY=:0 LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
Xvfb :0 -screen 0 640x400x24 -nolisten tcp -noreset >/tmp/xvfb.log 2>&1 &
n=0
while [ ! -e /tmp/.X11-unix/X0 ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
# -nowf: no wireframing; -wait/-defer: poll the screen and send within 5 ms.
x11vnc -display :0 -rfbport 5900 -shared -forever -nopw -noipv6 -nowf -wait 5 -defer 5 \
  -q -o /tmp/x11vnc.log &
echo "slingshot-desktop: ready rfb=5900" >/dev/console
while true; do
  xterm -geometry 80x25+0+0 -bg '#202830' -fg '#e8e8d0' -e /usr/local/bin/slingshot-edit
done
XEOF
cat >"$root/usr/local/bin/slingshot-edit" <<'XEOF'
#!/bin/sh
# The editor's loop: closed until Enter, then nano on the document.
cd /root
while true; do
  clear
  echo "document.txt is closed: press Enter to open it."
  read -r _ || sleep 1
  nano --nohelp document.txt
done
XEOF
chmod 0755 "$root/sbin/slingshot-desktop" "$root/usr/local/bin/slingshot-edit"
: >"$root/root/document.txt"
echo slingshot-desktop >"$root/etc/hostname"

step "trimming the root (documentation, locales, caches, logs)"
rm -rf "$root"/usr/share/{doc,man,info,lintian,locale} "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
  "$root"/var/log/* "$root"/var/cache/ldconfig/aux-cache "$root"/tmp/*
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

step "ext4 image"
rm -f "$work/desktop.img"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -d "$root" -L ss-desktop \
  -U 5a1d5407-de5c-4f00-8000-000000000001 -E hash_seed=5a1d5407-de5c-4f00-8000-000000000002,root_owner=0:0 \
  "$work/desktop.img" 1G
mv -f "$work/desktop.img" "$out/desktop.img"
mv -f "$work/packages.txt" "$out/packages.txt"
rm -rf "$work"
step "wrote $out/desktop.img ($(du -m "$out/desktop.img" | cut -f1) MiB used of 1 GiB)"
