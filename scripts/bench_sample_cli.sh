#!/usr/bin/env bash
# Speed of the real sampling path: the `dno sample` CLI end to end (process start, model load,
# chat template, batched decoding with EOS on and top-p, Parquet output), as a user runs it.
# Prompts are the 16 explain-a-topic chat prompts of crates/dno-model/examples/bench_sample.rs
# (repeated when more are asked for). Prints one table row per run.
#
# Usage: DNO=target/release/dno bash scripts/bench_sample_cli.sh [PROMPTS] [RUNS]
# Env: MODEL (default: the SmolLM2-135M-Instruct Q4_1 GGUF of scripts/fetch_smollm2.sh), K (8),
#      NEW (max new tokens, 128), T (0.7), TOP_P (0.95), MAX_BATCH (dno's default when unset),
#      EXTRA (more `dno sample` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
DNO="${DNO:-target/release/dno}"
MODEL="${MODEL:-$(bash scripts/fetch_smollm2.sh)}"
N="${1:-16}"
RUNS="${2:-2}"
K="${K:-8}"; NEW="${NEW:-128}"; T="${T:-0.7}"; TOP_P="${TOP_P:-0.95}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

topics=("the water cycle" "how vaccines work" "the history of the printing press" "photosynthesis"
  "why the sky is blue" "how a bicycle stays upright" "the rules of chess" "compound interest"
  "black holes" "the French revolution" "how to bake bread" "plate tectonics"
  "the immune system" "how airplanes fly" "recycling plastics" "the life of honey bees")
for ((i = 0; i < N; i++)); do
  t="${topics[i % 16]}"
  printf '{"id": "p%d", "prompt": "Please write a short, clear explanation of %s for a curious twelve-year-old student. Use simple words, one concrete example, and finish with a question."}\n' "$i" "$t"
done > "$tmp/prompts.jsonl"
"$DNO" -q prompts import "$tmp/prompts.jsonl" --out "$tmp/prompts.parquet" --prompt-field prompt --id-field id 2>/dev/null

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "# $DNO sample --model $(basename "$MODEL") -k $K --temperature $T --top-p $TOP_P --max-new-tokens $NEW ${MAX_BATCH:+--max-batch $MAX_BATCH} ${EXTRA:-} (chat template, EOS on)"
echo "| run | prompts | rows | generated tokens | wall s (process) | tok/s (wall) | hit max-new-tokens | load avg before |"
echo "|---|---|---|---|---|---|---|---|"
for ((r = 1; r <= RUNS; r++)); do
  load="$(cut -d' ' -f1 /proc/loadavg)"
  t0="$(date +%s.%N)"
  # shellcheck disable=SC2086
  "$DNO" -q sample --model "$MODEL" --prompts "$tmp/prompts.parquet" --out "$tmp/samples-$r.parquet" -k "$K" \
    --temperature "$T" --top-p "$TOP_P" --max-new-tokens "$NEW" --seed "$r" ${MAX_BATCH:+--max-batch "$MAX_BATCH"} ${EXTRA:-} 2> "$tmp/err"
  t1="$(date +%s.%N)"
  # dno's own last line: "samples: ROWS for P prompts -> OUT | TOKENS new tokens in ... | X% hit --max-new-tokens"
  line="$(grep '^samples: ' "$tmp/err" | tail -1)"
  [[ -n "$line" ]] || { cat "$tmp/err" >&2; exit 1; }
  rows="$(sed -E 's/^samples: ([0-9]+) for.*/\1/' <<< "$line")"
  tokens="$(sed -E 's/.*\| ([0-9]+) new tokens.*/\1/' <<< "$line")"
  hit="$(sed -E 's/.*\| ([0-9.]+%) hit.*/\1/' <<< "$line")"
  wall="$(echo "$t1 - $t0" | bc -l)"
  printf '| %d | %d | %d | %d | %.1f | %.1f | %s | %s |\n' "$r" "$N" "$rows" "$tokens" "$wall" "$(echo "$tokens / $wall" | bc -l)" "$hit" "$load"
done
