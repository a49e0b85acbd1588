#!/usr/bin/env bash
# run 203 (written in session 39, not yet run): experiment FDM_TMA_STORE (perf-notes v52 (e)):
# a GEMM0 tile's staged chunks leave by tensor stores through GEMM1's A map of the
# intermediate rows (consumer 0 issues a store a 128-byte segment of the chunk and waits for
# its reads; warp 0 waits for the writes before it announces the tile) instead of the 256
# consumers' 16-byte copies, where the tile's whole row tile lies inside its packet; with
# FDM_TMA_STORE_GEMM1 GEMM1's tiles for sources on this GPU too (through `tmap_return`). First
# the quick set with both (every dtype, ragged tiles, virtual ranks, pairs, the device-resident
# cases), then main / GEMM0 / both / main / GEMM0 / both on the paper grid's T4096 and T16384
# layers (T4096 E32 left out for time), T128 E8, Qwen3, OLMoE and gpt-oss-20b (ragged
# 128-column tiles).
# Prediction: main's digests everywhere; GEMM0's in-task epilogue 3.1 -> ~2.5 µs at T16384 E8
# (the copy-out's ~3% of a task, v20), T16384 E8 / E32 -0.5 to -1%, T4096 the same, T128 and
# E128 level (their GEMM0 tiles wait on weights), Qwen3 / OLMoE -0.5%; both: about twice that
# (GEMM1's epilogue 2.7 -> ~2.1 µs).
# Carry: .carry/gpu-check from main at or after this script's commit. ~560 s + start (the
# second round may be cut by the budget: the first is complete on its own).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run203.log; BUDGET=${BUDGET:-570}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_TMA_STORE"
xx="env FLASHDMOE_EXTRA_DEFINES=FDM_TMA_STORE,FDM_TMA_STORE_GEMM1"
cases="=paper-t128-e8,=paper-t4096-e8,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=preset gpt-oss-20b"
ph checks 150 $xx .carry/gpu-check --quick
ph base 100 .carry/gpu-check --only "$cases"
ph tma 80 $x .carry/gpu-check --only "$cases"
ph both 80 $xx .carry/gpu-check --only "$cases"
ph base2 60 .carry/gpu-check --only "$cases"
ph tma2 60 $x .carry/gpu-check --only "$cases"
ph both2 60 $xx .carry/gpu-check --only "$cases"
L="base tma both base2 tma2 both2"
ab_lines $L
for f in $L; do [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^(paper|preset)" $w/$f.log; }; done
echo "== checks"; [ -f $w/checks.log ] && grep -E "^\[FAIL|passed|failed" $w/checks.log | cut -c1-200
cat $w/summary.txt
