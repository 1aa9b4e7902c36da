#!/usr/bin/env bash
# One prepared device check: parity with transformers, `dno sample` vs HF `generate`, `dno train`
# (DPO) vs TRL, and peak GPU memory, printed as one table. Built for a CUDA machine that has
# PyTorch but no cargo (and no network): build the binary HERE and carry it. On a machine with two
# or more GPUs (or with --devices) it also trains on several of them at once (burn's all_reduce).
#
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p dno-cli --features cuda
#   mkdir -p gpu-bin && cp "$CARGO_TARGET_DIR/release/dno" gpu-bin/ && strip gpu-bin/dno
#   cp "$DNO_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" gpu-bin/      # the model travels with the binary
#   # on the device:  bash scripts/gpu_check.sh --dno gpu-bin/dno --gguf gpu-bin/SmolLM2-135M-Instruct.Q4_1.gguf
#
# CPU dry run (prints the table's CPU row; the whole script in a few minutes on 2 cores):
#   bash scripts/gpu_check.sh --device cpu --prompts 4 --k 2 --max-new-tokens 32 --pairs 8
#
# Peers come from the Python environment (`--python`, default python3): transformers (+ gguf) for
# parity and HF generate, trl for DPO. A peer that cannot be imported is reported as "not run"
# with the reason in the table, never as a number. Everything is written under --out.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda:0
DNO=${DNO_BIN:-target/release/dno}
GGUF=${DNO_MODELS:-$HOME/.cache/dno/models}/SmolLM2-135M-Instruct.Q4_1.gguf
PY=${PYTHON:-python3}
PROMPTS=16
K=8
MAX_NEW=128
PAIRS=24
OUT=${OUT:-/tmp/dno-gpu-check}
DEVICES=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --dno) DNO=$2; shift 2 ;;
        --gguf) GGUF=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        --prompts) PROMPTS=$2; shift 2 ;;
        --k) K=$2; shift 2 ;;
        --max-new-tokens) MAX_NEW=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --devices) DEVICES=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -x "$DNO" ]] || { echo "gpu_check: no dno binary at $DNO (--dno)" >&2; exit 1; }
[[ -f "$GGUF" ]] || { echo "gpu_check: no model at $GGUF (--gguf)" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"
ROWS="$OUT/rows.tsv"; : >"$ROWS"
row() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"; }   # what, dno, peer, note

# Peak GPU memory of one command: nvidia-smi polled every 100 ms (used memory of the whole GPU,
# minus what was in use before the command started). "-" on the CPU.
gpu_watch_start() {
    GPU_PEAK_FILE="$OUT/gpu.$1.csv"
    if [[ "$DEVICE" == cuda* ]] && command -v nvidia-smi >/dev/null; then
        GPU_BASE=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${DEVICE#cuda:}" | head -1)
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${DEVICE#cuda:}" -lms 100 >"$GPU_PEAK_FILE" &
        GPU_PID=$!
    else
        GPU_PID=""
    fi
}
gpu_watch_stop() {
    if [[ -n "$GPU_PID" ]]; then
        kill "$GPU_PID" 2>/dev/null || true; wait "$GPU_PID" 2>/dev/null || true
        sort -n "$GPU_PEAK_FILE" | tail -1 | awk -v b="$GPU_BASE" '{printf "%d MiB", $1 - b}'
    else
        echo "-"
    fi
}
# Wall seconds and peak host RSS (MiB) of a command, via GNU time.
timed() {
    local name=$1; shift
    /usr/bin/time -o "$OUT/time.$name" -f "%e %M" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || {
        echo "gpu_check: '$name' failed; last lines of $OUT/$name.err:" >&2; tail -5 "$OUT/$name.err" >&2; return 1; }
    read -r SECS KB < <(tail -1 "$OUT/time.$name")
    RSS_MIB=$((KB / 1024))
}

# The workload: the first $PROMPTS everyday instructions of the real-model recipe.
head -n "$PROMPTS" fixtures/recipe/prompts.jsonl >"$OUT/prompts.jsonl"
"$DNO" prompts import "$OUT/prompts.jsonl" --out "$OUT/prompts.parquet" --prompt-field prompt --id-field id -q

# 1. Parity: greedy continuations (32 tokens) of dno and transformers on the same device.
"$DNO" sample --model "$GGUF" --prompts "$OUT/prompts.parquet" --out "$OUT/greedy.parquet" -k 1 \
    --temperature 0 --max-new-tokens 32 --device "$DEVICE" --policy dno -q
if "$PY" scripts/gpu_check_peers.py parity --gguf "$GGUF" --device "$DEVICE" --samples "$OUT/greedy.parquet" \
    --max-new-tokens 32 >"$OUT/parity.txt" 2>"$OUT/parity.err"; then
    row "greedy parity (32 tok)" "$(cat "$OUT/parity.txt")" "transformers" "identical continuations / prompts"
else
    row "greedy parity (32 tok)" "not run" "not run" "$(tail -1 "$OUT/parity.err")"
fi

# 2. Sampling: K samples per prompt, T=0.7, top-p 0.95, EOS on, model load included.
gpu_watch_start sample
timed sample "$DNO" sample --model "$GGUF" --prompts "$OUT/prompts.parquet" --out "$OUT/samples.parquet" -k "$K" \
    --temperature 0.7 --top-p 0.95 --max-new-tokens "$MAX_NEW" --device "$DEVICE" --seed 0
DNO_GPU=$(gpu_watch_stop)
DNO_TOKENS=$(grep -o '| [0-9]* new tokens' "$OUT/sample.err" | grep -o '[0-9]*' | tail -1)
DNO_TPS=$(awk -v t="$DNO_TOKENS" -v s="$SECS" 'BEGIN{printf "%.1f", t/s}')
DNO_RSS=$RSS_MIB
gpu_watch_start hfgen
if timed hfgen "$PY" scripts/gpu_check_peers.py generate --gguf "$GGUF" --device "$DEVICE" \
    --prompts "$OUT/prompts.jsonl" --k "$K" --max-new-tokens "$MAX_NEW"; then
    HF_GPU=$(gpu_watch_stop)
    HF_TOKENS=$(tail -1 "$OUT/hfgen.out")
    HF_TPS=$(awk -v t="$HF_TOKENS" -v s="$SECS" 'BEGIN{printf "%.1f", t/s}')
    row "sample tok/s ($PROMPTS x K=$K, $MAX_NEW new)" "$DNO_TPS" "$HF_TPS (HF generate)" "x$(awk -v a="$DNO_TPS" -v b="$HF_TPS" 'BEGIN{printf "%.2f", a/b}'), wall incl. load"
    row "sample peak GPU / host RSS" "$DNO_GPU / $DNO_RSS MiB" "$HF_GPU / $RSS_MIB MiB" ""
else
    gpu_watch_stop >/dev/null
    row "sample tok/s ($PROMPTS x K=$K, $MAX_NEW new)" "$DNO_TPS" "not run" "$(tail -1 "$OUT/hfgen.err")"
    row "sample peak GPU / host RSS" "$DNO_GPU / $DNO_RSS MiB" "-" ""
fi

# 3. Training: DPO, one epoch over $PAIRS pairs built from the samples (longest vs shortest
#    response of each prompt, so both sides are the model's own text), the same pairs for TRL.
"$PY" scripts/gpu_check_peers.py make-pairs --samples "$OUT/samples.parquet" --pairs "$PAIRS" --out "$OUT/pairs.jsonl"
"$DNO" pairs import "$OUT/pairs.jsonl" --out "$OUT/pairs.parquet" -q
N_PAIRS=$(wc -l <"$OUT/pairs.jsonl")   # at most one pair per prompt, so it can be under --pairs
gpu_watch_start train
timed train "$DNO" train --model "$GGUF" --pairs "$OUT/pairs.parquet" --out "$OUT/train" --loss dpo --eta 0.1 \
    --lr 5e-7 --epochs 1 --batch-size 8 --device "$DEVICE"
DNO_GPU=$(gpu_watch_stop)
DNO_TRAIN_TOKENS=$("$PY" scripts/gpu_check_peers.py metrics-tokens --metrics "$OUT/train/metrics.parquet")
DNO_TRAIN_TPS=$(awk -v t="$DNO_TRAIN_TOKENS" -v s="$SECS" 'BEGIN{printf "%.1f", t/s}')
DNO_RSS=$RSS_MIB
gpu_watch_start trl
if timed trl "$PY" scripts/gpu_check_peers.py dpo --gguf "$GGUF" --device "$DEVICE" --pairs "$OUT/pairs.jsonl"; then
    TRL_GPU=$(gpu_watch_stop)
    # Same pairs, same tokens: TRL's rate uses dno's token count, so the ratio is that of wall times
    # (TRL's stdout also carries its log dicts; its own count, the last line, is not comparable).
    TRL_TPS=$(awk -v t="$DNO_TRAIN_TOKENS" -v s="$SECS" 'BEGIN{printf "%.1f", t/s}')
    row "DPO train tok/s ($N_PAIRS pairs, batch 8)" "$DNO_TRAIN_TPS" "$TRL_TPS (TRL)" "x$(awk -v a="$DNO_TRAIN_TPS" -v b="$TRL_TPS" 'BEGIN{printf "%.2f", a/b}'), wall incl. load + reference pass"
    row "train peak GPU / host RSS" "$DNO_GPU / $DNO_RSS MiB" "$TRL_GPU / $RSS_MIB MiB" ""
else
    gpu_watch_stop >/dev/null
    row "DPO train tok/s ($N_PAIRS pairs, batch 8)" "$DNO_TRAIN_TPS" "not run" "$(tail -1 "$OUT/trl.err")"
    row "train peak GPU / host RSS" "$DNO_GPU / $DNO_RSS MiB" "-" ""
fi

# 4. Multi-GPU training: the same DPO run replicated on several GPUs (`--devices`; gradients
#    summed by burn's all_reduce, NCCL), its per-step losses against the one-GPU run above.
if [[ -z "$DEVICES" && "$DEVICE" == cuda* ]] && command -v nvidia-smi >/dev/null; then
    N_GPUS=$(nvidia-smi -L | wc -l)
    (( N_GPUS >= 2 )) && DEVICES=$(seq -s, -f 'cuda:%g' 0 $((N_GPUS > 4 ? 3 : N_GPUS - 1)))
fi
if [[ -n "$DEVICES" ]]; then
    if timed ddp "$DNO" train --model "$GGUF" --pairs "$OUT/pairs.parquet" --out "$OUT/train-ddp" --loss dpo --eta 0.1 \
        --lr 5e-7 --epochs 1 --batch-size 8 --devices "$DEVICES"; then
        DDP_TPS=$(awk -v t="$DNO_TRAIN_TOKENS" -v s="$SECS" 'BEGIN{printf "%.1f", t/s}')
        DIFF=$("$PY" scripts/gpu_check_peers.py metrics-diff --a "$OUT/train/metrics.parquet" --b "$OUT/train-ddp/metrics.parquet" 2>&1 || true)
        row "DPO train tok/s on $DEVICES" "$DDP_TPS" "$DNO_TRAIN_TPS (dno, $DEVICE)" "x$(awk -v a="$DDP_TPS" -v b="$DNO_TRAIN_TPS" 'BEGIN{printf "%.2f", a/b}'); max step-loss diff $DIFF"
    else
        row "DPO train tok/s on $DEVICES" "failed" "-" "$(tail -1 "$OUT/ddp.err")"
    fi
else
    row "multi-GPU DPO (all_reduce)" "not run" "-" "one device here (--devices to force)"
fi

echo
echo "## gpu_check on $DEVICE ($(date -u +%F), $( [[ "$DEVICE" == cuda* ]] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || lscpu | sed -n 's/^Model name: *//p'))"
echo
echo "| check | dno | peer | note |"
echo "|---|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$ROWS"
