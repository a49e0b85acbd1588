#!/usr/bin/env bash
# run 82 (nvidia-h200): the combine tasks enqueued a warp's completed groups at once (.carry/c,
# 5667d6a) and, on top, publish() fencing once a thread (.carry/c2, d86dc0c), against main 4ac2026
# (.carry/m), alternated twice on the paper layer (back to back, verified); traces of c2; then
# c2's gpu-check --quick.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-560}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2; do for side in m c c2; do for preset in paper-t128-e8 paper-t128-e32 paper-t4096-e8 paper-t4096-e32 paper-t16384-e8; do
  ph $preset-$side-$r 20 .carry/$side/flashdmoe run --preset $preset --backend cuda --back-to-back 100
done; done; done
for p in paper-t128-e8 paper-t4096-e8 paper-t16384-e8; do
  ph trace-$p 20 .carry/c2/flashdmoe run --preset $p --backend cuda --trace $w/trace-$p.json
  gzip -f $w/trace-$p.json 2>/dev/null
done
ph quick 200 .carry/c2/gpu-check --quick
tar czf $OUT/run82.tgz -C $w .
for f in $w/paper*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
for f in $w/trace-*.log; do echo "== $(basename $f .log)"; grep -E '^(trace|task times|verify)' $f | cut -c1-300; done
grep -h -E "^\[FAIL|passed" $w/quick.log | cut -c1-150
tail -3 $w/summary.txt
