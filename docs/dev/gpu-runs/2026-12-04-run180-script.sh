#!/usr/bin/env bash
# run 180 (written in session 34, for the next session's first call): two T128 experiments
# (perf-notes v47 (e), (f)), each alone and both, alternated with main.
# FDM_GEMM1_EARLY: where every GEMM0 task of a one-GPU layer is in the first wave (T128 E8 at
# 64x128: 128 tasks; E16 at 64x256: 128), the OS block posts all their GEMM1 tasks right
# behind them, each gated on its row tile's counter by the producer that takes it. Run 177's
# T128 E8 trace: gaps before GEMM1 median 6.7 us. Prediction: those gaps ~1-2 us, E8 and E16
# -4 to -6%; E32 / E128 not eligible: level.
# FDM_ONE_CHUNK_PLACE: at T <= 128 (one routing chunk a rank) the block that counted the chunk
# places it at once, one grid barrier fewer (top-k 13 us, placed 16). Prediction: placed
# ~2-3 us earlier, every T128 case -2 to -3%; T16384 untouched (the define changes nothing
# there). Both: the sum, ~-6 to -9% at E8.
# First correct: the quick set with both (its small layers take both paths: skewed dropless,
# device-resident, virtual ranks). Every timed case verified, digests equal to main's.
# Carry: .carry/gpu-check built from main at or after this script's commit. ~330 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run180.log; BUDGET=${BUDGET:-360}; source scripts/gpu-phases.sh
ge="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_EARLY"
op="env FLASHDMOE_EXTRA_DEFINES=FDM_ONE_CHUNK_PLACE"
both="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_EARLY,FDM_ONE_CHUNK_PLACE"
t128="=paper-t128-e8,=paper-t128-e16,=paper-t128-e32,=paper-t128-e128"
ph base 20 .carry/gpu-check --only "$t128"
ph early 20 $ge .carry/gpu-check --only "$t128"
ph place 20 $op .carry/gpu-check --only "$t128"
ph both 20 $both .carry/gpu-check --only "$t128"
ph both2 20 $both .carry/gpu-check --only "$t128"
ph place2 20 $op .carry/gpu-check --only "$t128"
ph early2 20 $ge .carry/gpu-check --only "$t128"
ph base2 20 .carry/gpu-check --only "$t128"
ph quick 170 $both .carry/gpu-check --quick
L="base early place both both2 place2 early2 base2"
ab_lines $L
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "phase A" $w/$f.log | grep -o "placed [0-9]*us\|posted [0-9]*us\|first handout [0-9]*us" | paste -sd' '; grep -hE "^paper" $w/$f.log; }
done
echo "== quick"; [ -f $w/quick.log ] && grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-200
cat $w/summary.txt
