#!/usr/bin/env bash
# run 180 (written in session 34, for the next session's first call): experiment
# FDM_GEMM1_EARLY (perf-notes v47 (e)): where every GEMM0 task of a one-GPU layer is in the
# first wave (T128 E8 at 64x128: 128 tasks; E16 at 64x256: 128), the OS block posts all their
# GEMM1 tasks right behind them, each gated on its row tile's counter by the producer that
# takes it. Run 177's T128 E8 trace: GEMM0 23-43 us, GEMM1 48-67, the gaps before GEMM1
# median 6.7 us (the completing processor's claim and release, a scheduler round, the
# mailbox). Prediction: T128 E8 and E16 gaps before GEMM1 ~6.7 -> ~1-2 us, forwards -4 to -6%
# (0.095 -> ~0.090, 0.125 -> ~0.119); E32, E64, E128 and T16384 not eligible (more GEMM0
# tasks than processors): level, the same digests. First correct: the whole quick set with it
# (its small layers take the path: skewed dropless, device-resident, virtual ranks).
# Carry: .carry/gpu-check built from main at or after this script's commit. ~300 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run180.log; BUDGET=${BUDGET:-330}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_EARLY"
t128="=paper-t128-e8,=paper-t128-e16,=paper-t128-e32,=paper-t128-e128"
ph base 20 .carry/gpu-check --only "$t128"
ph early 20 $x .carry/gpu-check --only "$t128"
ph early2 20 $x .carry/gpu-check --only "$t128"
ph base2 20 .carry/gpu-check --only "$t128"
ph quick 170 $x .carry/gpu-check --quick
ph e8-base 30 .carry/gpu-check --only "=paper-t16384-e8"
ph e8-early 30 $x .carry/gpu-check --only "=paper-t16384-e8"
ab_lines base early early2 base2 e8-base e8-early
for f in base early early2 base2 e8-base e8-early; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^paper" $w/$f.log; }
done
echo "== quick"; [ -f $w/quick.log ] && grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-200
cat $w/summary.txt
