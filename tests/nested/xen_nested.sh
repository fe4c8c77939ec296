#!/bin/bash
# The nested Xen tests (ctest -L nested): boots Xen 4.17 under QEMU TCG with
# a Debian dom0 and runs there
#   - xen_proof, which drives the Xen backend on the notepad test guest:
#     PVH where Xen allows (live checkpoints, a viewer held across them),
#     and two guests at once on their own networks;
#   - the home daemon on Xen (XenHomeBootsCheckpointsAndRestores): it
#     serves its primaries' disks over TCP, since Xen's dom0 NBD client
#     cannot use a unix socket. `slingshot-home
#     run --hypervisor xen` boots the notepad service, takes its first
#     checkpoint, is stopped, and on its next start restores the primary
#     from that checkpoint and reconnects to its service;
#   - `xen_proof pv-pause`: the same guest booted as PV, whose checkpoint
#     pauses it for the whole save, beside the PVH pause measured above.
#     Nested TCG stalls now and then; if this last step makes no end in
#     its time, Xen is stopped and booted once more to measure only it.
# The last line is XEN-NESTED RESULT with all their figures, printed only
# if all passed.
#
#   tests/nested/xen_nested.sh BUILD_DIR
#
# The dom0 (dom0.sh: debootstrap once into BUILD_DIR/nested, then packed
# with xen_proof, slingshot-home, the libraries they link and the guest
# image into one initramfs, so dom0 needs no disk).
set -euo pipefail

build=$(cd "${1:?usage: xen_nested.sh BUILD_DIR}" && pwd)
work=$build/nested
mkdir -p "$work"
export PATH=$PATH:/usr/sbin:/sbin

need() { command -v "$1" >/dev/null || { echo "xen_nested: $1 is missing (install $2)" >&2; exit 1; }; }
need debootstrap debootstrap
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need depmod kmod

t0=$(date +%s)
BUILD=$build
. "$(dirname "$0")/dom0.sh"
cat > "$work/init" <<'INIT'
pv_pause() {  # with Xen's domains every two minutes, so a stall shows where
  echo "SLINGSHOT-NESTED pv-pause begins"
  ( while sleep 120; do
      echo "SLINGSHOT-NESTED pv-pause still running; domains: $(/usr/lib/xen-4.17/bin/xl list 2>&1 | tail -n +2 | awk '{printf "%s(%s) ", $1, $5}')"
    done ) &
  watch=$!
  SLINGSHOT_GUEST_DIR=/opt/slingshot/guest timeout -k 30 900 /opt/slingshot/xen_proof pv-pause 2>&1 ||
    echo "XEN-PROOF FAILED pv-pause: exit $?"
  kill $watch
  echo "SLINGSHOT-NESTED pv-pause ends"
}
if grep -q "slingshot.only=pv-pause" /proc/cmdline; then
  pv_pause
  echo o > /proc/sysrq-trigger
  sleep 30
fi
SLINGSHOT_GUEST_DIR=/opt/slingshot/guest /opt/slingshot/xen_proof 2>&1
echo "SLINGSHOT-NESTED exit $?"

# The home daemon on Xen: boot, first checkpoint, stop, restore.
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
  $home service create notepad --owner nested --kernel /opt/slingshot/guest/vmlinuz --initrd /opt/slingshot/guest/initrd.img \
    --cmdline "quiet panic=1 slingshot.disk=auto" $H >>/tmp/home-init.log 2>&1 || home_fail "init" init
t0=$(up)
$home run $H --listen 127.0.0.1:7390 --hypervisor xen --checkpoint-inputs 1000 --checkpoint-seconds 600 \
  >/tmp/home-first.log 2>&1 &
pid=$!
if wait_for 900 grep -q "^epoch 1 seq 0" /tmp/home/services/notepad/status 2>/dev/null; then
  t1=$(up)
  echo "XEN-HOME first checkpoint after $((t1 - t0)) s: $(cat /tmp/home/services/notepad/status)"
  grep -a "booted\|checkpoint epoch 1\|network\|Xen guests" /tmp/home-first.log
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
pv_pause
echo o > /proc/sysrq-trigger
sleep 30
INIT
t_root=$(date +%s)
dom0_build "$work" "$work/init" "$build/tests/nested/xen_proof" "$build/home/slingshot-home"
t_pack=$(date +%s)
echo "xen_nested: dom0 initramfs $(du -m "$work/dom0-initrd.img" | cut -f1) MiB; booting Xen under QEMU TCG"

# run_xen LOG SECONDS [DOM0_ARGS]: boots Xen and dom0, which run the init
# above, until it powers off or SECONDS pass. A PV pause measurement that
# has begun but not ended after $stall s is taken as stalled: Xen is stopped.
stall=960
run_xen() {
  local log=$1 secs=$2 began="" qpid
  : > "$log"
  dom0_qemu_args "$work" 2048 "${3:-}"
  timeout "$secs" qemu-system-x86_64 "${DOM0_QEMU[@]}" -smp 2 -m 3072 -display none -serial "file:$log" &
  qpid=$!
  while kill -0 $qpid 2>/dev/null; do
    sleep 5
    if [[ -z $began ]] && grep -aq 'SLINGSHOT-NESTED pv-pause begins' "$log"; then began=$(date +%s); fi
    if [[ -n $began ]] && ! grep -aq 'SLINGSHOT-NESTED pv-pause ends' "$log" && (( $(date +%s) - began > stall )); then
      echo "xen_nested: the PV pause measurement made no end in $stall s; stopping Xen. The console ends:"
      tail -15 "$log" | tr -d '\r'
      kill $qpid
      break
    fi
  done
  wait $qpid || true
}
# Xen's own word on a guest (a triple fault, a crash) is shown too.
show() { grep -a 'XEN-PROOF\|XEN-HOME\|SLINGSHOT-NESTED\|(XEN) d[0-9]*v[0-9]* ' "$1" || true; }
# The last LOG line with PREFIX, after it; empty (not a failure) if none.
field() { { grep -a "$1" "$2" || true; } | tail -1 | sed "s/.*$1 //" | tr -d '\r'; }

log=$work/console.log
run_xen "$log" 2100
show "$log"
t_end=$(date +%s)
echo "xen_nested: dom0 root and packing $((t_pack - t_root)) s, Xen run $((t_end - t_pack)) s"
# The proof counts only if it ended well.
proof=$(field 'XEN-PROOF RESULT' "$log")
grep -aq 'SLINGSHOT-NESTED exit 0' "$log" || proof=""
xen_home=$(field 'XEN-HOME RESULT' "$log")
pv=$(field 'XEN-PROOF PV-PAUSE' "$log")
if [[ -n $proof && -n $xen_home && -z $pv ]]; then
  echo "xen_nested: no PV pause figure; booting Xen once more to measure only that"
  run_xen "$work/console-pv.log" 1100 slingshot.only=pv-pause
  show "$work/console-pv.log"
  pv=$(field 'XEN-PROOF PV-PAUSE' "$work/console-pv.log")
  echo "xen_nested: the second Xen run took $(( $(date +%s) - t_end )) s"
fi
# The PVH guest's pause is the proof's: the median of its three live
# checkpoints with a viewer connected.
pvh=$(sed -n 's/.* pause_ms=\([0-9]*\).*/\1/p' <<<"$proof")
if [[ -n $xen_home && -n $pv && -n $pvh && $proof == *type=pvh* ]]; then
  echo "XEN-NESTED RESULT $proof $xen_home pvh_pause_ms=$pvh $pv"
  exit 0
fi
echo "xen_nested: the proof, the Xen home or the PV pause did not pass; the console log ($log) ends:" >&2
tail -40 "$log" >&2
exit 1
