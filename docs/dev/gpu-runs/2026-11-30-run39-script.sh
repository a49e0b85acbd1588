#!/usr/bin/env bash
# run 39: tile bench (branch tma-rows rebased on main: whole-tile TMA A, steady-state plain and SwiGLU shapes) + torch.mm,
# the quick checks at the merged kernel, mma-sync T128, traces of T128 E8, T4096 E32 and Qwen3 T4096.
set -u -o pipefail
source scripts/gpu-env.sh
mkdir -p $OUT/traces
t0=$(date +%s)
TILE_BENCH_BIN=.carry/tma/tile-bench TILE_TIMEOUT=60 timeout 200 bash scripts/gpu-tile-bench.sh > $OUT/tile-bench.txt 2>&1; echo "tile-bench rc=$? $(( $(date +%s)-t0 )) s" >> $OUT/summary.txt
t0=$(date +%s)
timeout 170 .carry/gpu-check --quick --json $OUT/quick.jsonl > $OUT/quick.log 2>&1; echo "quick rc=$? $(( $(date +%s)-t0 )) s" >> $OUT/summary.txt
t0=$(date +%s)
timeout 40 .carry/gpu-check --engine mma-sync --only paper-t128-e8 > $OUT/mma-t128.log 2>&1; echo "mma-t128 rc=$? $(( $(date +%s)-t0 )) s" >> $OUT/summary.txt
for p in paper-t128-e8 paper-t4096-e32; do
  t0=$(date +%s)
  timeout 40 .carry/flashdmoe run --preset $p --world 1 --backend cuda --trace $OUT/traces/$p.json > $OUT/traces/$p.log 2>&1; echo "trace $p rc=$? $(( $(date +%s)-t0 )) s" >> $OUT/summary.txt
done
t0=$(date +%s)
timeout 90 .carry/flashdmoe run --preset qwen3-30b-a3b --tokens 4096 --world 1 --dropless --backend cuda --trace $OUT/traces/qwen3.json > $OUT/traces/qwen3.log 2>&1; echo "trace qwen3 rc=$? $(( $(date +%s)-t0 )) s" >> $OUT/summary.txt
gzip $OUT/traces/*.json
grep -E '^(ok|FAIL) |^torch.mm' $OUT/tile-bench.txt
grep -E "passed|failed|FAIL" $OUT/quick.log | tail -5
grep -E "^\[" $OUT/mma-t128.log | cut -c1-300
grep -h -E "utilis|busy|PASS|FAIL|error" $OUT/traces/*.log | cut -c1-300
cat $OUT/summary.txt
