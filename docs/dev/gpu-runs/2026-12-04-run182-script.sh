#!/usr/bin/env bash
# run 182 (session 35): FDM_GEMM1_EARLY, third form: the OS block posts processor q's GEMM1
# task q as its task number 1 itself (run 181 left their handout to the scheduler, whose first
# round gave some processors two and others none: E16's GEMM1 span widened 62-98 -> 57-104 us
# though the gaps before GEMM1 fell 7.0 -> 1.7 us; E8 +3%, E16 level).
# Prediction: GEMM1 starts at GEMM0's end as in run 181 (~57 us at E16) and keeps its width
# (~35 us): its span ~57-92, the forwards -4 to -6% (E8 0.093 -> ~0.088, E16 0.126 -> ~0.119).
# Correct first: the quick set with the experiment (its small one-GPU layers take the path).
# Carry: .carry/gpu-check built from main at or after this script's commit. ~300 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run182.log; BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
ge="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_EARLY"
t128="=paper-t128-e8,=paper-t128-e16"
ph base 15 .carry/gpu-check --only "$t128"
ph early 15 $ge .carry/gpu-check --only "$t128"
ph early2 15 $ge .carry/gpu-check --only "$t128"
ph base2 15 .carry/gpu-check --only "$t128"
ph early3 15 $ge .carry/gpu-check --only "$t128"
ph base3 15 .carry/gpu-check --only "$t128"
ph quick_early 190 $ge .carry/gpu-check --quick
L="base early early2 base2 early3 base3"
ab_lines $L
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^\[ok\] paper-t128-e(8|16) " $w/$f.log | grep -o "gemm0 n=[0-9]* mean [0-9.]*us span [0-9-]*us\|gemm1 n=[0-9]* mean [0-9.]*us span [0-9-]*us\|combine n=[0-9]* mean [0-9.]*us span [0-9-]*us\|gaps before gemm1 n=[0-9]* median [0-9.]*us" | paste -sd' '; grep -hE "^paper" $w/$f.log; }
done
echo "== quick_early"; [ -f $w/quick_early.log ] && grep -E "^\[FAIL|passed|failed" $w/quick_early.log | cut -c1-200
cat $w/summary.txt
