#!/usr/bin/env bash
# Peer benchmark: llama.cpp's llama-batched-bench on the SmolLM2-135M-Instruct Q4_1 GGUF.
# Prints llama.cpp's own table (PP = prompt tokens, TG = generated tokens, B = parallel sequences).
#
# Env:
#   LLAMA_BUILD   llama.cpp build dir containing bin/llama-batched-bench (default /work/llama-build)
#   GGUF          model path (default: output of scripts/fetch_smollm2.sh)
#   THREADS       threads (default 2)
#   NPL           comma list of parallel sequence counts (default 32,64,128)
#   NPP / NTG     prompt / generated tokens per sequence (default 64 / 128)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LLAMA_BUILD="${LLAMA_BUILD:-/work/llama-build}"
BIN="$LLAMA_BUILD/bin/llama-batched-bench"
GGUF="${GGUF:-$("$HERE/fetch_smollm2.sh")}"
THREADS="${THREADS:-2}"
NPL="${NPL:-32,64,128}"
NPP="${NPP:-64}"
NTG="${NTG:-128}"
if [[ ! -x "$BIN" ]]; then
    echo "bench_llamacpp: $BIN not found; build llama.cpp first (see fixtures/reference/README.md)" >&2
    exit 1
fi
# KV cache must hold every sequence: max(npl) * (npp + ntg) tokens.
MAX_NPL="$(tr ',' '\n' <<<"$NPL" | sort -n | tail -n1)"
CTX=$(( MAX_NPL * (NPP + NTG) ))
echo "# llama-batched-bench: model=$(basename "$GGUF") threads=$THREADS npp=$NPP ntg=$NTG npl=$NPL ctx=$CTX" >&2
"$BIN" -m "$GGUF" -c "$CTX" -b 2048 -ub 512 -npp "$NPP" -ntg "$NTG" -npl "$NPL" -t "$THREADS" -tb "$THREADS" 2>/tmp/bench_llamacpp.stderr \
    || { tail -n 30 /tmp/bench_llamacpp.stderr >&2; exit 1; }
