#!/bin/bash
# The appliance, nested (ctest -L nested): boots the surrogate ISO under QEMU
# TCG with its NIC on a test LAN (a network namespace with a bridge and a
# DHCP server, as a hotspot has), beside two homes, and runs the story two
# users live at once:
#   - "laptop", whose home runs QEMU on the LAN (this machine): a
#     state-on-disk notepad, so its replica boots from the checkpoint's disk;
#   - "alice", whose home is a Xen dom0 of its own (a second nested machine
#     at 10.78.0.2, dom0.sh): a notepad that keeps its document in memory
#     only, whose replica is restored from the Xen home's memory image
#     (the primary runs as PV here: PVH guests under nested TCG on a loaded
#     host triple-fault now and then; docs/testing.md).
#   1. the agent comes up by itself and advertises itself (DNS-SD);
#   2. each client finds it with `discover` and instantiates its service
#      there (`use`): two replicas at once, both at the guest address
#      10.0.2.15, each on a network of its own;
#   3. typing through each proxy reaches its replica: each consumes every
#      input. The laptop's notepad probes (F4) alice's replica (a second
#      guest address of hers, 10.0.2.16), the agent's port through the
#      gateway and the LAN; with the laptop's home frozen its replica leads
#      and its screen, probe answers included, is what the home's says:
#      nothing reached;
#   4. the appliance is powered off (QEMU killed); both users type on at
#      their homes, and both documents equal everything each typed;
#   5. the appliance boots again, by UEFI this time (the first is by BIOS):
#      its agent's cache is empty, no replica.
#
#   tests/nested/appliance_nested.sh BUILD_DIR
# Needs root, BUILD_DIR/appliance/slingshot-appliance.iso (make appliance),
# the test guest and debootstrap (the Xen home's dom0). Last line:
# APPLIANCE-NESTED RESULT ... concurrent_replicas=2 memory_restored=yes
# isolated=yes lost=0 (the PVH-against-PV checkpoint pause is xen_nested's:
# it runs alone, and PVH guests fault when the host is loaded).
set -euo pipefail

build=$(cd "${1:?usage: appliance_nested.sh BUILD_DIR}" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
iso=$build/appliance/slingshot-appliance.iso
w=$build/appliance-nested
ns=ssa-lan
home_bin=$build/home/slingshot-home
client_bin=$build/client/slingshot-client
typist=$build/tests/support/slingshot-typist
mac=52:54:00:5a:17:01
name=slingshot-5a1701   # appliance-setup names it after its NIC
xmac=52:54:00:5a:17:02  # the Xen home's
xhome_addr=10.78.0.2
export PATH=$PATH:/usr/sbin:/sbin

[[ -f $iso ]] || { echo "appliance_nested: $iso is missing; run make appliance" >&2; exit 1; }
ovmf=/usr/share/ovmf/OVMF.fd
[[ -f $ovmf ]] || { echo "appliance_nested: $ovmf is missing (install ovmf)" >&2; exit 1; }
for t in qemu-system-x86_64 dnsmasq avahi-daemon dbus-daemon; do
  command -v $t >/dev/null || { echo "appliance_nested: $t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

t0=$(date +%s)
say() { echo "appliance_nested [$(( $(date +%s) - t0 )) s]: $*"; }
fail() {
  echo "APPLIANCE-NESTED FAILED: $*" >&2
  for f in "$w"/console-*.log; do [[ -f $f ]] && { echo "--- $f ends:" >&2; tail -30 "$f" >&2; }; done
  for f in proxy alice-proxy; do
    [[ -f $w/$f.log ]] || continue
    echo "--- $f.log on surrogate replicas:" >&2
    grep -a -E "replica slingshot-[^ ]* (dropped|attached again|is lost|left)|attaching to replica" "$w/$f.log" | tail -10 >&2
  done
  [[ -f $w/proxy.log ]] && { echo "--- proxy.log ends:" >&2; tail -15 "$w/proxy.log" >&2; }
  [[ -f $w/home.log ]] && { echo "--- home.log ends:" >&2; tail -15 "$w/home.log" >&2; }
  [[ -f $w/alice-proxy.log ]] && { echo "--- alice-proxy.log ends:" >&2; tail -15 "$w/alice-proxy.log" >&2; }
  if [[ -f $w/console-xhome.log ]]; then
    echo "--- the Xen home's log ends:" >&2; grep -a "^xen-home: " "$w/console-xhome.log" | tail -30 >&2
    echo "--- its guest's console ends:" >&2; grep -a "^xen-guest: " "$w/console-xhome.log" | tail -20 >&2
    grep -a "(XEN) d[0-9]*v[0-9]* " "$w/console-xhome.log" | tail -5 >&2
  fi
  exit 1
}
down() {
  ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  sleep 0.5
  ip netns del $ns 2>/dev/null || true
}
trap down EXIT
down
rm -rf "$w" && mkdir -p "$w"

# The LAN: a bridge (10.78.0.1, where the home and the client live), the
# appliance's tap on it, dnsmasq handing out addresses.
ip netns add $ns
ip -n $ns link set lo up
ip -n $ns link add br0 type bridge
ip -n $ns addr add 10.78.0.1/24 dev br0
ip -n $ns link set br0 up
ip -n $ns tuntap add tap0 mode tap
ip -n $ns link set tap0 master br0 up
ip -n $ns tuntap add tap1 mode tap
ip -n $ns link set tap1 master br0 up
ip netns exec $ns dnsmasq --keep-in-foreground --port=0 --interface=br0 --bind-interfaces \
  --dhcp-range=10.78.0.50,10.78.0.99,1h --dhcp-leasefile="$w/leases" --pid-file="$w/dnsmasq.pid" \
  --log-facility="$w/dnsmasq.log" --log-dhcp &
# DNS-SD on the LAN: a system bus and an avahi-daemon of the namespace's own.
"$src/tests/support/netns-dns-sd.sh" up $ns "$w" lan br0
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$w/bus-lan

# The home: the notepad service, autosaving, so it may boot from its disk
# on the appliance's Xen (its own checkpoints are QEMU's).
h="--store $w/home/store --key $w/home/home.key --tls-dir $w/home/tls --services-dir $w/home/services"
"$home_bin" init $h --name lan-home > /dev/null
"$home_bin" service create notepad --owner laptop --kernel "$build/guest/vmlinuz" --initrd "$build/guest/initrd.img" \
  --cmdline "quiet panic=1 slingshot.disk=auto slingshot.autosave=1 slingshot.probe=10.0.2.16:5900,10.0.2.2:7391,10.78.0.1:7390" \
  --state-on-disk --extra-port 5901 $h > /dev/null
"$home_bin" pair laptop --out "$w/laptop" $h --address 10.78.0.1:7390 > /dev/null
"$client_bin" pair "$w/laptop" --state-dir "$w/client" > /dev/null
# Alice's home, a Xen dom0 of its own: made here (init, service, pairing),
# then run there from its initramfs, with its NIC on the LAN.
xh="--store $w/xhome/store --key $w/xhome/home.key --tls-dir $w/xhome/tls --services-dir $w/xhome/services"
"$home_bin" init $xh --name xen-home > /dev/null
"$home_bin" service create notepad --owner alice --kernel "$build/guest/vmlinuz" --initrd "$build/guest/initrd.img" \
  --cmdline "quiet panic=1 slingshot.disk=auto slingshot.alias=10.0.2.16/24" $xh > /dev/null
"$home_bin" pair alice --out "$w/alice" $xh --address $xhome_addr:7390 > /dev/null
"$client_bin" pair "$w/alice" --state-dir "$w/alice-client" > /dev/null
cat > "$w/xhome-init" <<INIT
ip addr add $xhome_addr/24 dev eth0
ip link set eth0 up
H="--store /xhome/store --key /xhome/home.key --tls-dir /xhome/tls --services-dir /xhome/services"
/opt/slingshot/slingshot-home run \$H --listen $xhome_addr:7390 --hypervisor xen --xen-guest-type pv \
  --checkpoint-inputs 40 --checkpoint-seconds 5 > /tmp/home.log 2>&1 &
tail -F /tmp/home.log | sed -u 's/^/xen-home: /' &
tail -F /var/log/xen/console/guest-notepad.log 2>/dev/null | sed -u 's/^/xen-guest: /' &
sleep 36000
INIT
copy_xhome() { cp -a "$w/xhome" "$DOM0_STAGE/xhome"; }
BUILD=$build
DOM0_ROOT_WORK=$build/nested
. "$src/tests/nested/dom0.sh"
DOM0_EXTRA=copy_xhome dom0_build "$w/xhome-dom0" "$w/xhome-init" "$home_bin" > "$w/xhome-dom0.log" 2>&1 ||
  fail "building the Xen home's dom0: $(tail -5 "$w/xhome-dom0.log")"
dom0_qemu_args "$w/xhome-dom0" 1536
ip netns exec $ns qemu-system-x86_64 "${DOM0_QEMU[@]}" -smp 2 -m 2304 -display none -serial "file:$w/console-xhome.log" \
  -netdev tap,id=n0,ifname=tap1,script=no,downscript=no -device e1000,netdev=n0,mac=$xmac > "$w/qemu-xhome.log" 2>&1 &
echo $! > "$w/qemu-xhome.pid"

ip netns exec $ns setsid "$home_bin" run $h --listen 10.78.0.1:7390 --accel tcg \
  --checkpoint-inputs 40 --checkpoint-seconds 5 > "$w/home.log" 2>&1 < /dev/null &
for _ in $(seq 240); do grep -q "^epoch" "$w/home/services/notepad/status" 2>/dev/null && break; sleep 0.5; done
grep -q "^epoch" "$w/home/services/notepad/status" || fail "the home published no checkpoint"
ip netns exec $ns setsid "$client_bin" proxy notepad --state-dir "$w/client" > "$w/proxy.log" 2>&1 < /dev/null &
for _ in $(seq 300); do grep -q "proxy ready" "$w/proxy.log" && break; sleep 0.2; done
grep -q "proxy ready" "$w/proxy.log" || fail "the proxy did not come up"
say "home and proxy up: $(cat "$w/home/services/notepad/status" | head -1)"

# Alice's Xen home: its primary booted (PVH where the nested CPU allows)
# and its first checkpoint taken; then her proxy.
for _ in $(seq 900); do
  grep -aq "xen-home: .*checkpoint epoch 1 covers" "$w/console-xhome.log" 2>/dev/null && break
  kill -0 "$(cat "$w/qemu-xhome.pid")" 2>/dev/null || fail "the Xen home's QEMU ended"
  sleep 1
done
grep -aq "xen-home: .*checkpoint epoch 1 covers" "$w/console-xhome.log" || fail "the Xen home took no checkpoint"
xen_type=$(grep -ao "Xen guests: [A-Z]*" "$w/console-xhome.log" | head -1 | awk '{print $3}')
ip netns exec $ns setsid "$client_bin" proxy notepad --state-dir "$w/alice-client" --listen 127.0.0.1:5910 \
  > "$w/alice-proxy.log" 2>&1 < /dev/null &
for _ in $(seq 300); do grep -q "proxy ready" "$w/alice-proxy.log" && break; sleep 0.2; done
grep -q "proxy ready" "$w/alice-proxy.log" || fail "alice's proxy did not come up"
say "the Xen home runs alice's notepad as $xen_type: $(grep -a "xen-home: .*checkpoint epoch 1" "$w/console-xhome.log" | tr -d '\r' | sed 's/.*INFO  //')"

# The laptop's commands run on the LAN, as the laptop does. (Run from the
# host's own namespace, a connection to the appliance's address leaves by
# the host's default route; this machine's network answered there with a
# TLS interceptor's certificate, which the pinned fingerprint refused.)
client() { ip netns exec $ns "$client_bin" "$@" --state-dir "$w/client"; }
REF=
typeit() {
  ip netns exec $ns "$typist" type 127.0.0.1:5900 "$1" 30 > /dev/null || fail "typing '$1' failed"
  REF="$REF$1"
}
home_doc() {
  ip netns exec $ns "$typist" doc "$(awk '$1 == 5901 {print $2}' "$w/home/services/notepad/endpoints")"
}
typeit "Typed at home before the cafe. "
alice() { ip netns exec $ns "$client_bin" "$@" --state-dir "$w/alice-client"; }
AREF=
atype() {
  # Alice's home is a nested machine: a key's answer may take a while.
  ip netns exec $ns "$typist" type 127.0.0.1:5910 "$1" 30 60000 > "$w/alice-typist.log" ||
    fail "alice typing '$1' failed: $(alice status 2>&1)"
  AREF="$AREF$1"
}
atype "Alice, at her Xen home. "

boot() {  # boot N [FIRMWARE...]: the appliance's Nth boot, from the ISO, in the background
  local n=$1
  shift
  ip netns exec $ns qemu-system-x86_64 "$@" -accel tcg,thread=multi -cpu qemu64,+svm,+npt -smp 2 -m 3072 \
    -display none -no-reboot -nodefaults -serial "file:$w/console-$n.log" \
    -cdrom "$iso" -boot d -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device e1000,netdev=n0,mac=$mac > "$w/qemu-$n.log" 2>&1 &
  echo $! > "$w/qemu.pid"
  local start=$(date +%s)
  for _ in $(seq 1500); do
    grep -aq "SLINGSHOT-APPLIANCE" "$w/console-$n.log" 2>/dev/null && break
    kill -0 "$(cat "$w/qemu.pid")" 2>/dev/null || fail "QEMU ended during boot $n"
    sleep 1
  done
  grep -aq "SLINGSHOT-APPLIANCE ready" "$w/console-$n.log" || fail "boot $n: the agent did not come up"
  boot_s=$(( $(date +%s) - start ))
  say "boot $n: $(grep -a "SLINGSHOT-APPLIANCE ready" "$w/console-$n.log" | tail -1 | tr -d '\r') after ${boot_s} s"
}

boot 1
boot1_s=$boot_s
# 1-2. Discover it by name, then instantiate the service there.
found=
for _ in $(seq 60); do
  client discover > "$w/discover.log" 2>&1 || true
  grep -q "$name" "$w/discover.log" && { found=1; break; }
  sleep 2
done
[[ -n $found ]] || fail "DNS-SD did not show $name: $(cat "$w/discover.log")"
say "discovered: $(grep "$name" "$w/discover.log")"
start=$(date +%s)
client use "$name" > "$w/use.log" 2>&1 || fail "use $name: $(tail -5 "$w/use.log")"
use_s=$(( $(date +%s) - start ))
say "instantiated on $name in ${use_s} s: $(tail -1 "$w/use.log" | tr '\r' '\n' | tail -1)"
grep -aq "booting notepad from its checkpoint's disk" "$w/console-1.log" ||
  fail "the agent did not say it booted the replica from the checkpoint's disk"
start=$(date +%s)
alice use "$name" > "$w/alice-use.log" 2>&1 || fail "alice: use $name: $(tail -5 "$w/alice-use.log")"
alice_use_s=$(( $(date +%s) - start ))
say "alice's replica on $name in ${alice_use_s} s: $(tail -1 "$w/alice-use.log" | tr '\r' '\n' | tail -1)"
grep -aq "restored as Xen domain" "$w/console-1.log" ||
  fail "the agent did not restore alice's replica from the Xen home's memory image"
memory_restored=yes
client agent-status "$name" > "$w/agent-status-1.log" 2>&1 || fail "agent-status: $(cat "$w/agent-status-1.log")"
grep -Eq "^ *replicas +2 of [0-9]+$" "$w/agent-status-1.log" || fail "the appliance does not run two replicas: $(cat "$w/agent-status-1.log")"
concurrent=2

# consumed_all CLIENT LOG: waits until the client's replica on the
# appliance has consumed everything in its log; false if it does not.
consumed_all() {
  local last
  for _ in $(seq 120); do
    "$1" status > "$2" 2>&1 || true
    last=$(sed -n 's/^service .* log [0-9]*\.\.\([0-9]*\) .*/\1/p' "$2" | head -1)
    if [[ -n $last ]] && grep -q "^replica $name consumed $last live" "$2"; then cat "$2"; return 0; fi
    sleep 1
  done
  cat "$2"
  return 1
}

# 3. Typing reaches the Xen replica: it consumes every input.
typeit "Now typed with the cafe's Xen replica. "
consumed_all client "$w/status.log" || fail "the appliance's replica did not consume every input"
say "the Xen replica consumed every input"
typeit "More keys while both run. "
atype "Alice, now with a replica in the cafe. "
consumed_all alice "$w/alice-status.log" || fail "alice's replica did not consume every input"
say "alice's replica, restored from memory, consumed every input"
# The laptop's notepad (both its replicas: at home and in the cafe) tries
# alice's replica, the agent's port and the LAN, and writes what it reached.
ip netns exec $ns "$typist" key 127.0.0.1:5900 0xffc1 > /dev/null || fail "the probe key (F4) got no answer"
REF="$REF[10.0.2.16:5900 no][10.0.2.2:7391 no][10.78.0.1:7390 no]"

# The Xen replica's own screen: with the home's VM frozen (SIGSTOP) the
# home lags, the replica leads, and the viewer sees what the replica shows,
# which must be everything typed (its start from the checkpoint's disk and
# the replay included).
home_vm=
for p in $(ip netns pids $ns); do
  cmd=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null || true)
  if [[ $cmd == *"-name notepad "* ]]; then home_vm=$p; fi
done
[[ -n $home_vm ]] || fail "cannot find the home's notepad VM"
kill -STOP $home_vm
led=
for _ in $(seq 30); do
  # A key's screen update may wait for the switch: its timeout is no error.
  ip netns exec $ns "$typist" type 127.0.0.1:5900 "-" 30 > /dev/null 2>&1 || true
  REF="$REF-"
  if client status | grep -q "^replica $name .* leader"; then led=1; break; fi
done
client status
if [[ -z $led ]]; then kill -CONT $home_vm; fail "the Xen replica did not lead while the home was frozen"; fi
ip netns exec $ns "$typist" screen 127.0.0.1:5900 "$REF" 60 || { kill -CONT $home_vm; fail "the Xen replica's screen is not what was typed"; }
kill -CONT $home_vm
say "with the home frozen the Xen replica led, and its screen showed all ${#REF} characters, probe answers included"
isolated=yes

# 4. Power off the appliance; typing goes on at home.
kill -9 "$(cat "$w/qemu.pid")"
wait "$(cat "$w/qemu.pid")" 2>/dev/null || true
typeit "The cafe went dark; home carries on."
doc=
for _ in $(seq 100); do
  doc=$(home_doc || true)
  [[ $doc == "$REF" ]] && break
  sleep 0.5
done
[[ $doc == "$REF" ]] || fail "the home's document differs from what was typed: '$doc' vs '$REF'"
say "after the power-off the home's document equals all ${#REF} characters typed"
atype " The cafe went dark; Alice carries on at home."
ip netns exec $ns "$typist" screen 127.0.0.1:5910 "$AREF" 60 || fail "alice's screen (from her Xen home) is not all she typed"
say "after the power-off alice's Xen home shows all ${#AREF} characters she typed"
# Done with the Xen home: the second boot has the host to itself.
kill -9 "$(cat "$w/qemu-xhome.pid")" 2>/dev/null || true

# 5. A second boot keeps nothing.
# (by UEFI this time: the ISO is hybrid, and OVMF is QEMU's UEFI firmware)
boot 2 -bios "$ovmf"
grep -aq "(XEN) EFI RAM map" "$w/console-2.log" || fail "boot 2 was not by UEFI (Xen printed no EFI memory map)"
status_ok=
for try in 1 2 3; do
  if client agent-status "$name" > "$w/agent-status.log" 2>&1; then
    status_ok=1
    break
  fi
  # Say what the network and the appliance said then.
  say "agent-status (try $try): $(cat "$w/agent-status.log")"
  client discover >&2 || true
  grep -a "slingshot-agent\|sh\[" "$w/console-2.log" | tail -5 >&2
  addr=$(sed -n 's/.* found at \([0-9.:]*\) .*/\1/p' "$w/agent-status.log")
  [[ -n $addr ]] && ip netns exec $ns openssl s_client -connect "$addr" < /dev/null 2>/dev/null |
    openssl x509 -noout -subject -issuer -dates >&2 || true
  ip -n $ns neigh >&2 || true
  sleep 5
done
[[ -n $status_ok ]] || fail "agent-status: $(cat "$w/agent-status.log")"
cat "$w/agent-status.log"
grep -Eq "^ *replicas +0 of [0-9]+$" "$w/agent-status.log" || fail "the rebooted appliance runs replicas"
grep -Eq "^ *cache +0 B$" "$w/agent-status.log" || fail "the rebooted appliance's cache is not empty"
grep -Eq "^ *fetched from homes +0 B$" "$w/agent-status.log" || fail "the rebooted appliance remembers fetches"
kill -9 "$(cat "$w/qemu.pid")" 2>/dev/null || true
say "boot 2: no replica, an empty cache"
echo "APPLIANCE-NESTED RESULT boot_s=$boot1_s instantiate_s=$use_s memory_instantiate_s=$alice_use_s typed=${#REF} alice_typed=${#AREF} concurrent_replicas=$concurrent memory_restored=$memory_restored isolated=$isolated lost=$(( ${#REF} - ${#doc} )) xen_home=$xen_type total_s=$(( $(date +%s) - t0 ))"
