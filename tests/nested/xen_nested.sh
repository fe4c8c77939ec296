#!/bin/bash
# The nested Xen tests (ctest -L nested): boots Xen 4.17 under QEMU TCG with
# a Debian dom0 and runs there
#   - xen_proof, which drives the Xen backend on the notepad test guest as
#     a PV domain;
#   - the home daemon on Xen (XenHomeBootsCheckpointsAndRestores): a Xen
#     home used to hand its primaries' disks over a unix socket, which Xen's
#     dom0 NBD client cannot use, so it never booted one. `slingshot-home
#     run --hypervisor xen` boots the notepad service, takes its first
#     checkpoint, is stopped, and on its next start restores the primary
#     from that checkpoint and reconnects to its service.
# The last line is XEN-NESTED RESULT with both tests' figures, printed only
# if both passed.
#
#   tests/nested/xen_nested.sh BUILD_DIR
#
# The dom0 root (debootstrap: xen-utils, the Debian kernel, nbd-client,
# qemu-utils for qemu-nbd, iproute2) is built once into BUILD_DIR/nested and reused; each run packs it
# with xen_proof, the libraries it links and the guest image into one
# initramfs, so dom0 needs no disk. PLATFORM.md has the why of each step.
set -euo pipefail

build=$(cd "${1:?usage: xen_nested.sh BUILD_DIR}" && pwd)
work=$build/nested
root=$work/dom0-root
mkdir -p "$work"
export PATH=$PATH:/usr/sbin:/sbin

need() { command -v "$1" >/dev/null || { echo "xen_nested: $1 is missing (install $2)" >&2; exit 1; }; }
need debootstrap debootstrap
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need depmod kmod

t0=$(date +%s)
packages=linux-image-amd64,xen-utils-4.17,xen-hypervisor-4.17-amd64,nbd-client,qemu-utils,iproute2,kmod,busybox
if [[ "$(cat "$root/.complete" 2>/dev/null)" != "$packages" ]]; then
  echo "xen_nested: building the dom0 root with debootstrap (once; about a minute)"
  rm -rf "$root" "$root.tmp"
  debootstrap --variant=minbase \
    --include="$packages" \
    bookworm "$root.tmp" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 || {
      echo "xen_nested: debootstrap failed; its log ends:" >&2; tail -20 "$work/debootstrap.log" >&2; exit 1; }
  mv "$root.tmp" "$root"
  echo "$packages" > "$root/.complete"
fi
t_root=$(date +%s)

kver=$(ls "$root/lib/modules" | head -1)
stage=$work/stage
rm -rf "$stage" && mkdir -p "$stage"
# dom0's tree, without what a test never uses (docs, most drivers).
(cd "$root" && tar --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale \
   --exclude=./lib/modules --exclude=./usr/lib/modules --exclude=./usr/lib/firmware --exclude=./boot --exclude=./var/cache/apt --exclude=./var/lib/apt/lists \
   --exclude=./.complete -cf - .) | (cd "$stage" && tar -xf -)
mods=$root/lib/modules/$kver
for dir in kernel/drivers/xen kernel/drivers/block/xen-blkback kernel/drivers/net/xen-netback \
           kernel/drivers/block/nbd.ko kernel/net/bridge kernel/net/802 kernel/net/llc; do
  [[ -e $mods/$dir ]] || continue
  mkdir -p "$stage/lib/modules/$kver/$(dirname "$dir")"
  cp -a "$mods/$dir" "$stage/lib/modules/$kver/$(dirname "$dir")/"
done
cp "$mods"/modules.order "$mods"/modules.builtin* "$stage/lib/modules/$kver/"
depmod -b "$stage" "$kver"

# Our programs, every library they link, and the guest.
mkdir -p "$stage/opt/slingshot/lib" "$stage/opt/slingshot/guest"
cp "$build/tests/nested/xen_proof" "$build/home/slingshot-home" "$stage/opt/slingshot/"
for lib in $(ldd "$build/tests/nested/xen_proof" "$build/home/slingshot-home" | awk '/=> \// {print $3}' | sort -u); do
  cp -L "$lib" "$stage/opt/slingshot/lib/"
done
cp "$build/guest/vmlinuz" "$build/guest/initrd.img" "$build/guest/notepad.psf" "$stage/opt/slingshot/guest/"

cat > "$stage/init" <<'INIT'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/run /var/log/xen /var/lib/xen
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/log/xen
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback nbd bridge; do
  modprobe $m 2>/dev/null
done
mount -t xenfs xenfs /proc/xen
X=/usr/lib/xen-4.17/bin
$X/xenstored --pid-file /run/xenstored.pid
$X/xen-init-dom0
$X/xenconsoled --pid-file=/run/xenconsoled.pid
ip link set lo up
ip link add xenbr0 type bridge
ip addr add 10.0.2.2/24 dev xenbr0
ip link set xenbr0 up
echo "SLINGSHOT-NESTED dom0 ready after $(cut -d' ' -f1 /proc/uptime) s"
SLINGSHOT_GUEST_DIR=/opt/slingshot/guest LD_LIBRARY_PATH=/opt/slingshot/lib \
  /opt/slingshot/xen_proof 2>&1
echo "SLINGSHOT-NESTED exit $?"

# The home daemon on Xen: boot, first checkpoint, stop, restore.
export LD_LIBRARY_PATH=/opt/slingshot/lib
home=/opt/slingshot/slingshot-home
H="--store /tmp/home/store --key /tmp/home/home.key --tls-dir /tmp/home/tls --services-dir /tmp/home/services"
up() { cut -d' ' -f1 /proc/uptime | cut -d. -f1; }
wait_for() {  # $1 seconds, then a command that succeeds when done
  n=$1; shift
  while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n - 1)); done
  return 1
}
home_fail() { echo "XEN-HOME FAIL $1"; tail -30 /tmp/home-$2.log; }
$home init $H --name nested-home >/tmp/home-init.log 2>&1 &&
  $home service create notepad --kernel /opt/slingshot/guest/vmlinuz --initrd /opt/slingshot/guest/initrd.img \
    --cmdline "quiet panic=1 slingshot.disk=auto" $H >>/tmp/home-init.log 2>&1 || home_fail "init" init
t0=$(up)
$home run $H --listen 127.0.0.1:7390 --hypervisor xen --checkpoint-inputs 1000 --checkpoint-seconds 600 \
  >/tmp/home-first.log 2>&1 &
pid=$!
if wait_for 900 grep -q "^epoch 1 seq 0" /tmp/home/services/notepad/status 2>/dev/null; then
  t1=$(up)
  echo "XEN-HOME first checkpoint after $((t1 - t0)) s: $(cat /tmp/home/services/notepad/status)"
  grep -a "checkpoint epoch 1" /tmp/home-first.log
  kill -TERM $pid; wait $pid
  $home run $H --listen 127.0.0.1:7390 --hypervisor xen --checkpoint-inputs 1000 --checkpoint-seconds 600 \
    >/tmp/home-second.log 2>&1 &
  pid=$!
  if wait_for 900 grep -q "restored from checkpoint epoch 1" /tmp/home-second.log; then
    t2=$(up)
    grep -a "restored from checkpoint" /tmp/home-second.log
    kill -TERM $pid; wait $pid
    echo "XEN-HOME RESULT first_ckpt_s=$((t1 - t0)) restore_s=$((t2 - t1))"
  else
    home_fail "no restore from the checkpoint" second
    kill -TERM $pid
  fi
else
  home_fail "no first checkpoint" first
  kill -TERM $pid
fi
echo o > /proc/sysrq-trigger
sleep 30
INIT
chmod 0755 "$stage/init"
(cd "$stage" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -1 > "$work/dom0-initrd.img"
gunzip -c "$root"/boot/xen-4.17-amd64.gz > "$work/xen"
cp "$root/boot/vmlinuz-$kver" "$work/dom0-vmlinuz"
t_pack=$(date +%s)
echo "xen_nested: dom0 initramfs $(du -m "$work/dom0-initrd.img" | cut -f1) MiB; booting Xen under QEMU TCG"

log=$work/console.log
timeout 2100 qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64,+svm,+npt -smp 2 -m 3072 \
  -nographic -no-reboot -nodefaults -serial "file:$log" \
  -kernel "$work/xen" \
  -initrd "$work/dom0-vmlinuz console=hvc0 earlyprintk=xen quiet,$work/dom0-initrd.img" \
  -append "console=com1 com1=115200,8n1 dom0_mem=2048M,max:2048M" || true
t_end=$(date +%s)

grep -a 'XEN-PROOF\|SLINGSHOT-NESTED' "$log" || true
echo "xen_nested: dom0 root $((t_root - t0)) s, packing $((t_pack - t_root)) s, Xen run $((t_end - t_pack)) s"
proof=$(grep -a 'XEN-PROOF RESULT' "$log" | tail -1 | sed 's/.*XEN-PROOF RESULT //' | tr -d '\r')
xen_home=$(grep -a 'XEN-HOME RESULT' "$log" | tail -1 | sed 's/.*XEN-HOME RESULT //' | tr -d '\r')
if [[ -n $proof && -n $xen_home ]] && grep -aq 'SLINGSHOT-NESTED exit 0' "$log"; then
  echo "XEN-NESTED RESULT $proof $xen_home"
  exit 0
fi
echo "xen_nested: the proof or the Xen home did not pass; the console log ($log) ends:" >&2
tail -40 "$log" >&2
exit 1
