#!/usr/bin/env bash
# run 153 (session 28): how many tasks run paired under run 152's rule (a pair only to a
# cluster whose processors are both idle or in step; others as two solo tasks): the new
# `paired` count of gpu-check's phase line (control word kPairedTasks), DeepSeek-V3 and T16384
# E128 with --pairs. Prediction: few (run 152's GEMM0 task times equal the unpaired ones):
# under 20% of DeepSeek-V3's ~4000 GEMM0 tasks of experts with two or more row tiles.
# Then the default (unpaired) images against run 144's and 152's: session 28 changed them by a
# few integer instructions (the producer's ring write, the OS block's enqueue; SASS counts
# against ea69fca), no GEMM loop; prediction level (T16384 E8 ~0.86 ms, Qwen3 ~0.73).
# Carry: .carry/gpu-check. ~170 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-210}; source scripts/gpu-phases.sh
ph pairs 150 .carry/gpu-check --pairs --only "=paper-t16384-e128,=preset deepseek-v3"
ph default 40 .carry/gpu-check --only "=paper-t16384-e8,=preset qwen3-30b-a3b"
tar czf $OUT/run153.tgz -C $w .
ab_lines pairs default
grep -o "first wave [0-9]* tasks, [0-9]* paired" $w/pairs.log
cat $w/summary.txt
