#!/usr/bin/env bash
# The end-to-end demo of what Slingshot can do so far: a home chunk store,
# a disk image imported and exported bit for bit, a memory image cut by
# FastCDC (and a second checkpoint of it sharing most chunks), a signed
# home key, a bundle exported twice byte-identically, imported into a second
# store and verified, a damaged bundle refused, garbage collection, and the
# disk served on demand to a surrogate: the home's chunk service over TLS,
# a stick filled from it, and the agent's NBD export read by nbdcopy. Then
# replication: home, client and surrogate in network namespaces, pairing
# over the network, a surrogate found by DNS-SD, typing
# through the proxy, a surrogate replica that leads and is killed, and the
# home's document checked against what was typed (DEMO OK).
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
HOME_BIN="$BUILD/home/slingshot-home"
AGENT_BIN="$BUILD/dom0-agent/slingshot-agent"
CLIENT_BIN="$BUILD/client/slingshot-client"
W="$BUILD/demo"
rm -rf "$W"
mkdir -p "$W"
cd "$W"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
home() { "$HOME_BIN" "$@" --store "$W/home-store" --key "$W/home.key"; }

step "Generate a 256 MiB disk image: random, repeated, zero and text regions"
head -c 4M /dev/urandom > r0
head -c 4M /dev/urandom > r1
{ yes "slingshot replicates stateful services onto hotspot surrogates" || true; } | head -c 4M > text
: > disk.img
for i in $(seq 0 63); do
  case $((i % 8)) in
    0|3) head -c 4M /dev/urandom >> disk.img ;;
    1|6) cat r0 >> disk.img ;;
    2)   cat r1 >> disk.img ;;
    4|7) head -c 4M /dev/zero >> disk.img ;;
    5)   cat text >> disk.img ;;
  esac
done
printf 'an odd tail' >> disk.img
ls -l disk.img

step "Create the home key and the transactional chunk store"
home key init
home store init

step "Import the disk (64 KiB chunks; zero chunks not stored, duplicates stored once)"
home store import-disk disk.img --name demo

step "Export it back and compare bit for bit"
home store export-disk demo disk.out
cmp disk.img disk.out && echo "disk.out is identical to disk.img"

step "A memory image through FastCDC, then a second checkpoint that differs a little"
head -c 64M disk.img > mem1
{ printf 'a shifted save-stream header'; cat mem1; } > mem2
printf 'dirty page' | dd of=mem2 bs=1 seek=$((40 * 1024 * 1024)) conv=notrunc status=none
home store import-memory mem1 --name ckpt1
home store import-memory mem2 --name ckpt2
home store export-memory ckpt2 mem2.out
cmp mem2 mem2.out && echo "memory image ckpt2 streams back identical"

step "Store statistics and a full verification (every chunk re-hashed)"
home store stats
home store verify

step "Export a bundle twice: byte-identical"
home bundle export demo-1.tar.zst
home bundle export demo-2.tar.zst >/dev/null
sha256sum demo-1.tar.zst demo-2.tar.zst
cmp demo-1.tar.zst demo-2.tar.zst && echo "the two bundles are byte-identical"
echo "stock tools read it:"; tar --zstd -tvf demo-1.tar.zst | sed -n 1,3p

step "Import the bundle into a second store (every chunk verified) and export from there"
"$HOME_BIN" bundle import demo-1.tar.zst --store "$W/second-store" --create
"$HOME_BIN" store export-disk demo disk.second --store "$W/second-store"
cmp disk.img disk.second && echo "the second store rebuilds the disk bit for bit"

step "A damaged bundle is refused, and nothing is imported"
cp demo-1.tar.zst damaged.tar.zst
printf '\x55' | dd of=damaged.tar.zst bs=1 seek=$(( $(stat -c %s damaged.tar.zst) / 2 )) conv=notrunc status=none
if "$HOME_BIN" bundle import damaged.tar.zst --store "$W/third-store" --create; then
  echo "ERROR: a damaged bundle was accepted" >&2
  exit 1
fi
echo "refused, as it should be"

step "Drop the first checkpoint and collect garbage"
home store gc --ref-delete memory/ckpt1
home store verify

step "The home's certificate authority; credentials for a laptop"
home ca init --tls-dir "$W/tls" --name demo-home
home credentials issue laptop --role client --out "$W/laptop" --tls-dir "$W/tls"

step "The home daemon serves chunks over TLS 1.3 (peers of its CA only)"
PORT=$((20000 + RANDOM % 20000))
"$HOME_BIN" run --store "$W/home-store" --key "$W/home.key" --tls-dir "$W/tls" --services-dir "$W/no-services" \
  --listen 127.0.0.1:$PORT > serve.out 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "listening on" serve.out && break; sleep 0.1; done
cat serve.out

step "The laptop fills its USB stick with the disk's chunks"
"$CLIENT_BIN" portable sync "$W/stick" --home 127.0.0.1:$PORT --credentials "$W/laptop" --ref disk/demo

step "The disk over NBD, on demand as a replica's: cache, then the stick, then home"
# (slingshot-agent disk serve: a replica's disk for any NBD client; the
# laptop's credentials, since a surrogate reads a home only with a capability)
"$AGENT_BIN" disk serve disk/demo --home 127.0.0.1:$PORT --credentials "$W/laptop" --stick "$W/stick" \
  --socket "$W/disk.sock" --cache "$W/agent-cache" --no-prefetch > agent.out 2>&1 &
AGENT=$!
for _ in $(seq 50); do grep -q "serving disk/demo" agent.out && break; sleep 0.1; done
nbdcopy "nbd+unix:///disk?socket=$W/disk.sock" disk.nbd
cmp disk.img disk.nbd && echo "the disk read over NBD is identical to disk.img"
kill -TERM $AGENT
wait $AGENT
cat agent.out

step "Credentials from another home get nothing"
"$HOME_BIN" ca init --tls-dir "$W/other-tls" > /dev/null
"$HOME_BIN" credentials issue eve --role client --out "$W/eve" --tls-dir "$W/other-tls" > /dev/null
if "$AGENT_BIN" disk serve disk/demo --home 127.0.0.1:$PORT --credentials "$W/eve" --socket "$W/eve.sock" \
  --cache "$W/eve-cache"; then
  echo "ERROR: a stranger was served" >&2
  exit 1
fi
echo "refused, as it should be"
kill -TERM $SERVE
wait $SERVE
tail -1 serve.out

# --- Replication: the whole story ---
TYPIST="$BUILD/tests/support/slingshot-typist"
LINKEMU="$BUILD/tests/support/slingshot-linkemu"
WORLD="$BUILD/e2e-world"
STATE="$WORLD/client"
cleanup() { "$SRC/tests/e2e/world.sh" down "$BUILD" >/dev/null 2>&1 || true; }
if [ "$(id -u)" != 0 ]; then
  echo "the replication part needs root (network namespaces); run make demo as root" >&2
  exit 1
fi
trap cleanup EXIT

step "Home, client and two hotspots, each in its own network namespace; the home daemon boots the notepad service"
"$SRC/tests/e2e/world.sh" up "$BUILD"
"$HOME_BIN" service list --services-dir "$WORLD/home/services"

step "The laptop paired with its home over the network: a one-time code, nothing else carried by hand"
sed 's/^/home:   /' "$WORLD/pair-home.log"
sed 's/^/laptop: /' "$WORLD/pair-client.log"

step "The client reaches home over a WAN: 40 ms round trip, 50 Mbit/s (a user-space link emulator)"
ip netns exec ss-client "$LINKEMU" 10.77.0.2:17390 10.77.0.1:7390 40 50 > "$W/linkemu.out" 2>&1 &
disown
for _ in $(seq 50); do grep -q relaying "$W/linkemu.out" && break; sleep 0.1; done
cat "$W/linkemu.out"

step "The client proxy: a VNC endpoint on 127.0.0.1:5900 for any viewer, in front of every replica"
ip netns exec ss-client "$CLIENT_BIN" proxy notepad --state-dir "$STATE" --home 10.77.0.2:17390 > "$W/proxy.out" 2>&1 &
disown
for _ in $(seq 300); do grep -q "proxy ready" "$W/proxy.out" && break; sleep 0.1; done
grep -v TRACE "$W/proxy.out"
REF=""
typeit() {  # types through the proxy, as a VNC viewer would
  ip netns exec ss-client "$TYPIST" type 127.0.0.1:5900 "$1" "${2:-30}"
  REF="$REF$1"
}

step "Typing with only the home replica: every key crosses the WAN"
typeit "Dear diary, typed at home. "
"$CLIENT_BIN" status --state-dir "$STATE"

step "A surrogate in the cafe; the client instantiates a replica there (checkpoint + log)"
# Each namespace has its own D-Bus system bus and avahi-daemon (world.sh).
bus() { echo "DBUS_SYSTEM_BUS_ADDRESS=unix:path=$WORLD/bus-$1"; }
ip netns exec ss-surr env "$(bus surr)" "$AGENT_BIN" run --listen 10.77.0.3:7391 --name cafe \
  --cache "$WORLD/cafe-cache" --accel tcg > "$W/cafe.out" 2>&1 &
CAFE=$!
disown
for _ in $(seq 100); do grep -q "advertised as" "$W/cafe.out" && break; sleep 0.1; done
cat "$W/cafe.out"
echo "the laptop looks for surrogates on the hotspot's network (DNS-SD):"
for _ in $(seq 20); do
  env "$(bus client)" "$CLIENT_BIN" discover --state-dir "$STATE" > "$W/discover.out"
  grep -q cafe "$W/discover.out" && break
  sleep 0.5
done
cat "$W/discover.out"
START=$(date +%s%N)
env "$(bus client)" "$CLIENT_BIN" use cafe --state-dir "$STATE"
echo "instantiated in $(( ($(date +%s%N) - START) / 1000000 )) ms (the command, from asking for a capability to caught up)"

step "Typing with the surrogate leading: keys answer over the hotspot's LAN"
typeit "Now the cafe answers. "
for _ in $(seq 100); do "$CLIENT_BIN" status --state-dir "$STATE" | grep -q "replica cafe.*leader" && break; typeit "."; done
"$CLIENT_BIN" status --state-dir "$STATE"
typeit "Fast keys, here. "

step "The cafe's surrogate is switched off in the middle of a sentence (kill -9, agent and VM)"
# The agent and its own children (its replicas' VMs), by PID: nothing else
# on this machine is touched.
( sleep 0.4; kill -9 $CAFE $(ps -o pid= --ppid $CAFE) 2>/dev/null || true ) &
KILLER=$!
typeit "The user keeps typing; home takes over. " 40
wait $KILLER
"$CLIENT_BIN" status --state-dir "$STATE"
echo "(the max above is the failover gap as the user saw it: from a key to its screen across the switch)"

step "The document at home, against what was typed"
for _ in $(seq 100); do
  DOC=$(ip netns exec ss-home "$TYPIST" doc "$(awk '$1 == 5901 {print $2}' "$WORLD/home/services/notepad/endpoints")" || true)
  [ "$DOC" = "$REF" ] && break
  sleep 0.3
done
echo "typed: $REF"
echo "home:  $DOC"
if [ "$DOC" != "$REF" ]; then
  echo "ERROR: the home's document does not match what was typed" >&2
  exit 1
fi

echo
echo "demo finished: every step above checked its own result"
echo "DEMO OK"
