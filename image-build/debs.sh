#!/bin/bash
# Builds the slingshot-home, slingshot-client and slingshot-agent .debs with
# dpkg-buildpackage from the project's tracked files (image-build/debian is
# the packaging), then checks them with lintian (errors fail the build).
#
#   image-build/debs.sh OUT_DIR
#
# The source is what git tracks, with uncommitted changes included (a
# `git stash create` snapshot), unpacked into OUT_DIR/src: nothing from a
# build directory leaks in. SOURCE_DATE_EPOCH comes from debian/changelog, so
# the same commit gives the same bytes (image-build/reproducible.sh checks).
set -euo pipefail

out=${1:?usage: debs.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in dpkg-buildpackage dh lintian help2man git; do
  command -v "$tool" >/dev/null || {
    echo "debs: $tool is missing; run scripts/install-deps.sh debs (or make debs)" >&2; exit 1; }
done

upstream=$(sed -n 's/^project(slingshot VERSION \([0-9.]*\).*/\1/p' "$top/CMakeLists.txt")
version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)
if [[ ${version%-*} != "$upstream" ]]; then
  echo "debs: debian/changelog says $version but CMakeLists.txt says $upstream; add a changelog entry (dch -v $upstream-1)" >&2
  exit 1
fi

rev=$(cd "$top" && git stash create 2>/dev/null || true)
rev=${rev:-HEAD}
src=$out/src/slingshot-$upstream
rm -rf "$out/src" && mkdir -p "$src"
(cd "$top" && git archive "$rev") | tar -x -C "$src"
cp -a "$here/debian" "$src/debian"
# Tracked files only; git archive leaves out the build directories.

t0=$(date +%s)
echo "debs: building slingshot $version in $src"
(cd "$src" && dpkg-buildpackage -b -us -uc -j"$(nproc)") > "$out/build.log" 2>&1 || {
  echo "debs: dpkg-buildpackage failed; its log ($out/build.log) ends:" >&2
  tail -30 "$out/build.log" >&2
  exit 1
}
t1=$(date +%s)
rm -f "$out"/*.deb "$out"/*.ddeb "$out"/*.buildinfo "$out"/*.changes
mv "$out"/src/*.deb "$out"/src/*.buildinfo "$out"/src/*.changes "$out"/
mv "$out"/src/*.ddeb "$out"/ 2>/dev/null || true

# lintian: errors fail; warnings are printed.
changes=$(ls "$out"/slingshot_*_amd64.changes)
lintian --tag-display-limit 0 "$changes" > "$out/lintian.txt" 2>&1 || true
cat "$out/lintian.txt"
if grep -q '^E: ' "$out/lintian.txt"; then
  echo "debs: lintian reports errors (above)" >&2
  exit 1
fi
echo "debs: built in $((t1 - t0)) s:"
(cd "$out" && for f in *.deb; do printf '  %-48s %6s KiB  sha256 %s\n' "$f" "$(( $(stat -c %s "$f") / 1024 ))" "$(sha256sum "$f" | cut -c1-16)"; done)
