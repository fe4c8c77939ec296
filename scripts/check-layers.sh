#!/usr/bin/env bash
# Fails when a file of a core/ layer includes a header of a layer above it
# (docs/architecture.md, "Layers"). Each layer may include its own headers
# and those of the layers listed for it here; the CMake libraries link the
# same way, so an upward include also fails to compile, but this check says
# which line is wrong before the build does.
set -euo pipefail
cd "$(dirname "$0")/../core"

declare -A ALLOWED=(
  [base]="base"
  [store]="base store"
  [net]="base store net"
  [disk]="base store disk"
  [vm]="base vm"
  [service]="base store net service"
  [replica]="base store net disk vm service replica"
  [cli]="base cli"
)

bad=0
for layer in "${!ALLOWED[@]}"; do
  [ -d "$layer" ] || { echo "check-layers: core/$layer is missing" >&2; bad=1; continue; }
  while IFS= read -r hit; do
    file=${hit%%:*}
    rest=${hit#*:}
    line=${rest%%:*}
    used=$(sed -E 's#.*"slingshot/([a-z_]+)/.*#\1#' <<<"$rest")
    ok=0
    for a in ${ALLOWED[$layer]}; do [ "$a" = "$used" ] && ok=1; done
    if [ $ok -eq 0 ]; then
      echo "core/$file:$line: layer '$layer' includes a header of layer '$used' (allowed: ${ALLOWED[$layer]})" >&2
      bad=1
    fi
  done < <(grep -rnE '#include "slingshot/[a-z_]+/' "$layer" || true)
done
# Every layer folder is one the table knows.
for d in */; do
  d=${d%/}
  [ -n "${ALLOWED[$d]+x}" ] || { echo "check-layers: core/$d is a layer this script does not know" >&2; bad=1; }
done
if [ $bad -ne 0 ]; then
  echo "check-layers: upward includes found (see above); move the code down or the include up" >&2
  exit 1
fi
echo "check-layers: OK"
