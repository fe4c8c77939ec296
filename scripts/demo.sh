#!/usr/bin/env bash
# The end-to-end demo of what Slingshot can do so far: a home chunk store,
# a disk image imported and exported bit for bit, a memory image cut by
# FastCDC (and a second checkpoint of it sharing most chunks), a signed
# home key, a bundle exported twice byte-identically, imported into a second
# store and verified, a damaged bundle refused, garbage collection, and the
# disk served on demand to a surrogate: the home's chunk service over TLS,
# a stick filled from it, and the agent's NBD export read by nbdcopy.
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
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

step "The home's certificate authority; credentials for a laptop and a hotspot surrogate"
home ca init --tls-dir "$W/tls" --name demo-home
home credentials issue laptop --role client --out "$W/laptop" --tls-dir "$W/tls"
home credentials issue hotspot --role surrogate --out "$W/hotspot" --tls-dir "$W/tls"

step "The home serves chunks over TLS 1.3 (peers of its CA only)"
PORT=$((20000 + RANDOM % 20000))
"$HOME_BIN" serve --store "$W/home-store" --tls-dir "$W/tls" --listen 127.0.0.1:$PORT > serve.out 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "serving chunks" serve.out && break; sleep 0.1; done
cat serve.out

step "The laptop fills its USB stick with the disk's chunks"
"$CLIENT_BIN" portable sync "$W/stick" --home 127.0.0.1:$PORT --credentials "$W/laptop" --ref disk/demo

step "A surrogate serves the disk over NBD, on demand: cache, then the stick, then home"
"$AGENT_BIN" disk serve disk/demo --home 127.0.0.1:$PORT --credentials "$W/hotspot" --stick "$W/stick" \
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
"$HOME_BIN" credentials issue eve --role surrogate --out "$W/eve" --tls-dir "$W/other-tls" > /dev/null
if "$AGENT_BIN" disk serve disk/demo --home 127.0.0.1:$PORT --credentials "$W/eve" --socket "$W/eve.sock" \
  --cache "$W/eve-cache"; then
  echo "ERROR: a stranger was served" >&2
  exit 1
fi
echo "refused, as it should be"
kill -TERM $SERVE
wait $SERVE
tail -1 serve.out

echo
echo "demo finished: every step above checked its own result"
