#!/usr/bin/env bash
# The embedded quickstart: DNO teaches a tiny Llama-architecture policy to add numbers.
# No downloads beyond crates. Steps:
#   1. `dno demo init`: a random tiny policy and an addition task with verifiable answers;
#   2. `dno train --loss sft`: an imperfect SFT policy pi_1;
#   3. T=3 DNO-Prct iterations (pipelines/Makefile) with the verifier oracle, each evaluated
#      against pi_1 on held-out prompts;
#   4. the same data budget spent offline (DPO on pi_1's samples only), and the soft-target
#      `dno` loss (Alg. 1, Eq. 8) beside `dpo`, for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${RUN:-runs/quickstart}"
T="${T:-3}"
if [ -z "${DNO:-}" ]; then
  cargo build --release -q -p dno-cli
  DNO="${CARGO_TARGET_DIR:-target}/release/dno"
fi
DNO="$(cd "$(dirname "$DNO")" && pwd)/$(basename "$DNO")"
start=$(date +%s)
mkdir -p "$RUN"

# The task (defaults of `dno demo init`): a + b with operands 0..63; a 128-wide, 2-layer policy;
# 1024 SFT demonstrations, 60% of them from a careless teacher who forgets the carry
# (17+35 -> "42"); 3 x 256 DNO prompts and 192 held-out eval prompts, all distinct problems.
"$DNO" demo init --out "$RUN" --iterations "$T" --force
# SFT on the noisy demonstrations: pi_1 imitates the mixture, so it gets ~half the carry problems
# wrong (greedy accuracy 53–58% on the eval prompts, depending on the CPU's SIMD kernels). Loss = summed NLL of the answer tokens.
"$DNO" train --loss sft --model "$RUN/model" --prompts "$RUN/sft_prompts.parquet" --out "$RUN/sft" \
  --lr 1e-3 --epochs "${SFT_EPOCHS:-24}" --batch-size 16 --warmup-ratio 0.05 --max-grad-norm 1.0 --seed 0 --force
SFT="$RUN/sft/model"

# Shared DNO settings. K=8 samples per prompt at temperature 1 (diverse: both the carried and the
# carry-less answer show up); the exact-match verifier; pairs ranked by win-rate within the prompt.
# ETA=5 is a strong KL anchor: one round can only move the policy a bounded step from its
# reference, so improvement has to come from iterating (the reference becomes pi_t), which is
# what separates DNO from one round of offline DPO. LR/EPOCHS train each round close to that step.
COMMON=(DNO="$DNO" MODEL="$SFT" EVAL_PROMPTS="$RUN/eval_prompts.parquet" K="${K:-8}" TEMPERATURE="${TEMPERATURE:-1.0}" TOP_P=1.0 MAX_NEW=6
  EVAL_K=1 EVAL_TEMPERATURE=0 INCLUDE_REF= SEED=0
  "ORACLE=--oracle verifier --verify exact" "PAIR_FLAGS=--basis win-rate --max-pairs-per-prompt 4"
  ETA="${ETA:-5}" LR="${LR:-1e-4}" BATCH=16 "TRAIN_FLAGS=--warmup-ratio 0 --schedule constant")
EPOCHS="${EPOCHS:-2}"
PARTS=()
for t in $(seq 1 "$T"); do PARTS+=("PROMPTS_$t=$RUN/prompts-iter-$t.parquet"); done

# DNO-Prct: on-policy, reference = previous iterate, hard pairs (Alg. 2, Eq. 13).
make -s -f pipelines/Makefile RUN="$RUN/dno-prct" T="$T" "${COMMON[@]}" "${PARTS[@]}" EPOCHS="$EPOCHS" PROMPTS=unused LOSS=dpo STRATEGY=dno-prct
# DNO with soft targets sigma(r(y1) - r(y2)) (Alg. 1, Eq. 8), same schedule.
make -s -f pipelines/Makefile RUN="$RUN/dno-soft" T="$T" "${COMMON[@]}" "${PARTS[@]}" EPOCHS="$EPOCHS" PROMPTS=unused LOSS=dno STRATEGY=soft
# Offline DPO: one round on pi_1's own samples over all the prompts, capped at DNO-Prct's pair
# count (`dno pair --limit`). Same epochs per pair, hence the same number of optimiser steps as
# DNO-Prct's T rounds together; the only difference is on-policy data and a moving reference.
npairs=0
for t in $(seq 1 "$T"); do
  n=$("$DNO" validate "$RUN/dno-prct/iter-$t/pairs.parquet" | sed -n 's/^ok: \([0-9]*\) rows.*/\1/p'); npairs=$((npairs + n))
done
ALLPROMPTS="$(for t in $(seq 1 "$T"); do printf '%s ' "$RUN/prompts-iter-$t.parquet"; done)"
make -s -f pipelines/Makefile RUN="$RUN/offline-dpo" T=1 "${COMMON[@]}" "PROMPTS=$ALLPROMPTS" LOSS=dpo STRATEGY=dno-prct \
  "PAIR_FLAGS=--basis win-rate --max-pairs-per-prompt 4 --limit $npairs" EPOCHS="$EPOCHS"

"$DNO" report "$RUN/dno-prct" "$RUN/dno-soft" "$RUN/offline-dpo" --out "$RUN/report"
echo "quickstart finished in $(( $(date +%s) - start ))s; report: $RUN/report/report.md, plot: $RUN/report/winrate.svg"
