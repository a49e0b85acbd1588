#!/usr/bin/env bash
# run 69 (nvidia-h200-x4): how many remote copiers at P = 4 (branch deferred-return, .carry/d):
# paper T8192/GPU E32, back to back, verified; 32 (the default: a quarter), 48, 65, 98, then 32 again.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-240}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for c in 32 48 65 98 32b; do
  ph c$c 25 .carry/d/flashdmoe run --preset paper-t8192-e32 --world 4 --backend cuda --remote-copiers ${c%b} --back-to-back 50 --trace $w/c$c.json
done
gzip -f $w/*.json; tar czf $OUT/run69.tgz -C $w .
for f in $w/*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms|per forward: .*)' $f | tr '\n' ' ')"; done
cat $w/summary.txt
