#!/bin/bash
# Side-by-side throughput: before (commit 4324540) and after, alternated, 5 runs each.
cd /work/main
for i in 1 2 3 4 5; do
  for side in before after; do
    dir=/tmp/before_bin; [ $side = after ] && dir=/work/main/build/bin
    build/bin/specwatch-bench --scenario throughput --repeat 1 --seconds 10 --bin-dir $dir --json-out /tmp/benchab/$side-$i.json > /tmp/benchab/$side-$i.txt 2>&1
  done
done
echo done > /tmp/benchab/finished
