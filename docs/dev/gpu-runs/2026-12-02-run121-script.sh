#!/usr/bin/env bash
# run 121 (written in session 22, NOT YET RUN): the in-task marks (a GEMM task's trace record
# marks its main loop's end and its results' store; `CudaLayer::task_marks`; gpu-check prints
# `in-task µs (main loop/epilogue/fences+publication)` for full and <= half full row tiles).
# Carry: .carry/gpu-check = `cargo build --release -p flashdmoe-bench --bin gpu-check` of main
# at the commit that added `TaskMarks` or later, stripped.
# Phases: --quick (the record grew 24 -> 32 bytes: every Hopper case now fails unless each GEMM
# task of its traced forward carries ordered marks; every traced case's conformance and the
# device-resident cases check it), then one pass of Qwen3, OLMoE, the paper layer T16384 E8 and
# T128 E8 with the marks, and T16384 E128, whose 128-row-router image now compiles through the
# thread index read afresh (config.cuh FDM_FRESH_TID; run 119 timed its 64-row twin: 1.169 ms;
# prediction: level, 1.15-1.19 ms).
# Expected digests (runs 117-118): qwen3-30b-a3b aa59fd8070a5586f, olmoe-1b-7b 085f46a51ea4e7e1,
# paper-t16384-e8 3e3fffeb851ccdc2 (dropless b44e9876f6d3945b). Times level with run 118
# (the marks are taken only in traced forwards).
# The question (perf-notes v36 (b)): where a task's time goes. Qwen3's <= half GEMM0 tasks take
# 78% of a full one's 27.6 µs with half the wgmmas: if their main loop is ~half of the full one's
# and the epilogue + publication are fixed, a half-empty tile is bound by the fixed part, and the
# next lever is the epilogue / publication; if the main loops are close, B's loads bound them,
# and the lever is reading B once for an expert's last two row tiles.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-480}; source scripts/gpu-phases.sh
ph quick 200 .carry/gpu-check --quick --json $w/quick.jsonl
ph marks 150 .carry/gpu-check --only "preset qwen3-30b-a3b,preset olmoe-1b-7b,paper-t16384-e8,paper-t16384-e128,paper-t128-e8" --json $w/marks.jsonl
tar czf $OUT/run121.tgz -C $w .
ab_lines marks
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-600
cat $w/summary.txt
