#!/usr/bin/env bash
# run 85 (nvidia-h200): (1) is run 84's failed "forced timeout + recovery virtual P=2" on the
# mma.sync engine new? three times each with main 4ac2026 (.carry/m), the batched combines
# (.carry/c, 5667d6a) and their cooperative form (.carry/c3: the warp writes every completed
# group's descriptors together); (2) c3 against m and c at T4096 E128 (where c lost 0.8%), T4096
# E8 and T128 E8, back to back, verified.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-330}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for side in m c c3; do for r in 1 2 3; do
  ph recovery-$side-$r 30 .carry/$side/gpu-check --engine mma-sync --only "forced timeout + recovery virtual P=2"
done; done
for side in m c c3; do for preset in paper-t4096-e128 paper-t4096-e8 paper-t128-e8; do
  ph $preset-$side 20 .carry/$side/flashdmoe run --preset $preset --backend cuda --back-to-back 100
done; done
tar czf $OUT/run85.tgz -C $w .
for f in $w/recovery-*.log; do echo "$(basename $f .log): $(grep -h -E '^\[(ok|FAIL)' $f | cut -c1-230)"; done
for f in $w/paper*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
tail -3 $w/summary.txt
