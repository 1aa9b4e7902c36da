"""Writes Parquet files the way users' tools do, for tests/datain.rs (run in an empty folder).

One prompts file per writer, codec and string type (pandas, pyarrow, Polars, DuckDB with their
defaults, then each codec and string layout they offer), a chat `messages` file from pandas,
samples files with integer columns of other widths (and one whose value does not fit), a prompts
file with a wrongly typed column, and prompts files claiming dno schema versions 1 and 3.
`manifest.json` lists the prompts files and the prompts each holds.

Exit 3 when a package is missing (pandas, pyarrow, polars, duckdb).
"""

import json
import sys

try:
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:
    print(f"missing Python package: {e.name}", file=sys.stderr)
    sys.exit(3)

IDS = ["p0", "p1", "p2", "p3"]
TEXTS = ["What is 2+2?", "Explain \"quotes\",\ncommas and\ttabs.", "é你好 — unicode ✓", "What is 2+2?"]
files = []


def table(string_type=pa.string()):
    return pa.table({"prompt_id": pa.array(IDS, string_type), "prompt": pa.array(TEXTS, string_type)})


# pandas: default (pyarrow engine, snappy), and a categorical (dictionary-encoded) prompt column.
df = pd.DataFrame({"prompt_id": IDS, "prompt": TEXTS})
df.to_parquet("pandas-default.parquet")
df.astype({"prompt": "category"}).to_parquet("pandas-category.parquet")
files += ["pandas-default.parquet", "pandas-category.parquet"]

# pyarrow: every codec it writes ("lz4" is LZ4_RAW), then every string layout.
for codec in ["snappy", "gzip", "lz4", "brotli", "zstd", "none"]:
    pq.write_table(table(), f"pyarrow-{codec}.parquet", compression=codec)
    files.append(f"pyarrow-{codec}.parquet")
for name, ty in [("large_string", pa.large_string()), ("string_view", pa.string_view())]:
    pq.write_table(table(ty), f"pyarrow-{name}.parquet")
    files.append(f"pyarrow-{name}.parquet")
pq.write_table(pa.table({"prompt_id": pa.array(IDS).dictionary_encode(), "prompt": pa.array(TEXTS).dictionary_encode()}), "pyarrow-dictionary.parquet")
files.append("pyarrow-dictionary.parquet")

# Polars: default (zstd, string_view in memory), every codec, and a categorical column.
pdf = pl.DataFrame({"prompt_id": IDS, "prompt": TEXTS})
pdf.write_parquet("polars-default.parquet")
files.append("polars-default.parquet")
for codec in ["snappy", "gzip", "lz4", "brotli", "uncompressed"]:
    pdf.write_parquet(f"polars-{codec}.parquet", compression=codec)
    files.append(f"polars-{codec}.parquet")
pdf.with_columns(pl.col("prompt").cast(pl.Categorical)).write_parquet("polars-categorical.parquet")
files.append("polars-categorical.parquet")

# DuckDB: default (snappy) and every codec.
con = duckdb.connect()
con.register("df", df)
con.execute("COPY (SELECT * FROM df) TO 'duckdb-default.parquet' (FORMAT parquet)")
files.append("duckdb-default.parquet")
for codec in ["zstd", "gzip", "brotli", "lz4", "lz4_raw", "uncompressed"]:
    con.execute(f"COPY (SELECT * FROM df) TO 'duckdb-{codec}.parquet' (FORMAT parquet, COMPRESSION {codec})")
    files.append(f"duckdb-{codec}.parquet")

# A chat dataset as pandas writes it: messages is list<struct<role, content>>.
pd.DataFrame(
    {
        "id": ["c0"],
        "messages": [
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name a colour."},
            ]
        ],
    }
).to_parquet("chat-pandas.parquet")

# Samples with integer columns of other widths, and one whose value does not fit in int32.
def samples(response_tokens):
    n = len(response_tokens)
    return {
        "prompt_id": ["q0", "q0"][:n],
        "sample_id": ["a", "b"][:n],
        "prompt": ["1+1"] * n,
        "answer": ["2"] * n,
        "response": ["2", "3"][:n],
        "source": ["policy"] * n,
        "policy": ["ext"] * n,
        "sample_index": pa.array([0, 1][:n], pa.int8()),
        "seed": pa.array([7] * n, pa.uint64()),
        "response_tokens": pa.array(response_tokens, pa.int64()),
        "finish_reason": ["stop"] * n,
        "repetitive": [False] * n,
    }


pq.write_table(pa.table(samples([1, 1])), "samples-ints.parquet")
pq.write_table(pa.table(samples([1, 2**40])), "samples-overflow.parquet")

# Wrong type: a numeric prompt column.
pq.write_table(pa.table({"prompt_id": ["a"], "prompt": pa.array([5], pa.int64())}), "prompts-badtype.parquet")

# dno metadata of older and newer schema versions (version 1 has no `history` column).
for v in ["1", "3"]:
    t = table().replace_schema_metadata({"dno.schema": "prompts", "dno.schema_version": v})
    pq.write_table(t, f"prompts-v{v}.parquet")

json.dump({"files": files, "ids": IDS, "texts": TEXTS}, open("manifest.json", "w"))
print("wrote", len(files), "prompts files")
