#!/usr/bin/env bash
# run 184 (written in session 35, for the next session's first call): experiment
# FDM_THIRD_WAVE (perf-notes v48 (d)) against main on T128 E8 / E16, alternated three times,
# then the quick set with it. Also the first reading of main's new marks: "last combines
# queued Xus and handed out Yus" in the phase-A line (kCombinesQueuedNs, kCombinesHandedNs),
# which with the trace's GEMM1 span end and combine span start split the GEMM1 -> combine
# hand-off (run 182: E8 64 -> 72 us, E16 94 -> 104) into the return subscribers' share, the
# scheduler's and the mailbox's.
# Prediction: the hand-off ~8-10 -> ~4-5 us (the claim, the descriptors and a scheduler round
# go; the subscriber's poll and count and the producer's flag poll stay), E8 0.090 -> ~0.087
# ms, E16 0.121 -> ~0.117 (-3 to -4%). E32 / E128 have no second wave: not eligible.
# Correct first: the quick set with the experiment (its small one-GPU layers take the path;
# its virtual P=2 cases wait on other ranks' GEMM1s).
# Carry: .carry/gpu-check built from main at or after this script's commit. ~330 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run184.log; BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
tw="env FLASHDMOE_EXTRA_DEFINES=FDM_THIRD_WAVE"
t128="=paper-t128-e8,=paper-t128-e16"
ph base 15 .carry/gpu-check --only "$t128"
ph third 15 $tw .carry/gpu-check --only "$t128"
ph third2 15 $tw .carry/gpu-check --only "$t128"
ph base2 15 .carry/gpu-check --only "$t128"
ph base3 15 .carry/gpu-check --only "$t128"
ph third3 15 $tw .carry/gpu-check --only "$t128"
ph quick_third 200 $tw .carry/gpu-check --quick
L="base third third2 base2 base3 third3"
ab_lines $L
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^\[ok\] paper-t128-e(8|16) " $w/$f.log | grep -o "gemm1 n=[0-9]* mean [0-9.]*us span [0-9-]*us\|combine n=[0-9]* mean [0-9.]*us span [0-9-]*us\|last combines queued [0-9]*us and handed out [0-9]*us" | paste -sd' '; grep -hE "^paper" $w/$f.log; }
done
echo "== quick_third"; [ -f $w/quick_third.log ] && grep -E "^\[FAIL|passed|failed" $w/quick_third.log | cut -c1-200
cat $w/summary.txt
