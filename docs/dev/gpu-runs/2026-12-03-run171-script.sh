#!/usr/bin/env bash
# run 171 (written in session 32, NOT YET RUN): the experts' weights (GEMM0's up and gate,
# GEMM1's down) stored as tiles in the MoE kernel (gpu-check --weight-tiles:
# CudaOptions::weight_tiles, FDM_WEIGHT_TILES; perf-notes v45 (d)): the upload swizzles each block
# of bn rows into the engine's tiles, the producer loads each tile by one bulk copy (a paired
# task's half by a multicast bulk copy). First correct: four checks with it, the default's
# digests on every timed layer (the same math, bit for bit). Then alternated against the
# default in one call. Prediction (run 170's tile bench:
# -3.6% on DeepSeek-V3's GEMM0 stream at K 7168, level at K 2048): DeepSeek-V3's GEMM0 main
# loops -3 to -4% and its GEMM1's level, the forward -2 to -3%;
# T16384 E8 (weights in L2) level. Mixtral, Kimi-K2, T128 E8 and T16384 E128: run 172.
# Carry: .carry/gpu-check built from main (5dfab35 or later). ~470 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-500}; source scripts/gpu-phases.sh
wt="--weight-tiles"
checks="=small column groups,=virtual P=2 column groups,=forced timeout + recovery virtual P=2,=combine stream small top-8"
ph checks 60 .carry/gpu-check --quick $wt --only "$checks"
ph e8-wt 30 .carry/gpu-check $wt --only "=paper-t16384-e8"
ph e8-base 30 .carry/gpu-check --only "=paper-t16384-e8"
ph dsv3-base 90 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-wt 90 .carry/gpu-check $wt --only "=preset deepseek-v3"
ph dsv3-wt2 90 .carry/gpu-check $wt --only "=preset deepseek-v3"
ph dsv3-base2 90 .carry/gpu-check --only "=preset deepseek-v3"
tar czf $OUT/run171.tgz -C $w .
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-170
ab_lines e8-wt e8-base dsv3-base dsv3-wt dsv3-wt2 dsv3-base2
for f in e8-wt e8-base dsv3-base dsv3-wt dsv3-wt2 dsv3-base2; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "^preset\|^paper\|host seconds" $w/$f.log | grep -o "^[a-z].*\|host seconds: .*" | cut -c1-200; }
done
cat $w/summary.txt
