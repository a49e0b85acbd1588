#!/usr/bin/env bash
# run 56: session 11's first call. Three builds, all rebased on main b6e4e9d:
#   base (.carry/base/) = main; w (.carry/w/) = branch weights-in-gemm1 (third form);
#   s (.carry/s/) = branch sched-window (kWindow 128).
# The paper layer T16384/T4096/T128 alternated twice (verified, traced, back to back); Qwen3
# on w (its kernel: line must name wgmma); gpu-check --quick on w, both engines, as time allows.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((560 - ($(date +%s) - start))); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
for round in 1 2; do
  for side in w s base; do
    timeout 100 .carry/$side/gpu-check --only paper-t16384-e8,paper-t4096-e8,paper-t128-e8,paper-t128-e32 > $w/check-$side-$round.log 2>&1; echo "check $side $round rc=$? left $(left)" >> $w/summary.txt
  done
done
timeout 40 .carry/w/flashdmoe run --preset qwen3-30b-a3b --world 1 --dropless --backend cuda --back-to-back 20 > $w/qwen3-w.log 2>&1; echo "qwen3 w rc=$? left $(left)" >> $w/summary.txt
[ "$(left)" -gt 40 ] && { timeout $(( $(left) - 170 > 40 ? 175 : $(left) - 8 )) .carry/w/gpu-check --quick > $w/quick.log 2>&1; echo "quick rc=$? left $(left)" >> $w/summary.txt; }
[ "$(left)" -gt 40 ] && { timeout $(( $(left) - 8 )) .carry/w/gpu-check --engine mma-sync --quick > $w/quick-mma.log 2>&1; echo "quick mma rc=$? left $(left)" >> $w/summary.txt; }
tar czf $OUT/run56.tgz -C $w .
for f in $w/check-*.log; do echo "== $(basename $f)"; grep -h -E "^\[(ok|FAIL)" $f | sed -E 's/^\[([a-zA-Z]+)\] ([^ ]+( dropless)?) .*(kernel [0-9]+us).*gemm0 n=[0-9]+ (mean [0-9.]+us).*gemm1 n=[0-9]+ (mean [0-9.]+us).*combine n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*back to back ([0-9.]+ ms).*/\1 \2 \4 g0 \5 g1 \6 comb \7 b2b \8/' | cut -c1-160; done
echo "qwen3 w: $(grep -h -o 'kernel: .*' $w/qwen3-w.log | cut -c1-120) $(grep -h -o 'back to back: [0-9.]* ms' $w/qwen3-w.log) $(grep -h -o 'verify: [A-Z]*' $w/qwen3-w.log)"
for q in quick quick-mma; do echo "$q: $(grep -c '^\[ok\]' $w/$q.log) ok; $(grep -E 'passed|failed' $w/$q.log | tail -1)"; done
grep -h "^\[FAIL\]" $w/*.log | cut -c1-400
cat $w/summary.txt
