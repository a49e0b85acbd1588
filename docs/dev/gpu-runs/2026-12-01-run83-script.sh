#!/usr/bin/env bash
# run 83 (nvidia-h200): GEMM0's first weights prefetched into L2 under phase A (.carry/p: 32
# MiB, the committed policy; .carry/p48: the same with 48 MiB) against the combine batching
# alone (.carry/c, 5667d6a), alternated twice (back to back, verified); a trace of p at T128
# E8; then p's gpu-check --quick.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-560}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2; do for side in c p p48; do for preset in paper-t128-e8 paper-t128-e32 paper-t128-e128 paper-t4096-e128 paper-t4096-e8; do
  ph $preset-$side-$r 25 .carry/$side/flashdmoe run --preset $preset --backend cuda --back-to-back 100
done; done; done
ph trace-paper-t128-e8 20 .carry/p/flashdmoe run --preset paper-t128-e8 --backend cuda --trace $w/trace-paper-t128-e8.json
gzip -f $w/trace-paper-t128-e8.json 2>/dev/null
ph quick 180 .carry/p/gpu-check --quick
tar czf $OUT/run83.tgz -C $w .
for f in $w/paper*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
for f in $w/trace-*.log; do echo "== $(basename $f .log)"; grep -E '^(trace|task times|verify)' $f | cut -c1-300; done
grep -h -E "^\[FAIL|passed" $w/quick.log | cut -c1-150
tail -3 $w/summary.txt
