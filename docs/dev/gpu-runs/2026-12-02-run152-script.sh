#!/usr/bin/env bash
# run 152 (session 28): paired GEMM0 tasks after run 151 (DeepSeek-V3 -3%, T16384 E128 +1.4%,
# T4096 E128 +5%): a cluster now takes a pair only when both its processors are idle or each
# runs its half of one pair (in step), other pairs go out as two solo tasks, and the first wave
# is back (solo). Prediction: every case verified, the same digests; DeepSeek-V3 -6 to -12%
# against the unpaired image in this call (its GEMM0 tasks' gaps the unpaired median or a few
# µs more), T16384 E128 level to -2%, T4096 E128 level.
# Carry: .carry/gpu-check (release build, stripped). ~330 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-400}; source scripts/gpu-phases.sh
checks="small Bf16 Relu,=virtual P=2 skewed,forced timeout + recovery virtual P=2,=device-resident single P=1,=preset qwen3-30b-a3b"
ph pairs-check 60 .carry/gpu-check --pairs --only "$checks"
paper="=paper-t16384-e128,=paper-t4096-e128"
ph paper-base 50 .carry/gpu-check --only "$paper"
ph paper-pairs 50 .carry/gpu-check --pairs --only "$paper"
ph dsv3-base 90 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-pairs 90 .carry/gpu-check --pairs --only "=preset deepseek-v3"
tar czf $OUT/run152.tgz -C $w .
echo "== pairs-check"; grep -E "^\[|passed|failed" $w/pairs-check.log | cut -c1-140
ab_lines paper-base paper-pairs dsv3-base dsv3-pairs
cat $w/summary.txt
