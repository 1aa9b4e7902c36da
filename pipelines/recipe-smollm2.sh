#!/usr/bin/env bash
# The real-model recipe: one DNO-Prct iteration on SmolLM2-135M-Instruct (CPU), judged by the same
# GGUF served by llama.cpp's OpenAI-compatible server, 64 prompts x K = 4, evaluated against the
# untrained policy in both orders. Settings: pipelines/example.mk. Writes $RUN/timings.tsv (stage,
# output, wall s, peak RSS MiB) and the report under $RUN/report/.
#
# Needs: the dno binary ($DNO, default: cargo build --release), the GGUF (scripts/fetch_smollm2.sh),
# and llama-cpp-python[server] in $VENV (scripts/serve_judge.sh starts it; default /work/venv-ref).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${RUN:-runs/smollm2}"
if [ -z "${DNO:-}" ]; then
  cargo build --release -q -p dno-cli
  DNO="${CARGO_TARGET_DIR:-target}/release/dno"
fi
DNO="$(cd "$(dirname "$DNO")" && pwd)/$(basename "$DNO")"
GGUF="$(scripts/fetch_smollm2.sh)"
scripts/serve_judge.sh >/dev/null
mkdir -p "$RUN"
"$DNO" prompts import fixtures/recipe/prompts.jsonl --out "$RUN/prompts.parquet" --force
export DNO_BIN="$DNO" DNO_TIMINGS="$(pwd)/$RUN/timings.tsv"
start=$(date +%s)
make -f pipelines/Makefile CONFIG=pipelines/example.mk RUN="$RUN" MODEL="$GGUF" DNO="$(pwd)/pipelines/timed-dno.sh"
echo "recipe: $(( $(date +%s) - start )) s in all; per stage (subcommand, output, wall s, peak RSS MiB):"
column -t "$RUN/timings.tsv" 2>/dev/null || cat "$RUN/timings.tsv"
