#!/usr/bin/env bash
# run 71 (nvidia-h200-x4): the all-to-all probe in three orders (rank order, staggered, interleaved
# rows), then A4 taking packets owner by owner in turn from the rank after the source
# (.carry/o: deferred-return + dispatch order) against deferred-return alone (.carry/d) and main
# c725896 (.carry/m): paper T8192/GPU E32 at P = 4 alternated twice, P = 2 once (back to back,
# verified); with o also the remote-copiers test, a SwiGLU layer and the dropless layer at P = 4.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-420}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
ph probe 60 python3 docs/dev/gpu-runs/2026-11-30-run70-a2a-probe.py orders
for r in 1 2; do for side in o d m; do
  ph p4-$side-$r 25 .carry/$side/flashdmoe run --preset paper-t8192-e32 --world 4 --backend cuda --back-to-back 50 --trace $w/p4-$side-$r.json
done; done
for side in o d; do ph p2-$side 25 .carry/$side/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --back-to-back 50; done
ph rc-test 60 .carry/o/remote_copiers --nocapture
for side in o d; do
  ph swiglu-p4-$side 25 .carry/$side/flashdmoe run --world 4 --tokens 8192 --hidden 2048 --inter 1024 --experts 32 --top-k 2 --activation swiglu --dtype bf16 --backend cuda --back-to-back 50
done
ph dropless-p4-o 25 .carry/o/flashdmoe run --preset paper-t8192-e32 --dropless --world 4 --backend cuda --back-to-back 50
ph p4-o-c65 25 .carry/o/flashdmoe run --preset paper-t8192-e32 --world 4 --backend cuda --remote-copiers 65 --back-to-back 50
gzip -f $w/*.json; tar czf $OUT/run71.tgz -C $w .
cat $w/probe.log
for f in $w/[pds]*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms|per forward: .*)' $f | tr '\n' ' ')"; done
grep -h -E "PASS|FAIL|test result|skipped" $w/rc-test.log | cut -c1-100
cat $w/summary.txt
