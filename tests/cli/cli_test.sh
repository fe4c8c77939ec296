#!/usr/bin/env bash
# Black-box test of the three programs: INI config files, precedence,
# exit codes (0 ok, 1 failed, 2 usage) and that errors say what to do.
# Usage: cli_test.sh BUILD_DIR
set -u
B=$1
HOME_BIN=$B/home/slingshot-home
AGENT_BIN=$B/dom0-agent/slingshot-agent
CLIENT_BIN=$B/client/slingshot-client
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fails=0

# expect CODE PATTERN -- command...: exit code CODE and output matching PATTERN.
expect() {
  local code=$1 pattern=$2
  shift 3
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> exit $rc (want $code), output:"
    echo "$out" | sed 's/^/    /'
    echo "    (wanted /$pattern/)"
    fails=$((fails + 1))
  fi
}

head -c 300000 /dev/urandom > "$W/disk.img"

# Options come from the config file...
printf 'store = %s\ncompression-level = 3\n' "$W/from-config" > "$W/home.conf"
expect 0 "created transactional chunk store in $W/from-config" -- "$HOME_BIN" store init --config "$W/home.conf"
expect 0 "imported" -- "$HOME_BIN" store import-disk "$W/disk.img" --name d --config "$W/home.conf"
expect 0 "disk/d +disk-table" -- "$HOME_BIN" store refs --config "$W/home.conf"
# ...and the command line wins over it.
expect 1 "no chunk store in $W/elsewhere.*store init" -- "$HOME_BIN" store refs --config "$W/home.conf" --store "$W/elsewhere"
# A config key that no option has is an error, not ignored.
printf 'stroe = /tmp/typo\n' > "$W/typo.conf"
expect 2 "unrecognised option 'stroe'" -- "$HOME_BIN" store stats --config "$W/typo.conf"
expect 2 "does not exist" -- "$HOME_BIN" store stats --config "$W/missing.conf"
# One config file serves every command: another command's option (run's
# listen) is skipped, not refused (the packaged /etc/slingshot/home.conf).
printf 'store = %s\nlisten = 0.0.0.0:7390\n' "$W/from-config" > "$W/shared.conf"
expect 0 "disk/d +disk-table" -- "$HOME_BIN" store refs --config "$W/shared.conf"

# Usage errors exit 2 and say how to get help.
expect 2 "unknown command 'stor init'" -- "$HOME_BIN" stor init
expect 2 "the option '--name' is required" -- "$HOME_BIN" store import-disk "$W/disk.img" --store "$W/from-config"
expect 2 "Commands:" -- "$HOME_BIN"
expect 0 "Options of 'store import-disk'" -- "$HOME_BIN" store import-disk --help

# Failures exit 1 and say what was wrong.
expect 1 "no ref named 'disk/nope'" -- "$HOME_BIN" store export-disk nope "$W/out" --store "$W/from-config"
expect 0 "created home key" -- "$HOME_BIN" key init --key "$W/home.key"
expect 1 "refusing to overwrite" -- "$HOME_BIN" key init --key "$W/home.key"
chmod 644 "$W/home.key"
expect 2 "chmod 600" -- "$HOME_BIN" key show --key "$W/home.key"
printf 'not a bundle' > "$W/junk.tar.zst"
expect 1 "Corruption" -- "$HOME_BIN" bundle import "$W/junk.tar.zst" --store "$W/from-config"

# The agent's cache and the client's log.
expect 0 "chunks +0" -- "$AGENT_BIN" cache stats --cache "$W/cache" --cache-budget-mb 1
expect 2 "does not hold a chunk cache" -- "$AGENT_BIN" cache clear --cache "$W/from-config/packs"
expect 0 "cleared cache" -- "$AGENT_BIN" cache clear --cache "$W/cache"
expect 1 "no event log" -- "$CLIENT_BIN" log stats --log "$W/no-log"

# Which hypervisor the agent picks, and clear refusals.
expect 0 "hypervisor +qemu-tcg" -- "$AGENT_BIN" hypervisor probe --hypervisor qemu --accel tcg
expect 0 "not running under Xen" -- "$AGENT_BIN" hypervisor probe --accel tcg --log-level info
expect 2 "auto, qemu or xen" -- "$AGENT_BIN" hypervisor probe --hypervisor vmware
expect 1 "install qemu-system-x86" -- "$AGENT_BIN" hypervisor probe --hypervisor qemu --qemu no-such-qemu
expect 1 "dom0" -- "$AGENT_BIN" hypervisor probe --hypervisor xen

# The home CA, credentials, the chunk service, and a stick filled from it.
T="$W/tls"
expect 0 "created the home CA" -- "$HOME_BIN" ca init --tls-dir "$T" --name testhome
expect 1 "already holds a CA" -- "$HOME_BIN" ca init --tls-dir "$T"
expect 0 "issued client \"laptop\"" -- "$HOME_BIN" credentials issue laptop --role client --out "$W/laptop" --tls-dir "$T"
expect 2 "client, surrogate or home" -- "$HOME_BIN" credentials issue x --role admin --out "$W/x" --tls-dir "$T"
[ "$(stat -c %a "$W/laptop/key.pem")" = 600 ] || { echo "FAIL: client key is not 0600"; fails=$((fails + 1)); }
chmod 644 "$W/laptop/key.pem"
expect 2 "readable by others.*chmod 600" -- "$CLIENT_BIN" portable sync "$W/stick" --home 127.0.0.1:1 --credentials "$W/laptop" --ref disk/d
chmod 600 "$W/laptop/key.pem"
PORT=$((20000 + RANDOM % 20000))
"$HOME_BIN" key init --key "$W/run.key" > /dev/null
"$HOME_BIN" run --store "$W/from-config" --key "$W/run.key" --tls-dir "$T" --services-dir "$W/services" \
  --listen 127.0.0.1:$PORT > "$W/serve.out" 2>&1 &
SERVE=$!
for _ in $(seq 50); do grep -q "listening on" "$W/serve.out" && break; sleep 0.1; done
expect 0 "added +5 chunks" -- "$CLIENT_BIN" portable sync "$W/stick" --home 127.0.0.1:$PORT --credentials "$W/laptop" --ref disk/d
expect 0 "already there +5 chunks" -- "$CLIENT_BIN" portable sync "$W/stick" --home 127.0.0.1:$PORT --credentials "$W/laptop" --ref disk/d
expect 0 "chunks +5" -- "$CLIENT_BIN" portable status "$W/stick"
expect 1 "NotFound.*no/such" -- "$CLIENT_BIN" portable sync "$W/stick" --home 127.0.0.1:$PORT --credentials "$W/laptop" --ref no/such
# Credentials from another home are refused, and say so.
expect 0 "created the home CA" -- "$HOME_BIN" ca init --tls-dir "$W/other-tls"
expect 0 "issued" -- "$HOME_BIN" credentials issue eve --role client --out "$W/eve" --tls-dir "$W/other-tls"
expect 1 "PermissionDenied.*not issued by the CA in our credentials" -- "$CLIENT_BIN" portable sync "$W/stick2" --home 127.0.0.1:$PORT --credentials "$W/eve" --ref disk/d
# The agent serves the disk on demand over NBD: stick first, then home. A
# surrogate's certificate without a capability reads nothing.
expect 0 "issued surrogate" -- "$HOME_BIN" credentials issue hotspot --role surrogate --out "$W/hotspot" --tls-dir "$T"
expect 1 "PermissionDenied.*holds no capability" -- "$AGENT_BIN" disk serve disk/d --home 127.0.0.1:$PORT --credentials "$W/hotspot" --socket "$W/y.sock" --cache "$W/agent-cache"
"$AGENT_BIN" disk serve disk/d --home 127.0.0.1:$PORT --credentials "$W/laptop" --stick "$W/stick" \
  --socket "$W/disk.sock" --cache "$W/agent-cache" --no-prefetch > "$W/agent.out" 2>&1 &
AGENT=$!
for _ in $(seq 50); do grep -q "serving disk/d" "$W/agent.out" && break; sleep 0.1; done
if nbdcopy "nbd+unix:///disk?socket=$W/disk.sock" "$W/served.img" && cmp -s "$W/disk.img" "$W/served.img"; then :; else
  echo "FAIL: the agent's NBD export does not read back the disk"; fails=$((fails + 1)); fi
kill -TERM $AGENT
wait $AGENT
grep -qE "stick .* 5 chunks" "$W/agent.out" || { echo "FAIL: the stick did not supply the chunks:"; cat "$W/agent.out"; fails=$((fails + 1)); }
expect 1 "PermissionDenied" -- "$AGENT_BIN" disk serve disk/d --home 127.0.0.1:$PORT --credentials "$W/eve" --socket "$W/x.sock" --cache "$W/agent-cache"
kill -TERM $SERVE
wait $SERVE
grep -q "stopping on Terminated" "$W/serve.out" || { echo "FAIL: run did not stop cleanly:"; cat "$W/serve.out"; fails=$((fails + 1)); }
expect 1 "Unavailable.*cannot connect" -- "$CLIENT_BIN" portable sync "$W/stick" --home 127.0.0.1:$PORT --credentials "$W/laptop" --ref disk/d
expect 1 "holds no Slingshot chunks" -- "$CLIENT_BIN" portable status "$W"

# Pairing over the network: a wrong code, then the right one; the code is
# then spent. The client's mistakes are caught before it connects.
H="--store $W/pair-store --key $W/pair.key --tls-dir $W/pair-tls --services-dir $W/pair-services"
"$HOME_BIN" init $H --name cli-home >/dev/null
PPORT=$((21000 + RANDOM % 20000))
"$HOME_BIN" pair laptop --address 127.0.0.1:7390 --listen 127.0.0.1:$PPORT --timeout 30 $H > "$W/pair.out" 2>&1 &
PAIR=$!
for _ in $(seq 50); do grep -q -- "--code" "$W/pair.out" && break; sleep 0.1; done
CODE=$(sed -n 's/.*--code \([0-9A-Z-]*\).*/\1/p' "$W/pair.out")
expect 2 "needs --code" -- "$CLIENT_BIN" pair 127.0.0.1:$PPORT --state-dir "$W/client"
expect 2 "'U', which no code has" -- "$CLIENT_BIN" pair 127.0.0.1:$PPORT --code UUUU-0000-0000-0000-0000 --state-dir "$W/client"
expect 1 "wrong pairing code" -- "$CLIENT_BIN" pair 127.0.0.1:$PPORT --code 0000-0000-0000-0000-0000 --state-dir "$W/client"
expect 0 "paired as \"laptop\" with the home at 127.0.0.1:7390" -- "$CLIENT_BIN" pair 127.0.0.1:$PPORT --code "$CODE" --state-dir "$W/client"
wait $PAIR || { echo "FAIL: slingshot-home pair failed:"; cat "$W/pair.out"; fails=$((fails + 1)); }
grep -q 'paired client "laptop"' "$W/pair.out" || { echo "FAIL: the home did not report the pairing:"; cat "$W/pair.out"; fails=$((fails + 1)); }
expect 1 "cannot connect" -- "$CLIENT_BIN" pair 127.0.0.1:$PPORT --code "$CODE" --state-dir "$W/client2"
[ "$(stat -c %a "$W/client/pairing/key.pem")" = 600 ] || { echo "FAIL: the client's key is not 0600"; fails=$((fails + 1)); }
expect 1 "cannot reach avahi-daemon|no surrogate called" -- env DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/no-bus "$CLIENT_BIN" use cafe --state-dir "$W/client" --discover-ms 500

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all CLI checks passed"
