#!/usr/bin/env bash
# A benchmark's smoke test: runs the benchmark and passes only if it exits 0
# and prints a RESULT line matching the pattern (ctest's own
# PASS_REGULAR_EXPRESSION would ignore the exit status).
#   smoke.sh PATTERN COMMAND [ARGS...]
set -uo pipefail
pattern=$1
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ $rc -ne 0 ]; then
  echo "smoke: $1 exited with status $rc" >&2
  exit 1
fi
if ! grep -Eq "$pattern" <<<"$out"; then
  echo "smoke: $1 printed no line matching: $pattern" >&2
  exit 1
fi
