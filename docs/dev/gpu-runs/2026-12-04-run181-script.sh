#!/usr/bin/env bash
# run 181 (session 35): FDM_GEMM1_EARLY again, its forward marked in a control word so the
# descriptors stay canonical (run 180: the host's trace decode refused GEMM0 descriptors whose
# signal_offset carried the mark, so no E8/E16 case was timed). A3 placed by the counting
# block at one chunk is now the default (run 180: T128 E8 0.095 -> 0.093, E16 -1%, E32/E128
# level), so "base" here is run 180's "place".
# Prediction (unchanged, perf-notes v47 (e)): gaps before GEMM1 at E8/E16 ~7 -> ~1-2 us, the
# forwards -4 to -6% (0.093 -> ~0.088, 0.125 -> ~0.118); E32/E128 not eligible: level.
# Correct first: the quick set on the default (the one-chunk placement's first full check)
# and with the experiment (its small one-GPU layers take the early path).
# Carry: .carry/gpu-check built from main at or after this script's commit. ~420 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run181.log; BUDGET=${BUDGET:-600}; source scripts/gpu-phases.sh
ge="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_EARLY"
t128="=paper-t128-e8,=paper-t128-e16,=paper-t128-e32,=paper-t128-e128"
ph base 20 .carry/gpu-check --only "$t128"
ph early 20 $ge .carry/gpu-check --only "$t128"
ph early2 20 $ge .carry/gpu-check --only "$t128"
ph base2 20 .carry/gpu-check --only "$t128"
ph quick 190 .carry/gpu-check --quick
ph quick_early 190 $ge .carry/gpu-check --quick
L="base early early2 base2"
ab_lines $L
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "phase A" $w/$f.log | grep -o "placed [0-9]*us\|posted [0-9]*us\|first handout [0-9]*us" | paste -sd' '; grep -hE "^\[ok\] paper-t128-e(8|16) " $w/$f.log | grep -o "gaps before gemm1 n=[0-9]* median [0-9.]*us"; grep -hE "^paper" $w/$f.log; }
done
for q in quick quick_early; do echo "== $q"; [ -f $w/$q.log ] && grep -E "^\[FAIL|passed|failed" $w/$q.log | cut -c1-200; done
cat $w/summary.txt
