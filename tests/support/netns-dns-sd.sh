#!/bin/bash
# DNS-SD inside one network namespace, as on a machine of its own: a D-Bus
# system bus (the socket DIR/bus-NAME; programs find it through
# DBUS_SYSTEM_BUS_ADDRESS=unix:path=DIR/bus-NAME) and an avahi-daemon on it,
# published as host NS on interface IFACE. Used by the e2e world and the
# nested appliance test.
#   netns-dns-sd.sh up NS DIR NAME IFACE    the bus and the avahi-daemon
#   netns-dns-sd.sh avahi NS DIR NAME       (re)start the avahi-daemon only
# Logs: DIR/avahi-NAME.log; the daemon's PID: DIR/avahi-NAME.pid.
set -euo pipefail
cmd=${1:?usage: netns-dns-sd.sh up NS DIR NAME IFACE | avahi NS DIR NAME}
ns=$2 dir=$3 name=$4
here=$(cd "$(dirname "$0")" && pwd)
# avahi-daemon keeps its pid file in /run/avahi-daemon: a tmpfs of its own
# in a mount namespace of its own, so the daemons of different namespaces
# do not see each other's.
start_avahi() {
  ip netns exec "$ns" unshare -m sh -c "mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon &&
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$dir/bus-$name exec avahi-daemon --no-drop-root --no-chroot --no-rlimits \
    -f $dir/avahi-$name.conf" >>"$dir/avahi-$name.log" 2>&1 </dev/null &
  # ip netns exec, unshare and sh all exec: $! is the daemon.
  echo $! >"$dir/avahi-$name.pid"
}
case $cmd in
  up)
    sed "s|@SOCKET@|$dir/bus-$name|" "$here/bus.conf.in" >"$dir/bus-$name.conf"
    sed "s|@HOST@|$ns|; s|@IFACE@|${5:?the interface}|" "$here/avahi-daemon.conf.in" >"$dir/avahi-$name.conf"
    ip netns exec "$ns" dbus-daemon --config-file="$dir/bus-$name.conf" --fork >/dev/null
    start_avahi ;;
  avahi) start_avahi ;;
  *) echo "usage: netns-dns-sd.sh up NS DIR NAME IFACE | avahi NS DIR NAME" >&2; exit 2 ;;
esac
