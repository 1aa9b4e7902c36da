#!/usr/bin/env bash
# Peer benchmark: llama.cpp's llama-batched-bench on the SmolLM2-135M-Instruct Q4_1 GGUF.
# Prints llama.cpp's own table on stdout (PP = prompt tokens per sequence, TG = generated tokens
# per sequence, B = parallel sequences, S_* = aggregate tokens/s). Full log: $LOG.
#
# Env:
#   LLAMA_BUILD   llama.cpp build dir containing bin/llama-batched-bench (default /work/llama-build;
#                 scripts/build_llamacpp.sh makes it)
#   GGUF          model path (default: output of scripts/fetch_smollm2.sh)
#   THREADS       threads (default 2). On a busy 2-core machine -t 1 is much faster than -t 2
#                 (OpenMP threads spin at barriers while other processes hold the cores).
#   NPL           comma list of parallel sequence counts (default 32,64,128)
#   NPP / NTG     prompt / generated tokens per sequence (default 64 / 128)
#   LOG           full llama.cpp log (default ${TMPDIR:-/tmp}/bench_llamacpp.log)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LLAMA_BUILD="${LLAMA_BUILD:-/work/llama-build}"
BIN="$LLAMA_BUILD/bin/llama-batched-bench"
GGUF="${GGUF:-$("$HERE/fetch_smollm2.sh")}"
THREADS="${THREADS:-2}"
NPL="${NPL:-32,64,128}"
NPP="${NPP:-64}"
NTG="${NTG:-128}"
LOG="${LOG:-${TMPDIR:-/tmp}/bench_llamacpp.log}"
if [[ ! -x "$BIN" ]]; then
    echo "bench_llamacpp: $BIN not found; run scripts/build_llamacpp.sh first" >&2
    exit 1
fi
# KV cache must hold every sequence: max(npl) * (npp + ntg) tokens.
MAX_NPL="$(tr ',' '\n' <<<"$NPL" | sort -n | tail -n1)"
CTX=$(( MAX_NPL * (NPP + NTG) ))
echo "# llama-batched-bench: model=$(basename "$GGUF") threads=$THREADS npp=$NPP ntg=$NTG npl=$NPL ctx=$CTX"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
# llama.cpp logs (the table included) go to stderr; keep everything in $LOG and print the table.
if ! "$BIN" -m "$GGUF" -c "$CTX" -b 2048 -ub 512 -npp "$NPP" -ntg "$NTG" -npl "$NPL" \
        -t "$THREADS" -tb "$THREADS" >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "bench_llamacpp: llama-batched-bench failed (log: $LOG)" >&2
    exit 1
fi
grep -E '^(llama_batched_bench:|\|)' "$LOG"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
