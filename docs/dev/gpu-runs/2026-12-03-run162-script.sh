#!/usr/bin/env bash
# run 162 (session 31): the producer's L2 prefetch one and two k-tiles past its four stages
# (FDM_B_PREFETCH_AHEAD=5 and =6), after run 161's D = 8 lost everywhere (DeepSeek-V3 +27%,
# its <= half GEMM0 main loops 79.7 -> 115.9 µs; T16384 E128 +26%; even T16384 E8, whose
# weights L2 shares between 16 row tiles, +5%). Question: is a <= half DeepSeek-V3 tile bound by
# the latency of its bytes in flight (then one k-tile more in flight shortens it) or by the
# DRAM system's rate (then any prefetch only adds traffic)? Binary: 1af205a (the experiments
# were removed from main after run 161; this call's gpu-check was built from 1af205a, the code
# kept as 2026-12-03-run161-experiments.patch).
# Prediction: D = 5 level to +3% on DeepSeek-V3 (the prefetch's own cost, ~3% at T16384 E8 in
# run 161, against little or no latency gain), D = 6 worse than D = 5; a latency-bound tile
# would instead show its <= half GEMM0 main loop 79.7 -> 70-75 µs and the forward -2 to -4%.
# Carry: .carry/gpu-check built at 1af205a. ~520 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
p5="env FLASHDMOE_EXTRA_DEFINES=FDM_B_PREFETCH_AHEAD=5"
p6="env FLASHDMOE_EXTRA_DEFINES=FDM_B_PREFETCH_AHEAD=6"
checks="=small column groups,=virtual P=2 column groups"
ph checks 30 $p5 .carry/gpu-check --quick --only "$checks"
ph dsv3-base 85 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-p5 85 $p5 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-p6 85 $p6 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-base2 85 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-p5b 85 $p5 .carry/gpu-check --only "=preset deepseek-v3"
ph e128-base 25 .carry/gpu-check --only "=paper-t16384-e128"
ph e128-p5 25 $p5 .carry/gpu-check --only "=paper-t16384-e128"
tar czf $OUT/run162.tgz -C $w .
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-150
for f in dsv3-base dsv3-p5 dsv3-p6 dsv3-base2 dsv3-p5b e128-base e128-p5; do
  echo "== $f"; grep -o -E "output digest [0-9a-f]+|in-task µs \([^)]*\): [^;]*|back to back [0-9.]+ ms" $w/$f.log | tr '\n' ' '; echo
  grep -h "^preset\|^paper" $w/$f.log
done
cat $w/summary.txt
