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

"$DNO" demo init --out "$RUN" --iterations "$T" --force
"$DNO" train --loss sft --model "$RUN/model" --prompts "$RUN/sft_prompts.parquet" --out "$RUN/sft" \
  --lr 3e-3 --epochs "${SFT_EPOCHS:-6}" --batch-size 16 --warmup-ratio 0.05 --max-grad-norm 1.0 --seed 0 --force
SFT="$RUN/sft/model"

COMMON=(DNO="$DNO" MODEL="$SFT" EVAL_PROMPTS="$RUN/eval_prompts.parquet" K=8 TEMPERATURE=1.0 TOP_P=1.0 MAX_NEW=6
  EVAL_K=1 EVAL_TEMPERATURE=0 INCLUDE_REF= SEED=0
  "ORACLE=--oracle verifier --verify exact" "PAIR_FLAGS=--basis win-rate --max-pairs-per-prompt 4"
  ETA="${ETA:-0.1}" LR="${LR:-1e-3}" EPOCHS=2 BATCH=16 "TRAIN_FLAGS=--warmup-ratio 0 --schedule constant")
PARTS=()
for t in $(seq 1 "$T"); do PARTS+=("PROMPTS_$t=$RUN/prompts-iter-$t.parquet"); done

# DNO-Prct: on-policy, reference = previous iterate, hard pairs (Alg. 2, Eq. 13).
make -s -f pipelines/Makefile RUN="$RUN/dno-prct" T="$T" "${COMMON[@]}" "${PARTS[@]}" PROMPTS=unused LOSS=dpo STRATEGY=dno-prct
# DNO with soft targets sigma(r(y1) - r(y2)) (Alg. 1, Eq. 8), same schedule.
make -s -f pipelines/Makefile RUN="$RUN/dno-soft" T="$T" "${COMMON[@]}" "${PARTS[@]}" PROMPTS=unused LOSS=dno STRATEGY=soft
# Offline DPO: one round on pi_1's own samples over all the prompts, capped at DNO-Prct's pair count.
npairs=0
for t in $(seq 1 "$T"); do
  n=$("$DNO" validate "$RUN/dno-prct/iter-$t/pairs.parquet" | sed -n 's/^ok: \([0-9]*\) rows.*/\1/p'); npairs=$((npairs + n))
done
ALLPROMPTS="$(for t in $(seq 1 "$T"); do printf '%s ' "$RUN/prompts-iter-$t.parquet"; done)"
make -s -f pipelines/Makefile RUN="$RUN/offline-dpo" T=1 "${COMMON[@]}" "PROMPTS=$ALLPROMPTS" LOSS=dpo STRATEGY=dno-prct \
  "PAIR_FLAGS=--basis win-rate --max-pairs-per-prompt 4 --limit $npairs" EPOCHS=$((2 * T))

"$DNO" report "$RUN/dno-prct" "$RUN/dno-soft" "$RUN/offline-dpo" --out "$RUN/report"
echo "quickstart finished in $(( $(date +%s) - start ))s; report: $RUN/report/report.md, plot: $RUN/report/winrate.svg"
