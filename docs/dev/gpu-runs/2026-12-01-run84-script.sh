#!/usr/bin/env bash
# run 84 (nvidia-h200): the batched combine enqueue (.carry/c, 5667d6a) against main 4ac2026
# (.carry/m) at E128 (T128, T4096; run 83 timed c alone there), alternated twice; then c's
# mma.sync engine on the paper and virtual-rank cases of gpu-check --quick (the subscriber is
# shared by both engines).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-300}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2; do for side in m c; do for preset in paper-t128-e128 paper-t4096-e128; do
  ph $preset-$side-$r 25 .carry/$side/flashdmoe run --preset $preset --backend cuda --back-to-back 100
done; done; done
ph quick-mma 60 .carry/c/gpu-check --quick --engine mma-sync --only paper,virtual
tar czf $OUT/run84.tgz -C $w .
for f in $w/paper*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E "^\[FAIL|passed|^\[ok" $w/quick-mma.log | cut -c1-150
tail -3 $w/summary.txt
