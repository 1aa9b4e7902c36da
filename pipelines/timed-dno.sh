#!/usr/bin/env bash
# Runs `$DNO_BIN "$@"` and appends one line "<subcommand> <output> <wall seconds> <peak RSS MiB>" to
# $DNO_TIMINGS. The real-model recipe passes it to the Makefile as DNO to time every stage.
set -uo pipefail
: "${DNO_BIN:=dno}" "${DNO_TIMINGS:=/dev/null}"
out=""
prev=""
for a in "$@"; do
    if [[ "$prev" == "--out" || "$prev" == "-o" ]]; then out="$a"; fi
    prev="$a"
done
stats="$(mktemp)"
/usr/bin/time -o "$stats" -f "%e %M" "$DNO_BIN" "$@"
rc=$?
# GNU time writes "Command exited with non-zero status N" first when the command fails.
read -r secs kb < <(tail -n 1 "$stats") || true
rm -f "$stats"
echo "$1 ${out:-.} ${secs:-?} $(( ${kb:-0} / 1024 ))" >>"$DNO_TIMINGS"
exit $rc
