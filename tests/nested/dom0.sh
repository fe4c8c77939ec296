# A Xen dom0 for the nested tests, booted from one initramfs (no disk):
# sourced by xen_nested.sh and appliance_nested.sh.
#
#   dom0_build WORK STAGE_INIT PROGRAM...
#       builds (once) the dom0 root with debootstrap into WORK/dom0-root
#       (or $DOM0_ROOT_WORK/dom0-root, to share one),
#       stages it with the kernel modules a test uses, PROGRAMs and every
#       library they link under /opt/slingshot (lib/ for the libraries), the
#       test guest under /opt/slingshot/guest, STAGE_INIT as /init (after
#       the common start: mounts, modules, xenstored, xen-init-dom0,
#       xenconsoled); then packs WORK/dom0-initrd.img, WORK/xen and
#       WORK/dom0-vmlinuz. Files to add go in $DOM0_STAGE before packing:
#       set DOM0_EXTRA to a function that copies them.
#   dom0_qemu_args WORK DOM0_MIB [DOM0_ARGS]
#       sets DOM0_QEMU to the QEMU arguments that boot that Xen and dom0;
#       DOM0_ARGS join dom0's kernel command line (its init reads them in
#       /proc/cmdline).
# BUILD must be set (the build directory). PLATFORM.md has the why of each
# step of the common start.

dom0_packages=linux-image-amd64,xen-utils-4.17,xen-hypervisor-4.17-amd64,nbd-client,qemu-utils,iproute2,kmod,busybox

dom0_build() {
  local work=$1 init=$2
  shift 2
  local root=${DOM0_ROOT_WORK:-$work}/dom0-root
  mkdir -p "$work" "$(dirname "$root")"
  if [[ "$(cat "$root/.complete" 2>/dev/null)" != "$dom0_packages" ]]; then
    echo "dom0: building the dom0 root with debootstrap (once; about a minute)"
    rm -rf "$root" "$root.tmp"
    debootstrap --variant=minbase --include="$dom0_packages" \
      bookworm "$root.tmp" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 || {
        echo "dom0: debootstrap failed; its log ends:" >&2; tail -20 "$work/debootstrap.log" >&2; return 1; }
    mv "$root.tmp" "$root"
    echo "$dom0_packages" > "$root/.complete"
  fi
  local kver stage=$work/stage
  kver=$(ls "$root/lib/modules" | head -1)
  rm -rf "$stage" && mkdir -p "$stage"
  # dom0's tree, without what a test never uses (docs, most drivers).
  (cd "$root" && tar --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale \
     --exclude=./lib/modules --exclude=./usr/lib/modules --exclude=./usr/lib/firmware --exclude=./boot \
     --exclude=./var/cache/apt --exclude=./var/lib/apt/lists --exclude=./.complete -cf - .) | (cd "$stage" && tar -xf -)
  local mods=$root/lib/modules/$kver dir
  for dir in kernel/drivers/xen kernel/drivers/block/xen-blkback kernel/drivers/net/xen-netback \
             kernel/drivers/block/nbd.ko kernel/drivers/net/veth.ko kernel/drivers/net/ethernet/intel/e1000 \
             kernel/net/bridge kernel/net/802 kernel/net/llc; do
    [[ -e $mods/$dir ]] || continue
    mkdir -p "$stage/lib/modules/$kver/$(dirname "$dir")"
    cp -a "$mods/$dir" "$stage/lib/modules/$kver/$(dirname "$dir")/"
  done
  cp "$mods"/modules.order "$mods"/modules.builtin* "$stage/lib/modules/$kver/"
  depmod -b "$stage" "$kver"

  mkdir -p "$stage/opt/slingshot/lib" "$stage/opt/slingshot/guest"
  cp "$@" "$stage/opt/slingshot/"
  local lib
  for lib in $(ldd "$@" | awk '/=> \// {print $3}' | sort -u); do
    cp -L "$lib" "$stage/opt/slingshot/lib/"
  done
  cp "$BUILD/guest/vmlinuz" "$BUILD/guest/initrd.img" "$BUILD/guest/notepad.psf" "$stage/opt/slingshot/guest/"
  DOM0_STAGE=$stage
  if [[ -n ${DOM0_EXTRA:-} ]]; then "$DOM0_EXTRA"; fi

  { cat <<'START'
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
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback nbd bridge veth e1000; do
  modprobe $m 2>/dev/null
done
mount -t xenfs xenfs /proc/xen
X=/usr/lib/xen-4.17/bin
$X/xenstored --pid-file /run/xenstored.pid
$X/xen-init-dom0
# Guests' consoles go to /var/log/xen/console/guest-NAME.log.
mkdir -p /var/log/xen/console
$X/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
ip link set lo up
export LD_LIBRARY_PATH=/opt/slingshot/lib
echo "SLINGSHOT-NESTED dom0 ready after $(cut -d' ' -f1 /proc/uptime) s"
START
    cat "$init"; } > "$stage/init"
  chmod 0755 "$stage/init"
  (cd "$stage" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -1 > "$work/dom0-initrd.img"
  gunzip -c "$root"/boot/xen-4.17-amd64.gz > "$work/xen"
  cp "$root/boot/vmlinuz-$kver" "$work/dom0-vmlinuz"
}

dom0_qemu_args() {
  local work=$1 mib=$2 args=${3:-}
  DOM0_QEMU=(-accel tcg,thread=multi -cpu qemu64,+svm,+npt -no-reboot -nodefaults
    -kernel "$work/xen"
    -initrd "$work/dom0-vmlinuz console=hvc0 earlyprintk=xen quiet${args:+ $args},$work/dom0-initrd.img"
    -append "console=com1 com1=115200,8n1 guest_loglvl=info dom0_mem=${mib}M,max:${mib}M")
}
