#!/usr/bin/env bash
# run 64 (nvidia-h200-x2): A4 copies a row from registers, 8 vectors a lane in flight (branch dispatch-loads,
# .carry/d) against main (.carry/m): paper T8192/GPU E32 at P = 2 alternated twice (back to back,
# traced, verified), P = 1 once each; the remote-copiers test with d (1/65/131 copiers against the
# oracle); P = 2 dropless with d; the mma.sync engine's virtual P = 2 (local copies) with d.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-300}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2; do for side in d m; do
  ph p2-$side-$r 20 .carry/$side/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --back-to-back 50 --trace $w/p2-$side-$r.json
done; done
for side in d m; do ph p1-$side 20 .carry/$side/flashdmoe run --preset paper-t8192-e32 --world 1 --backend cuda --back-to-back 50; done
ph rc-test 60 .carry/d/remote_copiers --nocapture
ph p2-d-dropless 20 .carry/d/flashdmoe run --preset paper-t8192-e32 --dropless --world 2 --backend cuda --back-to-back 50 --trace $w/p2-d-dropless.json
ph p2-d-c65 20 .carry/d/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --remote-copiers 65 --back-to-back 50 --trace $w/p2-d-c65.json
ph mma-virtual 60 .carry/d/gpu-check --engine mma-sync --only "virtual P=2"
gzip -f $w/*.json; tar czf $OUT/run64.tgz -C $w .
for f in $w/p*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E "PASS|FAIL|test result" $w/rc-test.log | cut -c1-120; grep -h -E "^\[(ok|FAIL)" $w/mma-virtual.log | cut -c1-150
cat $w/summary.txt
