#!/usr/bin/env bash
# Constraint-following DNO on SmolLM2-135M-Instruct, every stage on the CPU, no judge server: the
# oracle is `--oracle verifier --verify constraints` (the fraction of each prompt's verifiable
# constraints met; schemas/constraints.md) on the prompts of fixtures/constraints/.
#
#   1. DNO-Prct: T = 3 rounds, each on fresh prompts (train.jsonl split into T chunks), K = 4
#      samples, pairs ranked by win-rate, DPO against the previous iterate;
#   2. the soft-target `dno` loss (Alg. 1, Eq. 8) for one round on the same first-round data;
#   3. offline DPO: one round on pi_1's own samples of all T chunks, capped at DNO-Prct's pair count
#      (same epochs, hence the same optimiser steps);
#   each evaluated greedily against pi_1 on the 128 held-out prompts (eval.jsonl) with the same
#   oracle: win-rate, strict / loose constraint accuracy. Report: $RUN/report/ (one series per run);
#   wall time and peak RSS of every stage: $RUN/timings.tsv (pipelines/timed-dno.sh).
#
# Settings: pipelines/constraints.mk; environment variables override them (K, MAX_NEW, LR, ...),
# plus N_TRAIN (prompts for all rounds, default 400), N_EVAL (default 128) and RUN.
# Smoke test (a few minutes): T=1 N_TRAIN=4 N_EVAL=2 K=4 MAX_NEW=16 RUN=runs/constraints-smoke bash pipelines/recipe-constraints.sh
# (a round whose samples all tie gives no pairs, and `dno train` then stops with "no training examples").
#
# Measured (README, "Instruction-following constraints"): 1858 s (31 min) on the 2-core machine,
# 2026-12-02, of which sampling ~1000 s (3436 responses, <= 64 new tokens each) and training ~860 s
# (5 trainings, 116-355 s each, peak RSS ~5.7 GB in f32); annotate / pair / eval / report take
# seconds. DNO-Prct at iteration 3: 64.5% [59.0, 69.9] vs pi_1, strict accuracy 41.4% vs 22.7%.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${RUN:-runs/constraints}"
case "$RUN" in /*) ;; *) RUN="$(pwd)/$RUN" ;; esac
N_TRAIN="${N_TRAIN:-400}"
N_EVAL="${N_EVAL:-128}"
export T="${T:-3}"
if [ -z "${DNO:-}" ]; then
  cargo build --release -q -p dno-cli
  DNO="${CARGO_TARGET_DIR:-target}/release/dno"
fi
DNO="$(cd "$(dirname "$DNO")" && pwd)/$(basename "$DNO")"
GGUF="${MODEL:-${DNO_MODELS:-$HOME/.cache/dno/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -f "$GGUF" ] || GGUF="$(scripts/fetch_smollm2.sh)"
export MODEL="$GGUF"
mkdir -p "$RUN"
export DNO_BIN="$DNO" DNO_TIMINGS="$RUN/timings.tsv"
TIMED="$(pwd)/pipelines/timed-dno.sh"
MAKE=(make -s -f pipelines/Makefile CONFIG=pipelines/constraints.mk DNO="$TIMED")
start=$(date +%s)

# Prompts: the first N_TRAIN training prompts split into T chunks (one per round), N_EVAL held out.
total=$(wc -l < fixtures/constraints/train.jsonl)
[ "$N_TRAIN" -le "$total" ] || { echo "N_TRAIN=$N_TRAIN exceeds the $total training prompts" >&2; exit 2; }
[ "$N_TRAIN" -ge "$T" ] || { echo "N_TRAIN=$N_TRAIN is smaller than T=$T" >&2; exit 2; }
head -n "$N_EVAL" fixtures/constraints/eval.jsonl > "$RUN/eval.jsonl"
"$DNO" prompts import "$RUN/eval.jsonl" --out "$RUN/eval.parquet" --constraints-field constraints --force
PARTS=()
for t in $(seq 1 "$T"); do
  from=$(( (t - 1) * N_TRAIN / T + 1 )); to=$(( t * N_TRAIN / T ))
  sed -n "${from},${to}p" fixtures/constraints/train.jsonl > "$RUN/prompts-iter-$t.jsonl"
  "$DNO" prompts import "$RUN/prompts-iter-$t.jsonl" --out "$RUN/prompts-iter-$t.parquet" --constraints-field constraints --force
  PARTS+=("PROMPTS_$t=$RUN/prompts-iter-$t.parquet")
done
COMMON=(EVAL_PROMPTS="$RUN/eval.parquet")

# 1. DNO-Prct: on-policy rounds, reference = previous iterate (Alg. 2, Eq. 13).
"${MAKE[@]}" RUN="$RUN/dno-prct" "${COMMON[@]}" "${PARTS[@]}" PROMPTS=unused

# Data shared with round 1 / pi_1 is copied with its timestamps (make then does not redo it):
# pi_1's eval baseline, and round 1's samples and preferences.
share() {  # share FROM TO
  mkdir -p "$(dirname "$2")"
  cp -p "$1" "$2"
}
# 2. Soft-target `dno` loss, one round on round 1's data.
for f in baseline/samples.parquet iter-1/samples.parquet iter-1/preferences.parquet; do
  share "$RUN/dno-prct/$f" "$RUN/dno-soft/$f"
done
"${MAKE[@]}" RUN="$RUN/dno-soft" "${COMMON[@]}" "PROMPTS_1=$RUN/prompts-iter-1.parquet" PROMPTS=unused T=1 LOSS=dno STRATEGY=soft

# 3. Offline DPO: pi_1's samples of every chunk (round 1's plus the rest, as shards of one
#    directory), at most DNO-Prct's pair count in one round.
OFF="$RUN/offline-dpo"
share "$RUN/dno-prct/baseline/samples.parquet" "$OFF/baseline/samples.parquet"
if [ ! -e "$OFF/iter-1/samples.parquet" ]; then
  tmp="$OFF/iter-1/samples.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  cp -p "$RUN/dno-prct/iter-1/samples.parquet" "$tmp/part-1.parquet"
  if [ "$T" -gt 1 ]; then
    from=$(( N_TRAIN / T + 1 ))
    sed -n "${from},${N_TRAIN}p" fixtures/constraints/train.jsonl > "$RUN/prompts-rest.jsonl"
    "$DNO" prompts import "$RUN/prompts-rest.jsonl" --out "$RUN/prompts-rest.parquet" --constraints-field constraints --force
    # The same sampling settings as pipelines/Makefile's round 1 (constraints.mk's K, MAX_NEW, ...).
    "$TIMED" sample --model "$GGUF" --prompts "$RUN/prompts-rest.parquet" --out "$tmp/part-2.parquet" \
      -k "${K:-4}" --temperature "${TEMPERATURE:-0.7}" --top-p "${TOP_P:-0.95}" --max-new-tokens "${MAX_NEW:-64}" \
      --seed "${SEED:-0}" --policy iter-1 --force
  fi
  mv "$tmp" "$OFF/iter-1/samples.parquet"
fi
npairs=0
for t in $(seq 1 "$T"); do
  n=$("$DNO" validate "$RUN/dno-prct/iter-$t/pairs.parquet" | sed -n 's/^ok: \([0-9]*\) rows.*/\1/p'); npairs=$((npairs + n))
done
# (PROMPTS_1 is not read: iter-1/samples.parquet exists.)
"${MAKE[@]}" RUN="$OFF" "${COMMON[@]}" "PROMPTS_1=$RUN/prompts-iter-1.parquet" PROMPTS=unused T=1 \
  "PAIR_FLAGS=--basis win-rate --max-pairs-per-prompt 1 --limit $npairs"

"$TIMED" report "$RUN/dno-prct" "$RUN/dno-soft" "$OFF" --out "$RUN/report"
# 4. Head to head: DNO-Prct's last iterate against offline DPO on the same held-out prompts.
"$TIMED" eval --candidate "$RUN/dno-prct/iter-$T/eval_samples.parquet" --baseline "$OFF/iter-1/eval_samples.parquet" \
  --out "$RUN/head-to-head/eval.parquet" --oracle verifier --verify constraints --force
echo "recipe-constraints: $(( $(date +%s) - start )) s in all; report: $RUN/report/report.md; per stage (subcommand, output, wall s, peak RSS MiB):"
column -t "$RUN/timings.tsv" 2>/dev/null || cat "$RUN/timings.tsv"
