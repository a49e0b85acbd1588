#!/usr/bin/env bash
# run 68 (nvidia-h200-x4): GEMM1 tiles returned to a peer fenced and signalled at the consumers'
# next pause (branch deferred-return, .carry/d) against main c725896 (.carry/m): the paper layer
# T8192/GPU E32 at P = 4 alternated twice and P = 2 once (back to back, 50 forwards, verified);
# with d also the remote-copiers test (1/65/131 copiers against the oracle), a SwiGLU layer (wide
# GEMM1 halves) at P = 4 and the paper layer dropless at P = 4.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-420}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2; do for side in d m; do
  ph p4-$side-$r 25 .carry/$side/flashdmoe run --preset paper-t8192-e32 --world 4 --backend cuda --back-to-back 50 --trace $w/p4-$side-$r.json
done; done
for side in d m; do ph p2-$side 25 .carry/$side/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --back-to-back 50; done
ph rc-test 60 .carry/d/remote_copiers --nocapture
for side in d m; do
  ph swiglu-p4-$side 25 .carry/$side/flashdmoe run --world 4 --tokens 8192 --hidden 2048 --inter 1024 --experts 32 --top-k 2 --activation swiglu --dtype bf16 --backend cuda --back-to-back 50
done
ph dropless-p4-d 25 .carry/d/flashdmoe run --preset paper-t8192-e32 --dropless --world 4 --backend cuda --back-to-back 50
gzip -f $w/*.json; tar czf $OUT/run68.tgz -C $w .
for f in $w/*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms|per forward: .*)' $f | tr '\n' ' ')"; done
grep -h -E "PASS|FAIL|test result|skipped" $w/rc-test.log | cut -c1-120
cat $w/summary.txt
