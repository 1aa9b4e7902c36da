#!/bin/sh
# Used by pipelines/Makefile with SHARDS > 1 in place of `dno` for a stage's merged output:
#   merge-shards.sh DNO STAGE ARGS... --out OUT ...
# ignores the stage's other arguments and runs `DNO merge OUT.shards --out OUT --force`
# (the shards, OUT.shards/part-I.parquet, were made by the same command with --shard I/N).
set -eu
dno=$1
shift
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out|-o) out=$2; shift ;;
    --out=*) out=${1#--out=} ;;
  esac
  shift
done
[ -n "$out" ] || { echo "merge-shards.sh: no --out in the stage command" >&2; exit 2; }
exec "$dno" merge "$out.shards" --out "$out" --force
