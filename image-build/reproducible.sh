#!/bin/bash
# Checks that the packages and the appliance rebuild bit for bit: builds the
# .debs and the ISO a second time, in other directories, and compares them
# with the first build's (BUILD/debs and BUILD/appliance, from make
# appliance).
#
#   image-build/reproducible.sh BUILD_DIR
#
# The .debs must be identical. The ISO must be identical too; when it is
# not, every file that differs is listed (inside the ISO and inside its
# squashfs) and diffoscope shows how, in BUILD_DIR/repro/*.diff.
# Last line: REPRODUCIBLE debs=N/N iso=identical|differs
set -euo pipefail

build=$(cd "${1:?usage: reproducible.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
a_debs=$build/debs
a_iso=$build/appliance/slingshot-appliance.iso
r=$build/repro
[[ -f $a_iso ]] || { echo "reproducible: $a_iso is missing; run make appliance first" >&2; exit 1; }
rm -rf "$r" && mkdir -p "$r"
t0=$(date +%s)

echo "reproducible: building the .debs again in $r/debs"
"$here/debs.sh" "$r/debs" > "$r/debs.log" 2>&1 || { tail -20 "$r/debs.log" >&2; exit 1; }
same=0 total=0 bad=()
for f in "$a_debs"/*.deb; do
  b=$r/debs/$(basename "$f")
  total=$((total + 1))
  if [[ -f $b ]] && cmp -s "$f" "$b"; then
    same=$((same + 1))
  else
    bad+=("$(basename "$f")")
    diffoscope --text "$r/$(basename "$f").diff" "$f" "$b" > /dev/null 2>&1 || true
  fi
done
echo "reproducible: $same of $total .debs identical"
for d in "${bad[@]}"; do echo "  differs: $d (see $r/$d.diff)"; done

echo "reproducible: building the ISO again in $r/appliance (from the same .debs)"
"$here/appliance.sh" "$r/appliance" "$a_debs" > "$r/appliance.log" 2>&1 || { tail -20 "$r/appliance.log" >&2; exit 1; }
b_iso=$r/appliance/slingshot-appliance.iso
iso=identical
if ! cmp -s "$a_iso" "$b_iso"; then
  iso=differs
  # What differs, file by file: the ISO's files, then the squashfs's.
  for side in a b; do
    src=$a_iso; [[ $side == b ]] && src=$b_iso
    mkdir -p "$r/iso-$side"
    xorriso -osirrox on -indev "$src" -extract / "$r/iso-$side" > /dev/null 2>&1
    unsquashfs -no-progress -d "$r/root-$side" "$r/iso-$side/live/filesystem.squashfs" > /dev/null
  done
  echo "reproducible: the ISOs differ; files that differ:"
  (cd "$r" && diff -rq iso-a iso-b | sed 's/^/  iso: /') || true
  # (diff cannot compare device nodes; it names them even when equal)
  (cd "$r" && diff -rq --no-dereference root-a root-b | grep -v 'is a character special file' |
     sed 's/^/  root: /') || true
  cmp -l "$a_iso" "$b_iso" | wc -l | sed 's/^/  bytes that differ in the ISO: /'
  diffoscope --text "$r/iso.diff" "$a_iso" "$b_iso" > /dev/null 2>&1 || true
  echo "  (diffoscope: $r/iso.diff)"
fi
echo "reproducible: done in $(( $(date +%s) - t0 )) s"
echo "REPRODUCIBLE debs=$same/$total iso=$iso"
[[ $same == "$total" && $iso == identical ]]
