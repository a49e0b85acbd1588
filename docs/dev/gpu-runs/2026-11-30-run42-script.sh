#!/usr/bin/env bash
# run 42: wide GEMM1 tiles for gated layers + a 64-slot scheduler window (perf-notes v18) against
# the v17 build (.carry/base): --quick with the new build, real models back to back (base, new
# alternated, traced), PyTorch on the same presets, and the paper layer's T4096 E32/E128.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d)
t0=$(date +%s)
timeout 170 .carry/gpu-check --quick --json $w/quick.jsonl > $w/quick.log 2>&1; echo "quick rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
for p in qwen3-30b-a3b olmoe-1b-7b qwen1.5-moe-a2.7b mixtral-8x7b; do
  for side in base new; do
    d=.carry; [ $side = base ] && d=.carry/base
    t0=$(date +%s)
    timeout 90 $d/flashdmoe run --preset $p --world 1 --dropless --backend cuda --back-to-back 30 --trace $w/$p-$side.json > $w/$p-$side.log 2>&1; echo "$p $side rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
  done
done
t0=$(date +%s)
timeout 150 .carry/gpu-check --only paper-t4096-e32,paper-t4096-e128 --json $w/paper-new.jsonl > $w/paper-new.log 2>&1; echo "paper new rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
timeout 150 .carry/base/gpu-check --only paper-t4096-e32,paper-t4096-e128 --json $w/paper-base.jsonl > $w/paper-base.log 2>&1; echo "paper base rc=$?" >> $w/summary.txt
t0=$(date +%s)
timeout 200 .carry/flashdmoe bench --preset qwen3-30b-a3b-dropless olmoe-1b-7b-dropless mixtral-8x7b-dropless --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/bench > $w/bench.log 2>&1; echo "bench rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
gzip $w/qwen3-30b-a3b-*.json; rm -f $w/*.json
tar czf $OUT/run42.tgz -C $w .
grep -E "passed|failed" $w/quick.log | tail -2; grep -h "^\[FAIL\]" $w/*.log | cut -c1-300
for f in $w/*-base.log $w/*-new.log; do echo "$(basename $f): $(grep -h -o 'busy [0-9.]*% of the [0-9.]* ms task phase' $f) $(grep -h -o 'back to back: [0-9.]* ms' $f) $(grep -h -o 'verify: [A-Z]*' $f)"; done
grep -h -E "^paper|check " $w/paper-*.log | cut -c1-100
grep -vE ": (build|first forward|check again)" $w/bench.log | grep -E "flashdmoe-cuda|graph|cublas|^[a-z]" | cut -c1-140 | tail -20
cat $w/summary.txt
