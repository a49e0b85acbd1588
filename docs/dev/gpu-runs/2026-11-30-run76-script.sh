#!/usr/bin/env bash
# run 76 (nvidia-h200): ragged last column tiles on the Hopper engine (issue 16 lever: gpt-oss's
# 2880 in 128-column tiles instead of 64; branch ragged-tiles, .carry/r) against main 3bfab9e
# (.carry/m). Ragged shapes verified on one GPU (gated and not, wide GEMM1 beside a ragged GEMM0,
# two virtual ranks, dropless); gpt-oss-20b back to back alternated with main; then both gpt-oss
# presets against PyTorch's graph in one bench call; gpu-check's gpt-oss and virtual P=2 cases.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-540}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
R=".carry/r/flashdmoe run --backend cuda --tokens 2048 --experts 16 --top-k 2 --back-to-back 20"
ph rag-swiglu 40 $R --hidden 2880 --inter 2880 --activation swiglu --bias
ph rag-relu 40 $R --hidden 2880 --inter 2880 --activation relu
ph rag-wide-gemm0 40 $R --hidden 2048 --inter 2880 --activation swiglu
ph rag-gemm1 40 $R --hidden 2880 --inter 2048 --activation swiglu --dropless
ph rag-virtual-p2 40 $R --hidden 2880 --inter 2880 --activation swiglu --world 2 --ranks-per-gpu 2
for side in r m r m; do ph oss20-$side-$(date +%s) 60 .carry/$side/flashdmoe run --preset gpt-oss-20b --backend cuda --back-to-back 20; done
ph bench 200 .carry/r/flashdmoe bench --preset gpt-oss-20b gpt-oss-120b --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/bench
ph check 60 .carry/r/gpu-check --only "gpt-oss,virtual P=2"
tar czf $OUT/run76.tgz -C $w .
for f in $w/rag*.log $w/oss*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(kernel: .{0,90}|verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -vE "^\s*note" $w/bench.log | grep -E "^(gpt|config| )" | tail -14 | cut -c1-150
grep -h -E "^\[(ok|FAIL)|passed" $w/check.log | cut -c1-120
cat $w/summary.txt
