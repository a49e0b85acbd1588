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
# Session 36 ran it on an nvidia-h200-x2 (lent that session) with the weak-scaling grid added
# (P = 1 and 2, T8192/GPU E32, with torch-single and torch-ep in the same call: the first
# multi-GPU reading since run 75; prediction from run 72's +9.6% and the P = 1 kernel's gains
# since: P = 2 / P = 1 +10-15%, the fixed remote cost now a larger share) and a traced P = 2
# back-to-back run (the copiers' end, the first remote GEMM0).
# Carry: .carry/gpu-check and .carry/flashdmoe built from main at or after this script's
# commit. ~520 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run184.log; BUDGET=${BUDGET:-570}; source scripts/gpu-phases.sh
tw="env FLASHDMOE_EXTRA_DEFINES=FDM_THIRD_WAVE"
t128="=paper-t128-e8,=paper-t128-e16"
ph base 15 .carry/gpu-check --only "$t128"
ph third 15 $tw .carry/gpu-check --only "$t128"
ph third2 15 $tw .carry/gpu-check --only "$t128"
ph base2 15 .carry/gpu-check --only "$t128"
ph base3 15 .carry/gpu-check --only "$t128"
ph third3 15 $tw .carry/gpu-check --only "$t128"
ph weak 150 .carry/flashdmoe bench --backend cuda --config bench/grids/weak-scaling.toml \
  --baselines torch-single,torch-ep --iters 20 --warmup 5 --out $w/weak
cp $w/weak/results.jsonl $OUT/run184-weak-results.jsonl 2>/dev/null
ph p2trace 40 .carry/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --back-to-back 50 --trace $w/p2.json
ph quick_third 200 $tw .carry/gpu-check --quick
L="base third third2 base2 base3 third3"
ab_lines $L
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^\[ok\] paper-t128-e(8|16) " $w/$f.log | grep -o "gemm1 n=[0-9]* mean [0-9.]*us span [0-9-]*us\|combine n=[0-9]* mean [0-9.]*us span [0-9-]*us\|last combines queued [0-9]*us and handed out [0-9]*us" | paste -sd' '; grep -hE "^paper" $w/$f.log; }
done
echo "== quick_third"; [ -f $w/quick_third.log ] && grep -E "^\[FAIL|passed|failed" $w/quick_third.log | cut -c1-200
[ -f $w/weak.log ] && grep -vE "^\s*note" $w/weak.log | grep -A14 "^config" | cut -c1-130
[ -f $w/p2trace.log ] && grep -h -E "verify|back to back|first|copier|remote" $w/p2trace.log | head -12 | cut -c1-200
cat $w/summary.txt
