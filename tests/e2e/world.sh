#!/bin/bash
# The e2e world (ctest fixture): client, surrogates and home, each in its own
# network namespace, joined by veth pairs to a bridge; a home daemon with the
# notepad service in the home namespace.
#   world.sh up BUILD_DIR [OPTIONS]  build it (idempotent: tears down first)
#   world.sh down BUILD_DIR   remove it all
#   world.sh avahi BUILD_DIR NAME   (re)start the avahi-daemon of ss-NAME
# State lives in BUILD_DIR/e2e-world; addresses: home 10.77.0.1, client
# 10.77.0.2, surrogates 10.77.0.3 and 10.77.0.4.
# Options (the benchmarks' network profiles; by default every namespace
# hangs off the bridge on a plain veth):
#   --hotspot RATE_MBIT:RTT_MS[:LOSS]  the client's (wireless) link to the hotspot
#   --wan RATE_MBIT:RTT_MS[:LOSS]      the home's link to the rest (its uplink)
#   --checkpoint-inputs N --checkpoint-seconds S   the home daemon's (40, 5)
#   --desktop DISK   the home's service is "desktop" (the desktop guest,
#                    image-build/desktop-image.sh) instead of "notepad"
# A link is a TapLink (slingshot-linkemu link) between the namespace and the
# bridge, so client to home crosses both links and a surrogate to home the
# WAN alone, as from a hotspot's wired LAN.
set -euo pipefail
cmd=$1
build=$(cd "$2" && pwd)
avahi_name=${3:-}
shift 2
[ "$cmd" = up ] || set --
world=$build/e2e-world
names=(home client surr surr2)
declare -A link=()
ckpt_inputs=40
ckpt_seconds=5
desktop=
while [ $# -gt 0 ]; do
  case $1 in
    --hotspot) link[client]=$2; shift 2 ;;
    --wan) link[home]=$2; shift 2 ;;
    --checkpoint-inputs) ckpt_inputs=$2; shift 2 ;;
    --checkpoint-seconds) ckpt_seconds=$2; shift 2 ;;
    --desktop) desktop=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    *) echo "world.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
# One e2e world on a machine at a time: every world uses the namespaces
# ss-*, the bridge ssbr0 and 10.77.0.0/24, so the worlds of two checkouts
# (two make checks) take turns. A world holds a machine-wide lock from
# before it touches anything until `world.sh down`: a holder process keeps
# the flock while BUILD_DIR/e2e-world.held exists. Another world's `up`
# waits up to SLINGSHOT_WORLD_WAIT seconds (1500) for it.
lock=${SLINGSHOT_LOCK_DIR:-/run/lock}/slingshot-e2e-world.lock
held=$build/e2e-world.held
acquire() {
  mkdir -p "$(dirname "$lock")"
  echo waiting >"$held"
  flock -x -w "${SLINGSHOT_WORLD_WAIT:-1500}" "$lock" \
    sh -c "echo \$\$ >'$held.pid'; echo locked >'$held'; while [ -e '$held' ]; do sleep 1; done" \
    </dev/null >/dev/null 2>&1 &
  local holder=$! waited=0
  until [ "$(cat "$held" 2>/dev/null)" = locked ]; do
    if ! kill -0 $holder 2>/dev/null; then
      rm -f "$held"
      echo "world.sh: another e2e world (another checkout's make check?) held $lock for" \
        "${SLINGSHOT_WORLD_WAIT:-1500} s; try again when it is done" >&2
      exit 1
    fi
    if [ $((waited % 60)) -eq 0 ] && [ $waited -gt 0 ]; then
      echo "world.sh: waiting ${waited} s for another e2e world to come down ($lock)" >&2
    fi
    sleep 1
    waited=$((waited + 1))
  done
}
down() {
  if [ -f "$world/home.pid" ]; then kill -TERM "$(cat "$world/home.pid")" 2>/dev/null || true; sleep 1; fi
  if [ -f "$world/links.pids" ]; then xargs -r kill -TERM <"$world/links.pids" 2>/dev/null || true; fi
  for n in "${names[@]}"; do
    ip netns pids "ss-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "ss-$n" 2>/dev/null || true
    # A namespace something still holds outlives its del, and with it the
    # host end of its veth: ours (ss-), and in the way of the next up.
    ip link del "ss-$n-h" 2>/dev/null || true
  done
  ip link del ssbr0 2>/dev/null || true
  # The fault campaign's small file system for the home's store.
  if mountpoint -q "$world/home/small" 2>/dev/null; then
    umount "$world/home/small" 2>/dev/null || umount -l "$world/home/small"
  fi
  rm -rf "$world"
}
# Ends this checkout's holder and waits for it to let go: an `up` right
# after writes the same file, which a holder still polling for it would
# take as its own, holding the lock for good.
release() {
  local pid
  pid=$(cat "$held.pid" 2>/dev/null || true)
  rm -f "$held" "$held.pid"
  for _ in $(seq 50); do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
}
dns_sd=$(cd "$(dirname "$0")/../support" && pwd)/netns-dns-sd.sh
if [ "$cmd" = down ]; then down; release; exit 0; fi
if [ "$cmd" = avahi ]; then "$dns_sd" avahi "ss-$avahi_name" "$world" "$avahi_name"; exit 0; fi
[ "$cmd" = up ] || { echo "usage: world.sh up|down BUILD_DIR, or world.sh avahi BUILD_DIR NAME" >&2; exit 2; }
# A world already up here keeps its lock (its holder is alive).
if ! { [ "$(cat "$held" 2>/dev/null)" = locked ] && kill -0 "$(cat "$held.pid" 2>/dev/null)" 2>/dev/null; }; then
  acquire
fi
down
mkdir -p "$world"
ip link add ssbr0 type bridge
ip link set ssbr0 up
i=1
for n in "${names[@]}"; do
  ip netns add "ss-$n"
  if [ -n "${link[$n]:-}" ]; then
    # An emulated link: taps ss-N-a (moved into the namespace as eth0) and
    # ss-N-h (on the bridge), frames carried between them in user space.
    setsid "$build/tests/support/slingshot-linkemu" link "ss-$n-a" "ss-$n-h" "${link[$n]}" \
      >"$world/link-$n.log" 2>&1 </dev/null &
    echo $! >>"$world/links.pids"
    for _ in $(seq 1 50); do grep -q ready "$world/link-$n.log" && break; sleep 0.1; done
    grep -q ready "$world/link-$n.log" || { cat "$world/link-$n.log" >&2; exit 1; }
    ip link set "ss-$n-a" netns "ss-$n"
    ip -n "ss-$n" link set "ss-$n-a" name eth0
  else
    ip link add "ss-$n-h" type veth peer name eth0 netns "ss-$n"
  fi
  ip link set "ss-$n-h" master ssbr0 up
  ip -n "ss-$n" addr add "10.77.0.$i/24" dev eth0
  ip -n "ss-$n" link set eth0 up
  ip -n "ss-$n" link set lo up
  i=$((i + 1))
done
# DNS-SD: the client's and the surrogates' namespaces each get a system bus
# of their own (a unix socket, $world/bus-NAME; programs find it through
# DBUS_SYSTEM_BUS_ADDRESS) and an avahi-daemon on it, as on separate machines.
for n in client surr surr2; do
  "$dns_sd" up "ss-$n" "$world" "$n" eth0
done
home=$build/home/slingshot-home
g=$build/guest
h="--store $world/home/store --key $world/home/home.key --tls-dir $world/home/tls --services-dir $world/home/services"
$home init $h --name e2e-home >/dev/null
service=notepad
if [ -n "$desktop" ]; then
  # Xvfb, x11vnc and nano in an xterm, on a root file system on its disk;
  # its state is in memory.
  service=desktop
  $home service create desktop --owner alice --kernel "$g/vmlinuz" --initrd "$g/initrd.img" --disk "$desktop" --memory-mb 256 \
    --cmdline "quiet panic=1 slingshot.root=auto" $h >/dev/null
else
  # The notepad autosaves, so its state is on its disk at every checkpoint
  # and a surrogate may boot it from there (--state-on-disk; one test does).
  $home service create notepad --owner alice --kernel "$g/vmlinuz" --initrd "$g/initrd.img" \
    --cmdline "quiet panic=1 slingshot.disk=auto slingshot.autosave=1" --state-on-disk --extra-port 5901 $h >/dev/null
fi
# Pairing over the network: the home prints a one-time code, the client
# (in its own namespace) brings it.
ip netns exec ss-home "$home" pair alice --address 10.77.0.1:7390 --listen 10.77.0.1:7392 --timeout 60 $h \
  >"$world/pair-home.log" 2>&1 </dev/null &
pair_pid=$!
code=
for _ in $(seq 1 100); do
  code=$(sed -n 's/.*--code \([0-9A-Z-]*\).*/\1/p' "$world/pair-home.log")
  [ -n "$code" ] && break
  sleep 0.1
done
[ -n "$code" ] || { echo "slingshot-home pair printed no code:" >&2; cat "$world/pair-home.log" >&2; exit 1; }
ip netns exec ss-client "$build/client/slingshot-client" pair 10.77.0.1:7392 --code "$code" --device laptop \
  --state-dir "$world/client" >"$world/pair-client.log" 2>&1 ||
  { echo "pairing failed:" >&2; cat "$world/pair-client.log" "$world/pair-home.log" >&2; exit 1; }
wait "$pair_pid" || { echo "slingshot-home pair failed:" >&2; cat "$world/pair-home.log" >&2; exit 1; }
# A second device of alice's (a tablet), and a device of another user (bob),
# paired the folder way.
for dev in "tablet --user alice" "bob"; do
  name=${dev%% *}
  $home pair $dev --address 10.77.0.1:7390 --out "$world/$name-creds" $h >/dev/null &&
    "$build/client/slingshot-client" pair "$world/$name-creds" --state-dir "$world/$name" >/dev/null ||
    { echo "pairing $name failed" >&2; exit 1; }
done
# A home that checkpoints often, so that tests see log truncation, and
# collects garbage often. home.cmd is its command, which tests that restart
# the home run again (exec: the pid is the daemon's).
echo "exec $home run $h --listen 10.77.0.1:7390 --accel tcg --checkpoint-inputs $ckpt_inputs" \
  "--checkpoint-seconds $ckpt_seconds --gc-seconds 10" >"$world/home.cmd"
ip netns exec ss-home setsid bash "$world/home.cmd" >"$world/home.log" 2>&1 </dev/null &
echo $! >"$world/home.pid"
for n in client surr surr2; do
  for _ in $(seq 1 100); do
    grep -q "Server startup complete" "$world/avahi-$n.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "Server startup complete" "$world/avahi-$n.log" ||
    { echo "avahi-daemon in ss-$n did not start:" >&2; cat "$world/avahi-$n.log" >&2; exit 1; }
done
for _ in $(seq 1 240); do
  if grep -q "^epoch" "$world/home/services/$service/status" 2>/dev/null; then
    echo "world up: home pid $(cat "$world/home.pid"), $service $(cat "$world/home/services/$service/status")"
    exit 0
  fi
  sleep 0.5
done
echo "the home did not publish a first checkpoint within 120 s; its log:" >&2
cat "$world/home.log" >&2
exit 1
