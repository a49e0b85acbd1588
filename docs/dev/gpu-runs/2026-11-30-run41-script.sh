#!/usr/bin/env bash
# run 41: A/B of the scheduler rounds (perf-notes v17): base = dddaa90 (.carry/base), new = .carry;
# Qwen3-30B-A3B T4096 traced, both sides; the tile bench's main loop alone (no-store), 4 stages
# and K 8192 at the steady-state shape (branch tma-rows).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d)
t0=$(date +%s)
for side in base new round2-base round2-new; do
  d=.carry; case $side in *base) d=.carry/base;; esac
  timeout 60 $d/flashdmoe run --preset qwen3-30b-a3b --tokens 4096 --world 1 --dropless --backend cuda --back-to-back 50 --trace $w/qwen3-$side.json > $w/qwen3-$side.log 2>&1; echo "qwen3 $side rc=$?" >> $w/summary.txt
done
echo "qwen3 A/B $(( $(date +%s)-t0 )) s" >> $w/summary.txt
t0=$(date +%s)
TILE_BENCH=.carry/tma/tile-bench
for t in "m16384 n8192 k4096 no-store" "s4 m16384 n8192 k4096 plain" "s3 e512 m16384 n8192 k4096 plain" "k8192"; do
  timeout 60 $TILE_BENCH --only "$t" --iters 20 2>&1 | grep -v '^|\|^tile-bench:\|^device' >> $w/tile.log
done
python3 bench/baselines/torch_mm.py --shape 16384 8192 4096 --shape 16384 8192 8192 >> $w/tile.log 2>&1
echo "tiles $(( $(date +%s)-t0 )) s" >> $w/summary.txt
OUT=$w/ab CASES=paper-t128-e8,paper-t4096-e32,paper-t16384-e8 TILES=none ROUNDS=2 BUDGET=420 bash scripts/gpu-ab.sh > $w/ab.txt 2>&1
for f in $w/qwen3-*.json; do gzip $f; done
tar czf $OUT/run41.tgz -C $w .
cp $w/ab.txt $w/tile.log $OUT/
grep -h -E "busy|time:|back to back|PASS|FAIL|error" $w/qwen3-*.log | cut -c1-200
cat $w/tile.log | grep -E "^ok|^FAIL|torch.mm"
tail -25 $w/ab.txt
cat $w/summary.txt
