#!/usr/bin/env bash
# run 157 (session 29): the twin handout made the paired layers' rule (scheduler.cuh
# handout_paired: GEMM0 tasks in units of two to clusters whose processors both have room,
# GEMM0 slots marked in the OS block's shared memory instead of run 155's in-place range;
# core's Scheduler mirrors it) and pairs on by default where the GEMM0 weights go in column
# groups (PairChoice::Auto). Prediction: every check verified with the same digests as runs
# 153-156; DeepSeek-V3 and Mixtral built paired by default (labels end -pairs); DeepSeek-V3
# -3 to -5% and Mixtral -5 to -8% against --no-pairs in this call.
# Carry: .carry/gpu-check (release build, stripped). ~150 s (the session's last device time:
# logs straight into $OUT so a cut-off call still returns them).
set -u -o pipefail
source scripts/gpu-env.sh
w=$OUT; BUDGET=${BUDGET:-175}; source scripts/gpu-phases.sh
checks="small Bf16 Relu,=virtual P=8,forced timeout + recovery virtual P=2"
ph pairs-check 20 .carry/gpu-check --pairs --only "$checks"
ph auto 70 .carry/gpu-check --only "=preset deepseek-v3,=preset mixtral-8x7b"
ph nopairs 65 .carry/gpu-check --no-pairs --only "=preset deepseek-v3,=preset mixtral-8x7b"
echo "== pairs-check"; grep -E "^\[|passed|failed" $w/pairs-check.log | cut -c1-140
grep -ho "^\[ok\] preset [^:]*: \[[^]]*\]" $w/auto.log $w/nopairs.log
ab_lines auto nopairs
grep -o "first wave [0-9]* tasks, [0-9]* paired" $w/*.log
cat $w/summary.txt
