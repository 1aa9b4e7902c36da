#!/usr/bin/env bash
# Issue 14's acceptance table: SmolLM2-135M DPO (bench_train: 24 pairs x 120 tokens, batches of
# 8, full fine-tune) in f32, bf16 with f32 master weights, and bf16 + gradient checkpointing
# (the output head is always chunked), with policy tokens/s, peak RSS (/usr/bin/time -v), the
# final loss and `dno train --dry-run`'s estimate; then the loss after 20 optimiser steps on the
# same 24 pairs (batches of 6, 5 epochs, lr 1e-6: the loss moves, but the random pairs are not yet
# memorised) in f32 and bf16 + checkpointing.
#
#   scripts/bench_precision.sh            # all rows (tens of minutes on 2 cores)
#   ROWS=table scripts/bench_precision.sh # the first table only
#   ROWS=loss scripts/bench_precision.sh  # the 20-step losses only
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --example bench_train >&2
BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_train"
run() { # args... -> "tokens/s|rss MiB|final loss|estimate MiB|load|loss at step 1"
    local log out
    log=$(mktemp); out=$(mktemp)
    # shellcheck disable=SC2068
    /usr/bin/time -v "$BIN" $@ > "$out" 2> "$log"
    local tps rss loss est
    tps=$(awk -F'|' '/^\| DPO/ { gsub(/ /, "", $7); print $7 }' "$out")
    rss=$(( $(sed -n 's/^\s*Maximum resident set size (kbytes): \([0-9]*\)$/\1/p' "$log") / 1024 ))
    loss=$(sed -n 's/^final loss (step [0-9]*): \([0-9.]*\)$/\1/p' "$out")
    est=$(sed -n 's/^estimated peak MiB.*: \([0-9]*\)$/\1/p' "$out")
    first=$(sed -n 's/^step 1 loss \([0-9.]*\) .*$/\1/p' "$log")
    echo "$tps|$rss|$loss|$est|$(sed -n 's/^wall time.*load average before: \(.*\), after: \(.*\)$/\1 -> \2/p' "$out")|$first"
    rm -f "$log" "$out"
}
W="--steps 3 --batch 8 --seq-len 120"
if [ "${ROWS:-all}" != loss ]; then
echo "| run (SmolLM2-135M DPO, 24 pairs x 120 tokens, CPU) | policy tokens/s | peak RSS MiB | RSS vs f32 | loss after 3 steps | estimated peak MiB | estimate / measured | load average (before -> after) |"
echo "|---|---|---|---|---|---|---|---|"
base_rss=""
for row in "f32|--dtype f32" "bf16 + f32 master weights|--dtype bf16" "bf16 + gradient checkpointing + chunked head|--dtype bf16 --gradient-checkpointing"; do
    name=${row%%|*}; args=${row#*|}
    IFS='|' read -r tps rss loss est load <<< "$(run $W $args)"
    base_rss=${base_rss:-$rss}
    echo "| $name (\`$args\`) | $tps | $rss | $(awk -v r="$rss" -v b="$base_rss" 'BEGIN { printf "%.0f%%", 100 * r / b }') | $loss | $est | $(awk -v e="$est" -v m="$rss" 'BEGIN { printf "%.2f", e / m }') | $load |"
done
fi
[ "${ROWS:-all}" = table ] && exit 0
[ "${ROWS:-all}" = loss ] || echo
echo "| 20 optimiser steps (24 pairs x 120 tokens, batch 6, 5 epochs, lr 1e-6) | loss at step 1 | loss after step 20 | relative to f32 |"
echo "|---|---|---|---|"
L="--steps 4 --batch 6 --seq-len 120 --epochs 5 --lr 1e-6"
f32_loss=""
for row in "f32|--dtype f32" "bf16 + gradient checkpointing|--dtype bf16 --gradient-checkpointing"; do
    name=${row%%|*}; args=${row#*|}
    IFS='|' read -r _ _ loss _ _ first <<< "$(run $L $args)"
    f32_loss=${f32_loss:-$loss}
    echo "| $name | $first | $loss | $(awk -v l="$loss" -v b="$f32_loss" 'BEGIN { printf "%+.2f%%", 100 * (l - b) / b }') |"
done
