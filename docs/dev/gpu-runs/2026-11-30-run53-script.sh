#!/usr/bin/env bash
# run 53: the routing weight in GEMM1's epilogue (branch weights-in-gemm1 rebased on main,
# .carry/w/) against main 647fb06 (.carry/base/): paper T16384/T4096 E8 alternated twice
# (verified, traced, back to back); gpu-check --quick on both engines with the branch's build;
# then the open mma.sync T128 E8 timeout under compute-sanitizer (main's build).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((575 - ($(date +%s) - start))); }
for round in 1 2; do
  for side in w base; do
    d=.carry/$side
    timeout 100 $d/gpu-check --only paper-t16384-e8,paper-t4096-e8 > $w/check-$side-$round.log 2>&1; echo "check $side $round rc=$? left $(left)" >> $w/summary.txt
  done
done
timeout 200 .carry/w/gpu-check --quick > $w/quick.log 2>&1; echo "quick rc=$? left $(left)" >> $w/summary.txt
timeout 200 .carry/w/gpu-check --quick --engine mma-sync > $w/quick-mma.log 2>&1; echo "quick mma rc=$? left $(left)" >> $w/summary.txt
if [ "$(left)" -gt 40 ]; then
  timeout $(( $(left) - 25 )) compute-sanitizer --tool memcheck --print-limit 20 .carry/base/gpu-check --engine mma-sync --only paper-t128-e8 > $w/sanitizer-memcheck.log 2>&1; echo "memcheck rc=$? left $(left)" >> $w/summary.txt
fi
tar czf $OUT/run53.tgz -C $w .
for f in $w/check-*.log; do echo "== $(basename $f)"; grep -h -E "^\[(ok|FAIL)" $f | sed -E 's/.*\] (PASS|FAIL).*(kernel [0-9]+us).*(busy [0-9]+%).*gemm0 n=[0-9]+ (mean [0-9.]+us).*gemm1 n=[0-9]+ (mean [0-9.]+us).*combine n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*back to back ([0-9.]+ ms).*/\1 \2 \3 g0 \4 g1 \5 comb \6 b2b \7/' | cut -c1-200; done
grep -E "passed|failed" $w/quick.log $w/quick-mma.log | tail -4; grep -h "^\[FAIL\]" $w/*.log | cut -c1-400
grep -E "ERROR|Invalid|=========" $w/sanitizer-memcheck.log | head -30
cat $w/summary.txt
