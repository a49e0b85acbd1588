#!/usr/bin/env bash
# run 177 (session 34): (1) experiment FDM_TWO_WAVES (perf-notes v47 (b)): the OS block posts
# the second wave of in-place GEMM0 tasks as the first-wave processors' task number 1. Run
# 175 (FDM_SCHED_EARLY, now the default) left the scheduler's first handout at 36-37 us at
# T128 E8, 2-3 us after the first wave's tasks end (first task 24 us + 10.3): the whole
# enqueue_in_place (every descriptor, two fences) runs before the scheduler's first round.
# Prediction: T128 E8 gaps before GEMM0 2.7 -> ~0.5-1 us, forward -2% (0.098 -> ~0.096);
# T128 E32 -1% (0.191 -> ~0.189: its 190 us target); T16384 E128 level; same digests. The new
# mark "posted" (kWavePostedNs) splits placement (17 us) -> first task (24 us).
# (2) T128 tile shapes: the spec halves bn while tasks < 2 x processors (E8: 64x64, 256
# tasks; E32: 64x128, 512). A T128 GEMM0 task is bound by its SM's ingest (~38 GB/s: B 256
# KiB + A 128 KiB in 10.3 us) and its A is re-read by every column tile: E8 at 64x128 is one
# wave of 128 tasks of 640 KiB (-17% bytes). Prediction: E8 64x128s8 -3 to -6%; E32 64x256s5
# level to -3%.
# Carry: .carry/gpu-check built from this commit. ~330 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$OUT/run177; mkdir -p $w; BUDGET=${BUDGET:-380}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_TWO_WAVES"
checks="=small column groups,=virtual P=2 column groups,=virtual P=8 skewed,=forced timeout + recovery virtual P=2,=device-resident virtual P=2,=skewed dropless,=virtual P=4 deepseek-v3 router and experts"
ph checks 70 $x .carry/gpu-check --quick --only "$checks"
ph t128-base 15 .carry/gpu-check --only "=paper-t128-e8"
ph t128-two 15 $x .carry/gpu-check --only "=paper-t128-e8"
ph t128-two2 15 $x .carry/gpu-check --only "=paper-t128-e8"
ph t128-base2 15 .carry/gpu-check --only "=paper-t128-e8"
ph t128e32-two 15 $x .carry/gpu-check --only "=paper-t128-e32"
ph t128e32-base 15 .carry/gpu-check --only "=paper-t128-e32"
ph t128e32-two2 15 $x .carry/gpu-check --only "=paper-t128-e32"
ph t128e32-base2 15 .carry/gpu-check --only "=paper-t128-e32"
ph t128-64x128 15 .carry/gpu-check --tile 64x128s8 --only "=paper-t128-e8"
ph t128e32-64x256 15 .carry/gpu-check --tile 64x256s5 --only "=paper-t128-e32"
ph t128-64x128-2 15 .carry/gpu-check --tile 64x128s8 --only "=paper-t128-e8"
ph t128e32-64x256-2 15 .carry/gpu-check --tile 64x256s5 --only "=paper-t128-e32"
ph t4096-two 20 $x .carry/gpu-check --only "=paper-t4096-e8,=paper-t4096-e128"
ph t4096-base 20 .carry/gpu-check --only "=paper-t4096-e8,=paper-t4096-e128"
ph e128-two 30 $x .carry/gpu-check --only "=paper-t16384-e128"
ph e128-base 30 .carry/gpu-check --only "=paper-t16384-e128"
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-150
L="t128-base t128-two t128-two2 t128-base2 t128e32-two t128e32-base t128e32-two2 t128e32-base2 t128-64x128 t128e32-64x256 t128-64x128-2 t128e32-64x256-2 t4096-two t4096-base e128-two e128-base"
ab_lines $L
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "phase A" $w/$f.log | grep -o "phase A: [^;]*" | cut -c1-260; grep -hE "^paper" $w/$f.log; }
done
cat $w/summary.txt
