#!/bin/bash
# The home user's install, on a clean Debian 12: a fresh debootstrap root
# (minbase + systemd) gets slingshot-home_*.deb with `dpkg -i` (then
# `apt-get -f install` for its dependencies, as a user would), and must:
#   - be installed and configured, with /etc/slingshot/home.conf a conffile;
#   - have made the system user `slingshot` and /var/lib/slingshot (0700);
#   - ship a unit that systemd-analyze verify accepts;
#   - run `slingshot-home --help`, and the unit's own commands as its user:
#     `init` (ExecStartPre) and `run` (ExecStart), which must come up and
#     stop cleanly on SIGTERM.
#
#   - with GUEST_DIR (the test guest's vmlinuz and initrd.img, from a
#     build), follow the home user's guide: create a service and pair a
#     client (to a folder) as that user.
#
#   tests/packages/install_test.sh DEBS_DIR [GUEST_DIR]
# Needs root. Last line: INSTALL-TEST OK
set -euo pipefail

debs=$(cd "${1:?usage: install_test.sh DEBS_DIR}" && pwd)
deb=$(ls "$debs"/slingshot-home_*_amd64.deb 2>/dev/null | head -1)
[[ -n $deb ]] || { echo "install_test: no slingshot-home .deb in $debs (image-build/debs.sh)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "install_test: needs root (debootstrap, chroot)" >&2; exit 1; }
export PATH=$PATH:/usr/sbin:/sbin
root=$debs/install-root
cache=${SLINGSHOT_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slingshot/debs}/install-test
mkdir -p "$cache"
t0=$(date +%s)
fail() { echo "INSTALL-TEST FAILED: $*" >&2; exit 1; }
mounted=()
cleanup() { for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT

rm -rf "$root"
debootstrap --variant=minbase --cache-dir="$cache" --include=systemd bookworm "$root" \
  http://deb.debian.org/debian > "$debs/install-debootstrap.log" 2>&1 ||
  fail "debootstrap: $(tail -5 "$debs/install-debootstrap.log")"
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive "$@"; }
rm -f "$root/etc/apt/sources.list"
cp "$(dirname "$0")/../../image-build/debian.sources" "$root/etc/apt/sources.list.d/debian.sources"
cp "$deb" "$root/tmp/"
b=$(basename "$deb")

echo "install_test: dpkg -i $b on a clean bookworm root"
# Its dependencies are not there yet: dpkg leaves it unconfigured, and
# apt-get -f install brings them and configures it.
in_root apt-get update -qq > "$debs/install.log" 2>&1
in_root dpkg -i "/tmp/$b" >> "$debs/install.log" 2>&1 || true
in_root apt-get -f install -y -qq --no-install-recommends >> "$debs/install.log" 2>&1 ||
  fail "apt-get -f install: $(tail -5 "$debs/install.log")"
status=$(in_root dpkg-query -W -f '${Status}' slingshot-home)
[[ $status == "install ok installed" ]] || fail "slingshot-home is '$status' after install"
grep -qx /etc/slingshot/home.conf "$root/var/lib/dpkg/info/slingshot-home.conffiles" ||
  fail "/etc/slingshot/home.conf is not a conffile"
in_root getent passwd slingshot > /dev/null || fail "the slingshot user was not created"
owner=$(in_root stat -c '%U %a' /var/lib/slingshot)  # the chroot's user names, not the host's
[[ $owner == "slingshot 700" ]] || fail "/var/lib/slingshot is $owner, not slingshot 700"
[[ -L $root/etc/systemd/system/multi-user.target.wants/slingshot-home.service ]] ||
  fail "the unit is not enabled"
in_root systemd-analyze verify --man=no slingshot-home.service > "$debs/verify.log" 2>&1 ||
  fail "systemd-analyze verify: $(cat "$debs/verify.log")"

in_root slingshot-home --help > "$debs/help.log" || fail "slingshot-home --help failed"
grep -q "^Usage: slingshot-home COMMAND" "$debs/help.log" || fail "--help printed no usage"
in_root slingshot-home --version
[[ -f $root/usr/share/man/man1/slingshot-home.1.gz ]] || fail "no manual page"

# The unit's commands, as its user (systemd is not PID 1 in a chroot;
# setpriv execs the daemon itself, so SIGTERM reaches it as from systemd).
as_home() { in_root setpriv --reuid=slingshot --regid=slingshot --init-groups -- slingshot-home "$@"; }
as_home init > "$debs/init.log" 2>&1 || fail "init: $(cat "$debs/init.log")"
as_home init > /dev/null 2>&1 || fail "a second init (every start) failed"
# exec all the way down (chroot and setpriv exec too), so $! is the daemon
# itself and is stopped by its PID.
(exec chroot "$root" env DEBIAN_FRONTEND=noninteractive setpriv --reuid=slingshot --regid=slingshot --init-groups \
  -- slingshot-home run --listen 127.0.0.1:17390 --accel tcg) > "$debs/run.log" 2>&1 &
run=$!
up=
for _ in $(seq 100); do
  grep -q "listening\|serving" "$debs/run.log" && { up=1; break; }
  kill -0 $run 2>/dev/null || break
  sleep 0.2
done
[[ -n $up ]] || fail "slingshot-home run did not come up: $(cat "$debs/run.log")"
kill -TERM $run || true
wait $run || fail "slingshot-home run did not stop cleanly on SIGTERM: $(tail -3 "$debs/run.log")"
guest=${2:-}
if [[ -n $guest ]]; then
  cp "$guest/vmlinuz" "$guest/initrd.img" "$root/tmp/"
  as_home service create notepad --owner laptop --kernel /tmp/vmlinuz --initrd /tmp/initrd.img \
    --cmdline "quiet slingshot.disk=auto slingshot.autosave=1" --state-on-disk > "$debs/guide.log" 2>&1 ||
    fail "service create: $(cat "$debs/guide.log")"
  as_home service list | grep -q "^notepad" || fail "service list does not show notepad: $(as_home service list)"
  as_home pair laptop --address 192.0.2.1:7390 --out /var/lib/slingshot/laptop >> "$debs/guide.log" 2>&1 ||
    fail "pair --out: $(cat "$debs/guide.log")"
  [[ -f $root/var/lib/slingshot/laptop/cert.pem ]] || fail "pair --out wrote no client certificate"
  echo "install_test: the home user's guide: service created, client paired"
fi
echo "install_test: installed, enabled, ran and stopped in $(( $(date +%s) - t0 )) s"
echo "INSTALL-TEST OK"
