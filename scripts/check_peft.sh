#!/usr/bin/env bash
# LoRA training's PEFT adapter loads in PEFT: a tiny demo model, `dno train --lora-rank 4`, then
# scripts/check_peft.py (base + OUT/adapter through peft vs dno's merged OUT/model).
#
#   DNO=target/release/dno PYTHON=/work/venv-ref/bin/python scripts/check_peft.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DNO="${DNO:-${CARGO_TARGET_DIR:-target}/release/dno}"
PYTHON="${PYTHON:-/work/venv-ref/bin/python}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$DNO" demo init --out run --iterations 1 --prompts-per-iteration 4 --sft-prompts 16 --eval-prompts 4 --hidden 32 >&2
"$DNO" train --loss sft --model run/model --prompts run/sft_prompts.parquet --out lora --lr 3e-3 \
    --epochs 2 --batch-size 4 --lora-rank 4 --lora-alpha 8 >&2
cd - > /dev/null
"$PYTHON" scripts/check_peft.py "$work/run/model" "$work/lora/adapter" "$work/lora/model"
