#!/usr/bin/env bash
# run 154 (session 29): run 153 counted the pairs that run: under the in-step rule 0 of
# DeepSeek-V3's GEMM0 tasks and 16 of T16384 E128's (no cluster is ever in step after the solo
# first wave), under FDM_PAIRS_ANY_ROOM 2312 and 1788 (-1.8% and -2.9%, GEMM0 full tasks -4.8%
# and -1%: the halves wait at align_for_pair behind unrelated tasks). The experiment
# FDM_PAIRS_TWINS hands every cluster work two entries at a time (a pair, or two adjacent solo
# entries) only when both its processors have room, so a cluster's processors start each unit
# together. Prediction: every check verified with the same digests as unpaired; most of
# DeepSeek-V3's GEMM0 tasks paired (> 5000 of 7232); its GEMM0 full+partial tasks toward the
# bench's -21% (the pair's halves now start within a round of each other): DeepSeek-V3
# -8 to -12% against the unpaired image in this call; T16384 E128 -1 to -3%; Qwen3 level
# (its GEMM0 at K 2048 is not bound by weight bytes).
# Carry: .carry/gpu-check (release build, stripped). ~360 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
tw="env FLASHDMOE_EXTRA_DEFINES=FDM_PAIRS_TWINS"
checks="small Bf16 Relu,=virtual P=2 skewed,forced timeout + recovery virtual P=2,=device-resident single P=1,=preset qwen3-30b-a3b"
ph twins-check 60 $tw .carry/gpu-check --pairs --only "$checks"
three="=paper-t16384-e128,=paper-t4096-e128,=preset qwen3-30b-a3b"
ph three-base 50 .carry/gpu-check --only "$three"
ph three-twins 50 $tw .carry/gpu-check --pairs --only "$three"
ph dsv3-base 90 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-twins 90 $tw .carry/gpu-check --pairs --only "=preset deepseek-v3"
tar czf $OUT/run154.tgz -C $w .
echo "== twins-check"; grep -E "^\[|passed|failed" $w/twins-check.log | cut -c1-140
ab_lines three-base three-twins dsv3-base dsv3-twins
grep -o "first wave [0-9]* tasks, [0-9]* paired" $w/*.log
cat $w/summary.txt
