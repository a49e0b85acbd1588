#!/usr/bin/env bash
# run 159 (session 30): narrow tasks (tile_wgmma.cuh NARROW TASKS): a 128-row tile holding at
# most 64 rows (an expert's last row tile) runs with both consumer warpgroups on its rows, half
# the columns each (wgmmas half as wide), instead of one warpgroup computing every column while
# the other idles. Runs 118-119 timed such tiles at 78% (Qwen3) to 97% (DeepSeek-V3) of a full
# tile for half the work: one warpgroup issues at about half the tile's rate. A/B in one binary:
# the default (narrow) against FLASHDMOE_EXTRA_DEFINES=FDM_NO_NARROW (the old form).
# Prediction: every check verified, the same output digests both ways (each output element's
# k-order is unchanged); the <=half GEMM tasks' main loops: Qwen3 GEMM0 ~19 -> 14-16 µs, GEMM1
# ~9 -> 6-7, DeepSeek-V3 GEMM1 ~24 -> 16-19, its solo <=half GEMM0 79 -> ~61 (paired ones stay:
# the pair runs at its full half's pace); forwards: Qwen3 and OLMoE -1.5 to -3%, DeepSeek-V3
# -1 to -3%, T16384 E128 -0.5 to -1.5%, gpt-oss-20b level to -2%.
# Carry: .carry/gpu-check (release build, stripped). ~360 s.
# Ran on a working tree with narrow tasks applied (`git apply docs/dev/gpu-runs/2026-12-03-run159-narrow.patch`,
# on main 9aab541; the define then went through FLASHDMOE_EXTRA_DEFINES); removed
# after the run (perf-notes v44): on main as it stands the defines change nothing.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
nn="env FLASHDMOE_EXTRA_DEFINES=FDM_NO_NARROW"
checks="=combine stream small top-8,=combine registers small top-8,=combine stream virtual P=2 top-8,=small column groups,=virtual P=2 column groups,=small deepseek-v3 router and experts,=small gpt-oss router and experts,=device-resident single P=1 qwen2-moe m4 gated shared experts,=forced timeout + recovery virtual P=2"
ph checks 60 .carry/gpu-check --quick --only "$checks"
set1="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e128,=preset gpt-oss-20b"
ph narrow-1 45 .carry/gpu-check --only "$set1"
ph base-1 45 $nn .carry/gpu-check --only "$set1"
ph narrow-dsv3 85 .carry/gpu-check --only "=preset deepseek-v3"
ph base-dsv3 85 $nn .carry/gpu-check --only "=preset deepseek-v3"
ph narrow-2 45 .carry/gpu-check --only "$set1"
tar czf $OUT/run159.tgz -C $w .
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-150
ab_lines narrow-1 base-1 narrow-2 narrow-dsv3 base-dsv3
cat $w/summary.txt
