#!/usr/bin/env bash
# Compares `dno train --dry-run`'s peak-memory estimate (dno_train::memory) with the peak RSS
# measured by /usr/bin/time -v on real CPU training runs (bench_train: SmolLM2-135M DPO, full
# fine-tune, synthetic pairs). Prints a markdown table; the README's memory section records it.
#
#   scripts/check_memory_model.sh            # the configurations below
#   CONFIGS="--steps 1 --batch 4|..." scripts/check_memory_model.sh
#
# Each configuration is one bench_train argument list; runs take minutes each on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dno-train --example bench_train >&2
BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_train"
IFS='|' read -r -a configs <<< "${CONFIGS:---steps 3 --batch 8 --seq-len 120|--steps 3 --batch 8 --seq-len 120 --gradient-checkpointing|--steps 1 --batch 4 --seq-len 240 --prompt-len 40}"
echo "| bench_train arguments | estimated peak MiB | measured peak RSS MiB | estimate / measured |"
echo "|---|---|---|---|"
for args in "${configs[@]}"; do
    log=$(mktemp)
    # shellcheck disable=SC2086
    /usr/bin/time -v "$BIN" $args > "$log.out" 2> "$log"
    est=$(sed -n 's/^estimated peak MiB.*: \([0-9]*\)$/\1/p' "$log.out")
    rss_kb=$(sed -n 's/^\s*Maximum resident set size (kbytes): \([0-9]*\)$/\1/p' "$log")
    rss=$((rss_kb / 1024))
    echo "| \`$args\` | $est | $rss | $(awk -v e="$est" -v m="$rss" 'BEGIN { printf "%.2f", e / m }') |"
    rm -f "$log" "$log.out"
done
