#!/usr/bin/env bash
# run 72 (nvidia-h200-x4): branch deferred-return (both changes, .carry/o): the weak-scaling grid
# (P = 1, 2, 4; P = 8 skipped) against torch-single and torch-ep in one call; the new dispatch
# order on uneven and scattered placements at P = 4 (30 experts: rank 3 owns 6 of 8 slots; a
# placement table), both engines; the mma.sync engine's virtual P = 4 cases (it copies local rows
# too, in the new order).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-480}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
ph weak 200 .carry/o/flashdmoe bench --backend cuda --config bench/grids/weak-scaling.toml --baselines torch-single,torch-ep \
  --iters 20 --warmup 5 --out $w/weak
ph uneven-p4 25 .carry/o/flashdmoe run --world 4 --tokens 4096 --hidden 2048 --inter 1024 --experts 30 --top-k 2 --backend cuda --back-to-back 20
ph table-p4 25 .carry/o/flashdmoe run --world 4 --tokens 4096 --hidden 2048 --inter 1024 --experts 16 --top-k 2 \
  --placement 3,1,0,2,2,0,1,3,0,0,1,2,3,3,1,0 --backend cuda --back-to-back 20
ph table-p4-swiglu-dropless 25 .carry/o/flashdmoe run --world 4 --tokens 4096 --hidden 2048 --inter 1024 --experts 16 --top-k 2 \
  --activation swiglu --dropless --placement 3,1,0,2,2,0,1,3,0,0,1,2,3,3,1,0 --backend cuda --back-to-back 20
ph mma-virtual 120 .carry/o/gpu-check --engine mma-sync --only "virtual P=4"
tar czf $OUT/run72.tgz -C $w .
grep -vE "^\s*note" $w/weak.log | tail -16 | cut -c1-150
for f in $w/[ut]*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E "^\[(ok|FAIL)|passed" $w/mma-virtual.log | cut -c1-110
cat $w/summary.txt
