#!/bin/bash
# Side-by-side throughput: before (commit 4324540, built into $BEFORE_BIN, default /tmp/before_bin: see
# docs/benchmarks.md) and after (build/bin), alternated, 5 runs each. Outputs in $OUT (default /tmp/benchab2).
BEFORE_BIN=${BEFORE_BIN:-/tmp/before_bin}
cd "$(dirname "$0")/../../../.."; mkdir -p "${OUT:-/tmp/benchab2}"
for i in 1 2 3 4 5; do
  for side in before after; do
    dir=$BEFORE_BIN; [ $side = after ] && dir=build/bin
    build/bin/specwatch-bench --scenario throughput --repeat 1 --seconds 10 --denoised-payload scores --bin-dir $dir --json-out ${OUT:-/tmp/benchab2}/$side-$i.json > ${OUT:-/tmp/benchab2}/$side-$i.txt 2>&1
  done
done
echo done > ${OUT:-/tmp/benchab2}/finished
