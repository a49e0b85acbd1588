#!/usr/bin/env bash
# run 155 (session 29): run 154's FDM_PAIRS_TWINS handed every entry out in units of two
# (a pair, or two adjacent solo entries, to a cluster whose processors both have room):
# DeepSeek-V3 8.891 -> 8.588 ms (-3.4%, 4070 of 7232 GEMM0 tasks paired, GEMM0 full tasks
# -8%), but Qwen3 0.726 -> 0.819 (+12.8%: GEMM1 gaps 38 -> 115 µs a processor), T16384 E128
# +3.5%, T4096 E128 +5%. Now only the in-place packets' GEMM0 tasks (and pairs) go in units;
# GEMM1 tasks and combines go out as unpaired. Prediction: every check verified, the same
# digests; DeepSeek-V3 -3 to -5% against the unpaired image in this call (its GEMM1 gaps back
# to the unpaired ~224 µs a processor); Qwen3 within +1%; T16384 E128 within +1%.
# Carry: .carry/gpu-check (release build, stripped). ~360 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
tw="env FLASHDMOE_EXTRA_DEFINES=FDM_PAIRS_TWINS"
checks="small Bf16 Relu,=virtual P=2 skewed,=virtual P=8,forced timeout + recovery virtual P=2,=device-resident single P=1,=preset qwen3-30b-a3b"
ph twins-check 60 $tw .carry/gpu-check --pairs --only "$checks"
three="=paper-t16384-e128,=paper-t4096-e128,=preset qwen3-30b-a3b"
ph three-base 50 .carry/gpu-check --only "$three"
ph three-twins 50 $tw .carry/gpu-check --pairs --only "$three"
ph dsv3-twins 90 $tw .carry/gpu-check --pairs --only "=preset deepseek-v3"
ph dsv3-base 90 .carry/gpu-check --only "=preset deepseek-v3"
tar czf $OUT/run155.tgz -C $w .
echo "== twins-check"; grep -E "^\[|passed|failed" $w/twins-check.log | cut -c1-140
ab_lines three-base three-twins dsv3-twins dsv3-base
grep -o "first wave [0-9]* tasks, [0-9]* paired" $w/*.log
cat $w/summary.txt
