#!/usr/bin/env bash
# Submits one DNO iteration to Slurm as job arrays of SHARDS shards per stage, each stage's job
# depending on the previous one (--dependency=afterok, cancelled if that failed):
#
#   sample (array) -> annotate (array) -> pair -> train -> sample eval prompts (array)
#     -> eval (array) -> merge eval shards into eval.parquet (win-rate, CI: as an unsharded eval)
#
# plus, when BASELINE does not exist yet, an array sampling the baseline policy on the eval
# prompts. Rerunning the script after a failure resubmits everything; finished shards and steps
# are skipped (shard.sbatch, step.sbatch), so only the missing work runs.
#
#   RUN=runs/x ITER=1 MODEL=pi_1 PROMPTS=prompts.parquet EVAL_PROMPTS=eval.parquet SHARDS=8 \
#     ORACLE="--oracle judge --base-url http://judge:8000/v1 --api-model judge" pipelines/slurm/iteration.sh
#
# Settings (environment): RUN, ITER (default 1), MODEL (the policy pi_t), PROMPTS, EVAL_PROMPTS,
# SHARDS (default 4), BASELINE (default $RUN/baseline/samples, sampled from BASELINE_MODEL,
# default MODEL), ORACLE and EVAL_ORACLE (default ORACLE), K, SAMPLE_FLAGS, EVAL_SAMPLE_FLAGS,
# PAIR_FLAGS, TRAIN_FLAGS, SBATCH_FLAGS (e.g. "--partition gpu --gres gpu:1 --time 4:00:00"),
# DNO (the dno binary, default dno), SBATCH (default sbatch; pipelines/slurm/sbatch-shim runs
# the same jobs on this machine without Slurm), WAIT=1 (block until the last job ends; exit
# status = whether the iteration succeeded). Job ids are printed. Flag settings are shell words
# (quote inside them as on a command line).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${RUN:?set RUN}" "${MODEL:?set MODEL}" "${PROMPTS:?set PROMPTS}" "${EVAL_PROMPTS:?set EVAL_PROMPTS}"
ITER=${ITER:-1} SHARDS=${SHARDS:-4} K=${K:-5}
ORACLE=${ORACLE:---oracle verifier --verify last-number}
EVAL_ORACLE=${EVAL_ORACLE:-$ORACLE}
BASELINE=${BASELINE:-$RUN/baseline/samples}
BASELINE_MODEL=${BASELINE_MODEL:-$MODEL}
SBATCH=${SBATCH:-sbatch}
export DNO=${DNO:-dno}
d="$RUN/iter-$ITER"
mkdir -p "$d"
eval "sbatch_flags=(${SBATCH_FLAGS:-})"
eval "oracle=($ORACLE)"
eval "eval_oracle=($EVAL_ORACLE)"
eval "sample_flags=(${SAMPLE_FLAGS:-})"
eval "eval_sample_flags=(${EVAL_SAMPLE_FLAGS:-${SAMPLE_FLAGS:-}})"
eval "pair_flags=(${PAIR_FLAGS:-})"
eval "train_flags=(${TRAIN_FLAGS:-})"

# submit NAME DEPENDENCY [sbatch options and script...]: prints the job id.
submit() {
  local name=$1 dep=$2
  shift 2
  local flags=(--parsable --job-name "dno-$name" --output "$d/slurm-%x-%j.log" "${sbatch_flags[@]}")
  [ -n "$dep" ] && flags+=(--dependency "afterok:$dep" --kill-on-invalid-dep=yes)
  "$SBATCH" "${flags[@]}" "$@" | cut -d';' -f1
}
array=(--array "0-$((SHARDS - 1))")

base_job=""
if [ ! -d "$BASELINE" ] || ! "$DNO" -q validate "$BASELINE" >/dev/null 2>&1; then
  base_job=$(submit baseline "" "${array[@]}" "$here/shard.sbatch" "$SHARDS" "$BASELINE" \
    sample --model "$BASELINE_MODEL" --prompts "$EVAL_PROMPTS" -k 1 --policy baseline "${eval_sample_flags[@]}")
fi
j_sample=$(submit "sample-$ITER" "" "${array[@]}" "$here/shard.sbatch" "$SHARDS" "$d/samples" \
  sample --model "$MODEL" --prompts "$PROMPTS" -k "$K" --policy "iter-$ITER" "${sample_flags[@]}")
j_annotate=$(submit "annotate-$ITER" "$j_sample" "${array[@]}" "$here/shard.sbatch" "$SHARDS" "$d/preferences" \
  annotate --samples "$d/samples" "${oracle[@]}")
j_pair=$(submit "pair-$ITER" "$j_annotate" "$here/step.sbatch" "$d/pairs.parquet" \
  "$DNO" pair --samples "$d/samples" --preferences "$d/preferences" --out "$d/pairs.parquet" --iteration "iter-$ITER" "${pair_flags[@]}" --force)
j_train=$(submit "train-$ITER" "$j_pair" "$here/step.sbatch" "$d/train/provenance.json" \
  "$DNO" train --model "$MODEL" --pairs "$d/pairs.parquet" --out "$d/train" "${train_flags[@]}" --force)
j_eval_sample=$(submit "eval-sample-$ITER" "$j_train" "${array[@]}" "$here/shard.sbatch" "$SHARDS" "$d/eval_samples" \
  sample --model "$d/train/model" --prompts "$EVAL_PROMPTS" -k 1 --policy "iter-$ITER" "${eval_sample_flags[@]}")
j_eval=$(submit "eval-$ITER" "$j_eval_sample${base_job:+:$base_job}" "${array[@]}" "$here/shard.sbatch" "$SHARDS" "$d/eval" \
  eval --candidate "$d/eval_samples" --baseline "$BASELINE" "${eval_oracle[@]}")
wait_flag=()
[ "${WAIT:-0}" = 1 ] && wait_flag=(--wait)
echo "jobs: baseline ${base_job:--} sample $j_sample annotate $j_annotate pair $j_pair train $j_train eval-sample $j_eval_sample eval $j_eval" >&2
j_merge=$(submit "merge-$ITER" "$j_eval" "${wait_flag[@]}" "$here/step.sbatch" "$d/eval.parquet" \
  "$DNO" merge "$d/eval" --out "$d/eval.parquet" --force)
echo "merge $j_merge: $d/eval.parquet when done" >&2
