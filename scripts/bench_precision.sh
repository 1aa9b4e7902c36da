#!/usr/bin/env bash
# Issue 14's acceptance table: SmolLM2-135M DPO (bench_train: 24 pairs x 120 tokens, batches of
# 8, full fine-tune) in f32, bf16 with f32 master weights, and bf16 + gradient checkpointing
# (the output head is always chunked), with policy tokens/s, peak RSS (/usr/bin/time -v), the
# final loss and `dno train --dry-run`'s estimate; then the loss after 20 optimiser steps
# (8 pairs x 5 epochs, batches of 2, lr 1e-5) in f32 and bf16 + checkpointing.
#
#   scripts/bench_precision.sh            # all rows (tens of minutes on 2 cores)
#   ROWS=table scripts/bench_precision.sh # the first table only
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --example bench_train >&2
BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_train"
run() { # args... -> "tokens/s|rss MiB|final loss|estimate MiB"
    local log out
    log=$(mktemp); out=$(mktemp)
    # shellcheck disable=SC2068
    /usr/bin/time -v "$BIN" $@ > "$out" 2> "$log"
    local tps rss loss est
    tps=$(awk -F'|' '/^\| DPO/ { gsub(/ /, "", $7); print $7 }' "$out")
    rss=$(( $(sed -n 's/^\s*Maximum resident set size (kbytes): \([0-9]*\)$/\1/p' "$log") / 1024 ))
    loss=$(sed -n 's/^final loss (step [0-9]*): \([0-9.]*\)$/\1/p' "$out")
    est=$(sed -n 's/^estimated peak MiB.*: \([0-9]*\)$/\1/p' "$out")
    echo "$tps|$rss|$loss|$est|$(sed -n 's/^wall time.*load average before: \(.*\), after: \(.*\)$/\1 -> \2/p' "$out")"
    rm -f "$log" "$out"
}
W="--steps 3 --batch 8 --seq-len 120"
echo "| run (SmolLM2-135M DPO, 24 pairs x 120 tokens, CPU) | policy tokens/s | peak RSS MiB | RSS vs f32 | loss after 3 steps | estimated peak MiB | estimate / measured | load average (before -> after) |"
echo "|---|---|---|---|---|---|---|---|"
base_rss=""
for row in "f32|--dtype f32" "bf16 + f32 master weights|--dtype bf16" "bf16 + gradient checkpointing + chunked head|--dtype bf16 --gradient-checkpointing"; do
    name=${row%%|*}; args=${row#*|}
    IFS='|' read -r tps rss loss est load <<< "$(run $W $args)"
    base_rss=${base_rss:-$rss}
    echo "| $name (\`$args\`) | $tps | $rss | $(awk -v r="$rss" -v b="$base_rss" 'BEGIN { printf "%.0f%%", 100 * r / b }') | $loss | $est | $(awk -v e="$est" -v m="$rss" 'BEGIN { printf "%.2f", e / m }') | $load |"
done
[ "${ROWS:-all}" = table ] && exit 0
echo
echo "| 20 optimiser steps (8 pairs x 5 epochs, batch 2, lr 1e-5) | loss after step 20 | relative to f32 |"
echo "|---|---|---|"
L="--steps 4 --batch 2 --seq-len 120 --epochs 5 --lr 1e-5"
f32_loss=""
for row in "f32|--dtype f32" "bf16 + gradient checkpointing|--dtype bf16 --gradient-checkpointing"; do
    name=${row%%|*}; args=${row#*|}
    IFS='|' read -r _ _ loss _ _ <<< "$(run $L $args)"
    f32_loss=${f32_loss:-$loss}
    echo "| $name | $loss | $(awk -v l="$loss" -v b="$f32_loss" 'BEGIN { printf "%+.2f%%", 100 * (l - b) / b }') |"
done
