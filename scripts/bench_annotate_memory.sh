#!/usr/bin/env bash
# Peak RSS of `dno annotate` as the number of samples grows (issue: memory stays flat).
# Writes samples files with Polars (N prompts x K=4 samples of ~1 KB, answers given) and runs the
# verifier oracle over each: the same read -> items -> rows -> Parquet path as a judge, no server.
#
#   DNO=path/to/dno PY=python-with-polars scripts/bench_annotate_memory.sh [N1 N2 ...]
# Prints a table: prompts, samples, judgments, wall s, peak RSS MiB.
set -euo pipefail
DNO="${DNO:-dno}"
PY="${PY:-${DNO_PYTHON:-python3}}"
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(2000 20000)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "| dno | prompts | samples | judgments | wall s | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for n in "${SIZES[@]}"; do
  "$PY" - "$n" "$WORK/s$n.parquet" <<'PYEOF'
import sys, polars as pl
n, out = int(sys.argv[1]), sys.argv[2]
k = 4
filler = "word " * 200
rows = {
    "prompt_id": [f"p{i}" for i in range(n) for _ in range(k)],
    "sample_id": [f"p{i}-s{j}" for i in range(n) for j in range(k)],
    "prompt": [f"What is {i} + {i}?" for i in range(n) for _ in range(k)],
    "answer": [str(2 * i) for i in range(n) for _ in range(k)],
    "response": [f"{filler} so the answer is {2 * i + (j % 2)}" for i in range(n) for j in range(k)],
    "source": ["policy"] * (n * k),
    "policy": ["bench"] * (n * k),
    "sample_index": pl.Series([j for _ in range(n) for j in range(k)], dtype=pl.Int32),
    "seed": pl.Series([0] * (n * k), dtype=pl.Int64),
    "response_tokens": pl.Series([200] * (n * k), dtype=pl.Int32),
    "finish_reason": ["stop"] * (n * k),
    "repetitive": [False] * (n * k),
}
pl.DataFrame(rows).write_parquet(out, row_group_size=16384)  # as dno writes its files
PYEOF
  stats="$WORK/time$n"
  /usr/bin/time -o "$stats" -f "%e %M" "$DNO" -q annotate --samples "$WORK/s$n.parquet" --out "$WORK/p$n.parquet" --oracle verifier --force
  read -r secs kb <"$stats"
  judged=$("$PY" -c "import polars as pl,sys; print(pl.read_parquet(sys.argv[1]).height)" "$WORK/p$n.parquet")
  echo "| $(basename "$DNO") | $n | $((n * 4)) | $judged | $secs | $((kb / 1024)) |"
done
