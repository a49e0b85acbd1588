#!/usr/bin/env bash
# run 175 (session 33): the scheduler warp starts its rounds right after the first wave
# (experiment FDM_SCHED_EARLY, moe.cu; perf-notes v46 (d)): run 174's T128 E8 trace had its 125
# second-wave GEMM0 tasks wait a uniform 5.5 us (p90 5.8) after their processor's first task,
# GEMM1 tasks 1.9; the OS block raised the in-place dispatch signals (the last at 31 us, 14 us
# after placement) before its scheduler warp ran a round. With it, warps 1.. raise them while
# warp 0 schedules. Prediction: T128 E8's gaps before GEMM0 5.5 -> ~2 us and the forward
# 0.103 -> ~0.100 ms (-3%); T128 E32 alike or less; T16384 E128 level (its first-wave tasks
# run 25 us, longer than the delay); the same digests. gpu-check's phase A line now ends with
# the scheduler's first handout (kFirstHandoutNs): predicted ~32-38 us on main at T128 E8
# (after the signals), ~19-22 us with the experiment. First correct: seven checks with it
# (multi-rank signals, the forced timeout, device-resident, skewed dropless).
# Carry: .carry/gpu-check and .carry/tile-bench built from main at this commit. ~320 s.
set -u -o pipefail
source scripts/gpu-env.sh
# Logs straight under $OUT: a call cut at its limit still brings back the phases that ran
# (session 33's first try of this script ran under a 110 s limit and returned nothing).
w=$OUT/run175; mkdir -p $w; BUDGET=${BUDGET:-340}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_SCHED_EARLY"
checks="=small column groups,=virtual P=2 column groups,=virtual P=8 skewed,=forced timeout + recovery virtual P=2,=device-resident virtual P=2,=skewed dropless,=virtual P=4 deepseek-v3 router and experts"
ph checks 60 $x .carry/gpu-check --quick --only "$checks"
ph t128-base 15 .carry/gpu-check --only "=paper-t128-e8"
ph t128-early 15 $x .carry/gpu-check --only "=paper-t128-e8"
ph t128-early2 15 $x .carry/gpu-check --only "=paper-t128-e8"
ph t128-base2 15 .carry/gpu-check --only "=paper-t128-e8"
ph t128e32-early 15 $x .carry/gpu-check --only "=paper-t128-e32"
ph t128e32-base 15 .carry/gpu-check --only "=paper-t128-e32"
ph e128-early 30 $x .carry/gpu-check --only "=paper-t16384-e128"
ph e128-base 30 .carry/gpu-check --only "=paper-t16384-e128"
# perf-notes v46 (e)'s first step: an expert under 64 rows in a 128-row against a 64-row tile
# (DeepSeek-V3's GEMM0 shape, 4 stages, weights from HBM). Prediction from run 165's MoE
# main loops (79.4 against 70.4 us): the 64-row tile 8-12% faster; level would say the MoE
# kernel's gap is elsewhere (its ragged rows' A gathers, the pairs).
ph small-128 10 .carry/tile-bench --iters 30 --only "128x128 gather s4 m48 "
ph small-64 10 .carry/tile-bench --iters 30 --only "64x128 gather s4 m48 "
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-150
ab_lines t128-base t128-early t128-early2 t128-base2 t128e32-early t128e32-base e128-early e128-base
for b in small-128 small-64; do
  [ -f $w/$b.log ] && { echo "== $b"; grep -hE "^ok|^FAIL|failed [1-9]|rror" $w/$b.log | cut -c1-120; }
done
for f in t128-base t128-early t128-early2 t128-base2 t128e32-early t128e32-base e128-early e128-base; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "phase A" $w/$f.log | grep -o "phase A: [^;]*" | cut -c1-200; grep -h "^paper" $w/$f.log; }
done
cat $w/summary.txt
