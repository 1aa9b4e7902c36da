#!/usr/bin/env bash
# Issue 14's export acceptance: `dno export --dtype bf16` of SmolLM2-135M-Instruct (sharded),
# greedy `dno sample --dtype bf16` of the exported directory on 8 prompts, and
# scripts/check_bf16_export.py comparing the first 16 tokens with transformers loading the same
# directory. Prints the comparison table.
#
#   DNO=target/release/dno PYTHON=/work/venv-ref/bin/python scripts/check_bf16_export.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
DNO="${DNO:-${CARGO_TARGET_DIR:-target}/release/dno}"
PYTHON="${PYTHON:-/work/venv-ref/bin/python}"
MODEL="${1:-$HOME/.cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$DNO" export --model "$MODEL" --out "$work/bf16" --dtype bf16 --max-shard-size 100MB >&2
ls "$work/bf16" >&2
cat > "$work/prompts.jsonl" <<'JSON'
{"id": "p1", "prompt": "What is the capital of France?"}
{"id": "p2", "prompt": "Write a haiku about the sea."}
{"id": "p3", "prompt": "Explain photosynthesis in one sentence."}
{"id": "p4", "prompt": "List three prime numbers."}
{"id": "p5", "prompt": "How do I boil an egg?"}
{"id": "p6", "prompt": "Translate 'good morning' into Spanish."}
{"id": "p7", "prompt": "What is 12 times 7?"}
{"id": "p8", "prompt": "Give me a name for a pet turtle."}
JSON
"$DNO" prompts import "$work/prompts.jsonl" --out "$work/prompts.parquet" >&2
"$DNO" sample --model "$work/bf16" --prompts "$work/prompts.parquet" -k 1 --temperature 0 \
    --max-new-tokens 16 --dtype bf16 -o "$work/samples.parquet" >&2
"$PYTHON" scripts/check_bf16_export.py "$work/bf16" "$work/samples.parquet" --tokens 16
