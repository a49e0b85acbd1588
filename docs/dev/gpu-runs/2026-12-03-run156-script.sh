#!/usr/bin/env bash
# run 156 (session 29): run 155 (FDM_PAIRS_TWINS on the in-place GEMM0 tasks only): DeepSeek-V3
# 9.129 -> 8.686 ms (-4.9%), T16384 E128 level, Qwen3 +3.3%, T4096 E128 +3.5% (no pairs there:
# the cluster launch and twinned GEMM0 handout alone). Which layers gain: the other presets
# whose GEMM0 weights go in column groups (they do not fit in L2), with and without pairs, and
# DeepSeek-V3 a third time in the opposite order. Prediction: Kimi-K2 (DeepSeek-V3's expert
# shape, E 384, ~85 rows an expert: fewer two-tile experts) -1 to -3%; Mixtral (8 row tiles an
# expert at K 4096) level to -3%; gpt-oss-120b and Qwen2-57B (K 2880 / 3584) within ±3%.
# Carry: .carry/gpu-check (release build, stripped). ~360 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-430}; source scripts/gpu-phases.sh
tw="env FLASHDMOE_EXTRA_DEFINES=FDM_PAIRS_TWINS"
four="=preset kimi-k2,=preset mixtral-8x7b,=preset gpt-oss-120b,=preset qwen2-57b-a14b"
ph four-base 130 .carry/gpu-check --only "$four"
ph four-twins 130 $tw .carry/gpu-check --pairs --only "$four"
ph dsv3-base 50 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-twins 50 $tw .carry/gpu-check --pairs --only "=preset deepseek-v3"
tar czf $OUT/run156.tgz -C $w .
ab_lines four-base four-twins dsv3-base dsv3-twins
grep -o "first wave [0-9]* tasks, [0-9]* paired" $w/*.log
cat $w/summary.txt
