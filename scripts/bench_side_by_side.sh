#!/usr/bin/env bash
# Side-by-side speed benchmark: dno and its peers on the same machine, the same workload, interleaved
# (peer, dno, peer, dno, ...), so the ratios are taken in one run (these machines drift +-10% in minutes).
#
#   bash scripts/bench_side_by_side.sh [--reps 2] [--prompts 16] [--k 8] [--max-new-tokens 128]
#        [--pairs 24] [--threads 2] [--np 64] [--dno PATH] [--python PATH] [--llama-build DIR]
#        [--gguf PATH] [--out DIR] [--skip-sample] [--skip-train] [--skip-trl-bf16]
#
# 1. Sampling through the real CLI path: `dno sample` with the burn engine (chat prompts, K samples
#    each, T=0.7, top-p 0.95, EOS on, model load included) against llama.cpp's `llama-server`
#    (continuous batching, -np NP parallel slots, -t THREADS, top-k and min-p off like dno's
#    defaults) driven by `dno sample --engine openai --concurrency NP` on the same prompts. The
#    server is started once before the timed runs, as a user's server would be; its load is not
#    timed. tok/s = generated tokens (dno's count, "N new tokens") / wall seconds of the command.
# 2. DPO full fine-tune of the same model: `dno train --loss dpo` against TRL's DPOTrainer
#    (scripts/gpu_check_peers.py dpo), beta 0.1, lr 5e-7, batch 8, one epoch over the same PAIRS
#    pairs, built from the first sampling run (longest vs shortest response of each prompt). Both
#    are timed as whole commands (model load and reference pass included); tok/s uses dno's token
#    count (metrics.parquet `tokens`) for both, so the ratio is the ratio of wall times. dno also
#    runs `--dtype bf16` (mixed precision, the analogue of TRL's bf16 autocast), after its f32 run.
# Peak RSS is GNU time's maximum resident set (llama-server: its VmHWM at the end).
#
# Peers: llama-server from scripts/build_llamacpp.sh (LLAMA_BUILD, default /work/llama-build);
# TRL, transformers and gguf in the Python of --python (default /work/venv-ref/bin/python; make it
# with `python3 -m venv V && V/bin/pip install torch transformers trl datasets gguf pyarrow`).
# A peer that is missing is reported as "not run" with the reason, never as a number.
# Output: the table on stdout; logs and files under --out (default ${TMPDIR:-/tmp}/dno-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=2 PROMPTS=16 K=8 MAX_NEW=128 PAIRS=24 THREADS=2 NP=64
DNO="${CARGO_TARGET_DIR:-target}/release/dno"
PY=/work/venv-ref/bin/python
LLAMA_BUILD="${LLAMA_BUILD:-/work/llama-build}"
GGUF="" OUT="${TMPDIR:-/tmp}/dno-bench" DO_SAMPLE=1 DO_TRAIN=1 TRL_BF16=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --prompts) PROMPTS=$2; shift 2 ;;
        --k) K=$2; shift 2 ;;
        --max-new-tokens) MAX_NEW=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --np) NP=$2; shift 2 ;;
        --dno) DNO=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        --llama-build) LLAMA_BUILD=$2; shift 2 ;;
        --gguf) GGUF=$2; shift 2 ;;
        --skip-trl-bf16) TRL_BF16=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --skip-sample) DO_SAMPLE=0; shift ;;
        --skip-train) DO_TRAIN=0; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "bench_side_by_side: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$GGUF" ]] || GGUF="$(bash scripts/fetch_smollm2.sh)"
[[ -x "$DNO" ]] || { echo "bench_side_by_side: no dno binary at $DNO (build with cargo build --release, or --dno)" >&2; exit 1; }
[[ -f "$GGUF" ]] || { echo "bench_side_by_side: no model at $GGUF (--gguf)" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"
RES="$OUT/results.tsv"; : >"$RES"   # what, system, rep, seconds, tokens, rss_mib

# Wall seconds and peak RSS (MiB) of a command, via GNU time; sets SECS and RSS.
timed() {
    local name=$1; shift
    /usr/bin/time -o "$OUT/time.$name" -f "%e %M" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || {
        echo "bench_side_by_side: '$name' failed; last lines of $OUT/$name.err:" >&2; tail -5 "$OUT/$name.err" >&2; return 1; }
    local kb; read -r SECS kb < <(tail -1 "$OUT/time.$name")
    RSS=$((kb / 1024))
}
new_tokens() { grep -o '| [0-9]* new tokens' "$1" | grep -o '[0-9]*' | tail -1; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

head -n "$PROMPTS" fixtures/recipe/prompts.jsonl >"$OUT/prompts.jsonl"
"$DNO" prompts import "$OUT/prompts.jsonl" --out "$OUT/prompts.parquet" --prompt-field prompt --id-field id -q
SAMPLING=(-k "$K" --temperature 0.7 --top-p 0.95 --max-new-tokens "$MAX_NEW" --seed 0)
NOTES=()

# ---- 1. sampling -------------------------------------------------------------------------------
SERVER_PID=""
stop_server() { [[ -n "$SERVER_PID" ]] && { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }; SERVER_PID=""; }
trap stop_server EXIT
if [[ $DO_SAMPLE = 1 ]]; then
    SERVER="$LLAMA_BUILD/bin/llama-server"
    PORT=$((20000 + RANDOM % 20000))
    if [[ -x "$SERVER" ]]; then
        # Each slot holds one sequence: prompt (< 128 tokens here) + MAX_NEW.
        "$SERVER" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -np "$NP" -c $((NP * (128 + MAX_NEW))) \
            -t "$THREADS" -tb "$THREADS" --top-k 0 --min-p 0 --no-warmup >"$OUT/llama-server.log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 1 120); do
            curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 1
        done
        if ! curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
            NOTES+=("llama-server did not come up (log: $OUT/llama-server.log: $(tail -1 "$OUT/llama-server.log"))")
            stop_server
        fi
    else
        NOTES+=("llama-server not run: $SERVER missing (run scripts/build_llamacpp.sh)")
    fi
    for rep in $(seq 1 "$REPS"); do
        if [[ -n "$SERVER_PID" ]]; then
            rm -rf "$OUT/server.parquet"
            if timed "server.$rep" "$DNO" sample --engine openai --base-url "http://127.0.0.1:$PORT/v1" \
                    --api-model smollm2 --concurrency "$NP" --prompts "$OUT/prompts.parquet" \
                    --out "$OUT/server.parquet" "${SAMPLING[@]}"; then
                printf 'sample\tllama-server\t%s\t%s\t%s\t-\n' "$rep" "$SECS" "$(new_tokens "$OUT/server.$rep.err")" >>"$RES"
            fi
        fi
        rm -rf "$OUT/samples.$rep.parquet"
        timed "sample.$rep" "$DNO" sample --model "$GGUF" --prompts "$OUT/prompts.parquet" \
            --out "$OUT/samples.$rep.parquet" "${SAMPLING[@]}"
        printf 'sample\tdno\t%s\t%s\t%s\t%s\n' "$rep" "$SECS" "$(new_tokens "$OUT/sample.$rep.err")" "$RSS" >>"$RES"
        # --dtype bf16: the AVX512-BF16 kernel where the CPU has it (dno_model::bf16mm), else burn's bf16.
        rm -rf "$OUT/samples-bf16.$rep.parquet"
        timed "sample-bf16.$rep" "$DNO" sample --model "$GGUF" --prompts "$OUT/prompts.parquet" \
            --out "$OUT/samples-bf16.$rep.parquet" "${SAMPLING[@]}" --dtype bf16
        printf 'sample\tdno --dtype bf16\t%s\t%s\t%s\t%s\n' "$rep" "$SECS" "$(new_tokens "$OUT/sample-bf16.$rep.err")" "$RSS" >>"$RES"
    done
    if [[ -n "$SERVER_PID" ]]; then
        SERVER_RSS=$(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$SERVER_PID/status")
        awk -F'\t' -v r="$SERVER_RSS" 'BEGIN{OFS="\t"} $2 == "llama-server" {$6 = r} {print}' "$RES" >"$RES.tmp" && mv "$RES.tmp" "$RES"
        stop_server
    fi
fi

# ---- 2. DPO training ---------------------------------------------------------------------------
if [[ $DO_TRAIN = 1 ]]; then
    SAMPLES="$OUT/samples.1.parquet"
    if [[ ! -f "$SAMPLES" ]]; then
        "$DNO" sample --model "$GGUF" --prompts "$OUT/prompts.parquet" --out "$SAMPLES" "${SAMPLING[@]}" -q
    fi
    TRL_OK=1
    if ! "$PY" -c "import trl, transformers, gguf, datasets, pyarrow" 2>"$OUT/trl-import.err"; then
        TRL_OK=0; NOTES+=("TRL not run: $PY lacks trl/transformers/gguf/datasets/pyarrow ($(tail -1 "$OUT/trl-import.err"))")
    fi
    if [[ $TRL_OK = 1 ]]; then
        "$PY" scripts/gpu_check_peers.py make-pairs --samples "$SAMPLES" --pairs "$PAIRS" --out "$OUT/pairs.jsonl"
    else
        NOTES+=("pairs need pyarrow in --python; training not run"); DO_TRAIN=0
    fi
fi
if [[ $DO_TRAIN = 1 ]]; then
    "$DNO" pairs import "$OUT/pairs.jsonl" --out "$OUT/pairs.parquet" -q
    TRAIN_TOKENS=""
    for rep in $(seq 1 "$REPS"); do
        if timed "trl.$rep" "$PY" scripts/gpu_check_peers.py dpo --gguf "$GGUF" --device cpu --pairs "$OUT/pairs.jsonl" \
                --threads "$THREADS"; then
            printf 'train\tTRL\t%s\t%s\t-\t%s\n' "$rep" "$SECS" "$RSS" >>"$RES"
        fi
        # TRL's bf16 autocast (DPOConfig bf16=True): torch's CPU bf16 matmuls (oneDNN, AVX512-BF16).
        if [[ $TRL_BF16 = 1 ]] && timed "trl-bf16.$rep" "$PY" scripts/gpu_check_peers.py dpo --gguf "$GGUF" --device cpu \
                --pairs "$OUT/pairs.jsonl" --threads "$THREADS" --bf16; then
            printf 'train\tTRL bf16\t%s\t%s\t-\t%s\n' "$rep" "$SECS" "$RSS" >>"$RES"
        fi
        rm -rf "$OUT/train.$rep"
        timed "train.$rep" "$DNO" train --model "$GGUF" --pairs "$OUT/pairs.parquet" --out "$OUT/train.$rep" \
            --loss dpo --eta 0.1 --lr 5e-7 --epochs 1 --batch-size 8
        TRAIN_TOKENS=$("$PY" scripts/gpu_check_peers.py metrics-tokens --metrics "$OUT/train.$rep/metrics.parquet")
        printf 'train\tdno\t%s\t%s\t%s\t%s\n' "$rep" "$SECS" "$TRAIN_TOKENS" "$RSS" >>"$RES"
        # Mixed precision (bf16 weights and products, f32 master weights and moments), as TRL bf16.
        rm -rf "$OUT/train-bf16.$rep"
        if timed "train-bf16.$rep" "$DNO" train --model "$GGUF" --pairs "$OUT/pairs.parquet" --out "$OUT/train-bf16.$rep" \
                --loss dpo --eta 0.1 --lr 5e-7 --epochs 1 --batch-size 8 --dtype bf16; then
            printf 'train\tdno --dtype bf16\t%s\t%s\t%s\t%s\n' "$rep" "$SECS" "$TRAIN_TOKENS" "$RSS" >>"$RES"
        fi
    done
    # Same pairs, same tokens: TRL's rows get dno's count.
    awk -F'\t' -v t="$TRAIN_TOKENS" 'BEGIN{OFS="\t"} $1 == "train" && $2 ~ /^TRL/ {$5 = t} {print}' "$RES" >"$RES.tmp" && mv "$RES.tmp" "$RES"
fi

# ---- table -------------------------------------------------------------------------------------
stat() {  # stage system column -> median of that column over reps
    awk -F'\t' -v s="$1" -v y="$2" -v c="$3" '$1 == s && $2 == y && $c != "-" && $c != "" {print $c}' "$RES" | median
}
tps() { awk -F'\t' -v s="$1" -v y="$2" '$1 == s && $2 == y && $4 > 0 && $5 != "" {print $5 / $4}' "$RES" | median; }
CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
echo "## bench_side_by_side: $(date -u +%F), $CPU, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## model $(basename "$GGUF"); $REPS reps interleaved (peer, dno); medians"
echo
echo "| workload | system | wall s | tokens | tok/s | peak RSS MiB | dno / peer |"
echo "|---|---|---|---|---|---|---|"
row() {  # stage label peer system...: each dno system's ratio is to the first (reference) peer
    local st=$1 label=$2 peer=$3 p d sys
    shift 2
    p=$(tps "$st" "$peer")
    for sys in "$@"; do
        local t; t=$(tps "$st" "$sys")
        [[ "$t" == nan ]] && { echo "| $label | $sys | not run | | | | |"; continue; }
        local ratio=""
        [[ "$sys" == dno* && "$p" != nan ]] && ratio=$(awk -v a="$t" -v b="$p" 'BEGIN{printf "%.2fx", a/b}')
        printf '| %s | %s | %.1f | %.0f | %.1f | %s | %s |\n' "$label" "$sys" "$(stat "$st" "$sys" 4)" \
            "$(stat "$st" "$sys" 5)" "$t" "$(stat "$st" "$sys" 6)" "$ratio"
    done
}
[[ $DO_SAMPLE = 1 ]] && row sample "sample $PROMPTS prompts x K=$K, $MAX_NEW new, T=0.7 top-p 0.95" llama-server dno "dno --dtype bf16"
[[ $DO_TRAIN = 1 ]] && row train "DPO full FT, $PAIRS pairs, batch 8, 1 epoch" TRL "TRL bf16" dno "dno --dtype bf16"
if [[ $DO_TRAIN = 1 && $TRL_BF16 = 1 ]]; then
    b=$(tps train "TRL bf16"); d=$(tps train dno); d16=$(tps train "dno --dtype bf16")
    echo
    [[ "$b" != nan && "$d" != nan ]] && awk -v a="$d" -v b="$b" 'BEGIN{printf "dno / TRL bf16 (training): %.2fx\n", a/b}'
    [[ "$b" != nan && "$d16" != nan ]] && awk -v a="$d16" -v b="$b" 'BEGIN{printf "dno --dtype bf16 / TRL bf16 (training): %.2fx\n", a/b}'
fi
for n in "${NOTES[@]}"; do echo; echo "note: $n"; done
echo
echo "raw: $RES"
