#!/usr/bin/env bash
# run 67 (nvidia-h200-x4): the first 4-GPU run of the Hopper engine (issue 13 target: weak scaling
# T = 8192 a GPU, E = 32 within 10% from 1 to 4 GPUs, >= 3x faster than PyTorch EP graph at P = 4).
# Main c725896. The weak-scaling grid against torch-single and torch-ep in one call (P = 8 skipped),
# then P = 1 / 2 / 4 back to back (50 forwards, one process) with traces for where P = 4's time goes.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-540}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
nvidia-smi topo -m > $w/topo.txt 2>&1
ph weak 200 .carry/flashdmoe bench --backend cuda --config bench/grids/weak-scaling.toml --baselines torch-single,torch-ep \
  --iters 20 --warmup 5 --out $w/weak
for p in 4 1 2 4; do
  ph p$p-$(date +%s) 25 .carry/flashdmoe run --preset paper-t8192-e32 --world $p --backend cuda --back-to-back 50 --trace $w/p$p-$(date +%s).json
done
gzip -f $w/*.json; tar czf $OUT/run67.tgz -C $w .
grep -vE "^\s*note" $w/weak.log | tail -22 | cut -c1-160
for f in $w/p*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms|per forward: .*)' $f | tr '\n' ' ')"; done
cat $w/summary.txt
