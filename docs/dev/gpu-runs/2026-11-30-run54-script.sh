#!/usr/bin/env bash
# run 54: weights in GEMM1 with the weights' address found by the producer a task ahead, plus up
# to 8 pipeline stages for small tiles (.carry/w/) against main 647fb06 (.carry/base/): the paper
# layer T16384/T4096/T128 alternated twice (verified, traced, back to back); gated real models
# back to back; gpu-check --quick with the new build.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((480 - ($(date +%s) - start))); }
for round in 1 2; do
  for side in w base; do
    timeout 100 .carry/$side/gpu-check --only paper-t16384-e8,paper-t4096-e8,paper-t128-e8,paper-t128-e32 > $w/check-$side-$round.log 2>&1; echo "check $side $round rc=$? left $(left)" >> $w/summary.txt
  done
done
for p in qwen3-30b-a3b mixtral-8x7b; do
  for side in w base; do
    [ "$(left)" -lt 190 ] && break
    timeout 60 .carry/$side/flashdmoe run --preset $p --world 1 --dropless --backend cuda --back-to-back 20 > $w/$p-$side.log 2>&1; echo "$p $side rc=$? left $(left)" >> $w/summary.txt
  done
done
[ "$(left)" -gt 60 ] && { timeout $(( $(left) - 5 )) .carry/w/gpu-check --quick > $w/quick.log 2>&1; echo "quick rc=$? left $(left)" >> $w/summary.txt; }
tar czf $OUT/run54.tgz -C $w .
for f in $w/check-*.log; do echo "== $(basename $f)"; grep -h -E "^\[(ok|FAIL)" $f | sed -E 's/^\[([a-zA-Z]+)\] ([^ ]+( dropless)?) .*(kernel [0-9]+us).*gemm0 n=[0-9]+ (mean [0-9.]+us).*gemm1 n=[0-9]+ (mean [0-9.]+us).*combine n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*back to back ([0-9.]+ ms).*/\1 \2 \4 g0 \5 g1 \6 comb \7 b2b \8/' | cut -c1-160; done
for f in $w/*-w.log $w/*-base.log; do echo "$(basename $f): $(grep -h -o 'tasks: .*' $f) $(grep -h -o 'back to back: [0-9.]* ms' $f) $(grep -h -o 'verify: [A-Z]*' $f)"; done
grep -E "passed|failed" $w/quick.log | tail -2; grep -h "^\[FAIL\]" $w/*.log | cut -c1-400
cat $w/summary.txt
