#!/usr/bin/env bash
# run 161 (queued by session 30, not yet run): two experiments, each against the default in
# one call. (1) The producer's L2 prefetch ahead of its stages
# (experiment FDM_B_PREFETCH_AHEAD=D, tile_wgmma.cuh `prefetch_ahead`: thread 0 asks L2 for the
# weight boxes of k-tile kt + D as it loads k-tile kt). Why (perf-notes v44): DeepSeek-V3's
# GEMM0 tasks stream their weights from DRAM at rates in proportion to the bytes their four
# stages hold in flight, as latency-bound streams would: a full task 5.5 MB in 81 µs (68 GB/s,
# 48 KiB a stage), a <= half one 4.1 MB in 79 µs (52 GB/s, ~40 KiB a stage: only its
# valid A rows load), both ~3 µs of latency; DeepSeek-V3 averages 3.35 TB/s from DRAM.
# Prefetching 2 (D = 6) or 4 (D = 8) k-tiles past the stages puts more weight bytes in flight
# without shared memory, so the stages' loads wait on L2, not DRAM. GEMM1's tasks load their
# whole A by TMA full or not (1.5 MB in 23-24 µs, ~64 GB/s) and look bound by what L2 delivers
# instead: expected level. Risk: the prefetched boxes (up to 4 x 32 KiB an SM, ~17 MB over 131
# SMs) crowd the L2 that shares an expert's weights between its row tiles (run 160: losing
# that sharing cost 7 GB and 4.5%).
# Prediction: every check verified, the same digests; DeepSeek-V3 GEMM0 main loops −3 to −8%
# (full and <= half), GEMM1 level, the forward −2 to −5% (D = 8; D = 6, the nearer form, is
# for a later call if 8 wins); Qwen3, T16384 E8 and E128 within ±1% (their weights mostly
# L2-resident or compute-bound).
# (2) FDM_GEMM1_HALF_CPASYNC (processor_wgmma.cuh): a GEMM1 row tile of <= 64 rows loads only
# its valid A rows by cp.async (~8 KiB a stage) instead of the TMA's whole 128-row box (16
# KiB): such a task moves the bytes of a full one (1.5 MB in 24 µs against 23 for a full one,
# runs 159-160) and looks bound by them. Prediction: DeepSeek-V3's 4900 <= half GEMM1 tasks
# 24 -> 20-22 µs main loop, the forward −1 to −2%; Qwen3 −0.5 to −1% (488 such tasks);
# T16384 E8 and E128 level (no <= half GEMM1 task).
# Carry: .carry/gpu-check (release build, stripped). ~440 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-470}; source scripts/gpu-phases.sh
p8="env FLASHDMOE_EXTRA_DEFINES=FDM_B_PREFETCH_AHEAD=8"
hc="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_HALF_CPASYNC"
both="env FLASHDMOE_EXTRA_DEFINES=FDM_B_PREFETCH_AHEAD=8,FDM_GEMM1_HALF_CPASYNC"
checks="=small column groups,=virtual P=2 column groups,=combine stream small top-8,=forced timeout + recovery virtual P=2"
ph checks 40 $both .carry/gpu-check --quick --only "$checks"
ph dsv3-base 85 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-p8 85 $p8 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-hc 85 $hc .carry/gpu-check --only "=preset deepseek-v3"
set1="=preset qwen3-30b-a3b,=paper-t16384-e8,=paper-t16384-e128"
ph set-base 45 .carry/gpu-check --only "$set1"
ph set-p8 45 $p8 .carry/gpu-check --only "$set1"
ph set-hc 45 $hc .carry/gpu-check --only "$set1"
tar czf $OUT/run161.tgz -C $w .
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-150
ab_lines dsv3-base dsv3-p8 dsv3-hc set-base set-p8 set-hc
grep -h "^preset\|^paper" $w/*.log
cat $w/summary.txt
