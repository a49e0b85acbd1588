#!/usr/bin/env bash
# run 206 (written in session 42, not yet run): experiment FDM_STREAM, the streamed placement
# (placer.cuh; core's runtime::Placer; docs/dev/streamed-placement.md). On one GPU holding a
# world of one rank with more than one routing chunk (T > 128), phase A is the counter reset
# and one grid barrier; the first FDM_STREAM processors route and place the tokens chunk by
# chunk (A1's router tiles, A2, the chunk's counts published, every earlier chunk's awaited,
# A3), and the placer whose rows complete a row tile queues its GEMM0 tasks at once, so the
# other processors start before the last token is routed. The scheduler gives a placer no
# task until it is done (its completion count held at kPlacing).
# First the quick set with FDM_STREAM=32 (every dtype, ragged tiles, virtual ranks and T128,
# which do not stream, the device-resident cases, given routings, the forced timeouts), then
# base / 32 placers / all placers (131) / base / 64 placers on the paper grid's T4096 and
# T16384 layers, Qwen3 and OLMoE. gpu-check's phase line shows "streamed N chunks (first row
# tile queued X us)" and, for the waves, "(streamed: N chunks, no wave)".
# Prediction: main's digests in every phase (the same positions); the first task at ~12-15 us
# instead of 28 (T4096 E8) and 42 (T16384 E8); T16384 E8 / E32 -2 to -3% (0.861 -> ~0.835 ms,
# ~1.12x run 202's dense pair), T4096 E8 -5%, T4096 E32 -2 to -4%, E128 level to -2% (its row
# tiles need half the tokens each: only the barriers and the wave post go; its image under
# the experiment takes 64-row router jobs, the 128-row one spilling), Qwen3 (E128) and OLMoE
# (E64) level to -1% (a row tile of theirs needs 1/4 to 1/2 of the tokens). The layers paired
# by default (column-grouped GEMM0: Mixtral, DeepSeek-V3, Kimi-K2, gpt-oss) do not stream.
# With all placers A1 is spread as today (HBM-bound) and the gain is the removed barriers; with
# 32 the others start earlier but the placers finish later. A failure (a hang is a typed
# timeout: FDM_WAIT_CHUNK_COUNTS, FDM_WAIT_PLACEMENT) shows in the checks phase first.
# Carry: .carry/gpu-check from main at or after this script's commit. ~500 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run206.log; BUDGET=${BUDGET:-580}; source scripts/gpu-phases.sh
s32="env FLASHDMOE_EXTRA_DEFINES=FDM_STREAM=32"
s64="env FLASHDMOE_EXTRA_DEFINES=FDM_STREAM=64"
sall="env FLASHDMOE_EXTRA_DEFINES=FDM_STREAM=131"
cases="=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
ph checks 150 $s32 .carry/gpu-check --quick
ph base 80 .carry/gpu-check --only "$cases"
ph s32 70 $s32 .carry/gpu-check --only "$cases"
ph sall 70 $sall .carry/gpu-check --only "$cases"
ph base2 60 .carry/gpu-check --only "$cases"
ph s64 60 $s64 .carry/gpu-check --only "$cases"
L="base s32 sall base2 s64"
ab_lines $L
for f in $L; do [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^(paper|preset)" $w/$f.log; }; done
for f in s32 sall; do [ -f $w/$f.log ] && { echo "== $f streamed"; grep -ho "streamed [0-9]* chunks (first row tile queued [0-9]*us)" $w/$f.log | sort | uniq -c; }; done
echo "== checks"; [ -f $w/checks.log ] && grep -E "^\[FAIL|passed|failed" $w/checks.log | cut -c1-200
cat $w/summary.txt
