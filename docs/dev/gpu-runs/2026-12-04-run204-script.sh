#!/usr/bin/env bash
# run 204 (written in session 40, revised in session 41, not yet run): experiments
# FDM_SELF_WAVE and FDM_A3_DEEP (perf-notes v53 (a), (b)) on main, where A2's softmax sum is now
# the lane tree in every form (v53 (c), the specification since session 41: core's
# routing::tree_sum, router_math.h lane_sum, the warp form's butterfly; held bit for bit to each
# other by the host tests, not yet run on a GPU).
# FDM_SELF_WAVE: a first-wave processor derives its task number 0 from the placement
# (waves.cuh own_first_task: the q-th GEMM0 task of the in-place packets, at GEMM log slot
# base + q) and starts it at once, instead of waiting for the OS block's post (~7 µs after
# placement on every one-GPU layer of run 202); its consumer warp 0 acquires the post and
# checks it is the same task before it publishes anything (a mismatch is a typed failure:
# FDM_WAIT_FIRST_WAVE).
# FDM_A3_DEEP (on top, "both"): placement's sum of the earlier chunks' counts loads 16 a thread
# at once.
# First the quick set with self + deep (every dtype, ragged tiles, virtual ranks -- the wave
# split over local ranks --, pairs, the device-resident cases, the forced timeouts: main's
# tree sum runs in all of them), then main / self / both / main / both on the paper grid's T128
# E8, T4096 E8 / E128 and T16384 layers, Qwen3 and OLMoE.
# Prediction: main's digests in every phase (the same tasks, the same integer sums; the
# digests differ from run 202's, the tree sum's last bits); self: "first task at" ~5 µs earlier
# on every case (placed -> first task 7-8 -> 2-3 µs) and the forward ~5 µs shorter: T128 E8
# 0.086 -> ~0.081 ms (-6%), T4096 E8 -1.5 to -2%, T16384 E8 / E32 / E128 -0.5% (T16384 E8 then
# ~1.15x the dense pair of run 202), Qwen3 / OLMoE -0.7 to -1%; both: T16384 E128's placement
# (top-k -> placed) 11 -> ~4 µs, that forward a further -0.6%, T4096 E128 and Qwen3 -1 µs, E8
# level. The tree sum against run 202 (another machine start: its phase marks, not its
# medians): A2's token half (routed -> tokens) at T16384 E128 28 -> ~18 µs, Qwen3 16 -> ~11,
# OLMoE 11 -> ~8; E8 and E32 level or a little shorter (their A2 routes a token a thread at T
# >= 4096, whose sum's chain is now ~5 adds deep instead of E).
# Carry: .carry/gpu-check from main at or after this script's commit. ~480 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run204.log; BUDGET=${BUDGET:-580}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_SELF_WAVE"
xx="env FLASHDMOE_EXTRA_DEFINES=FDM_SELF_WAVE,FDM_A3_DEEP"
cases="=paper-t128-e8,=paper-t4096-e8,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
ph checks 150 $xx .carry/gpu-check --quick
ph base 80 .carry/gpu-check --only "$cases"
ph self 70 $x .carry/gpu-check --only "$cases"
ph both 70 $xx .carry/gpu-check --only "$cases"
ph base2 60 .carry/gpu-check --only "$cases"
ph both2 60 $xx .carry/gpu-check --only "$cases"
L="base self both base2 both2"
ab_lines $L
for f in $L; do [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^(paper|preset)" $w/$f.log; }; done
echo "== checks"; [ -f $w/checks.log ] && grep -E "^\[FAIL|passed|failed" $w/checks.log | cut -c1-200
cat $w/summary.txt
