#!/usr/bin/env bash
# run 73 (nvidia-h200-x4, GPU 0 only): one GPU is unchanged by branch deferred-return? (its two
# changes act only between GPUs; the consumer's code changed). Main c725896 (.carry/m) against the
# branch (.carry/o), alternated twice: paper T16384 E8, T4096 E32, T128 E8, back to back, verified.
set -u -o pipefail
source scripts/gpu-env.sh
export CUDA_VISIBLE_DEVICES=0
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-240}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2; do for side in o m; do for preset in paper-t16384-e8 paper-t4096-e32 paper-t128-e8; do
  ph $preset-$side-$r 15 .carry/$side/flashdmoe run --preset $preset --backend cuda --back-to-back 50
done; done; done
tar czf $OUT/run73.tgz -C $w .
for f in $w/*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
cat $w/summary.txt | tail -3
