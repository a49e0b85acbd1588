#!/usr/bin/env bash
# run 77 (nvidia-h200): does the ragged-tile masking cost the paper layer anything? Branch
# ragged-tiles (.carry/r) against main 3bfab9e (.carry/m) alternated twice: paper T16384 E8,
# T4096 E32, T128 E8 (back to back, verified); then the branch's gpu-check --quick.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-420}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2; do for side in r m; do for preset in paper-t16384-e8 paper-t4096-e32 paper-t128-e8; do
  ph $preset-$side-$r 15 .carry/$side/flashdmoe run --preset $preset --backend cuda --back-to-back 100
done; done; done
ph quick 200 .carry/r/gpu-check --quick
tar czf $OUT/run77.tgz -C $w .
for f in $w/paper*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E "^\[FAIL|passed" $w/quick.log | cut -c1-150
cat $w/summary.txt | tail -2
