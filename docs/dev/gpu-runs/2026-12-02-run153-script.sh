#!/usr/bin/env bash
# run 153 (session 28): how many tasks run paired under run 152's rule (a pair only to a
# cluster whose processors are both idle or in step; others as two solo tasks): the new
# `paired` count of gpu-check's phase line (control word kPairedTasks), DeepSeek-V3 and T16384
# E128 with --pairs. Prediction: few (run 152's GEMM0 task times equal the unpaired ones):
# under 20% of DeepSeek-V3's ~4000 GEMM0 tasks of experts with two or more row tiles.
# Then the same with FDM_PAIRS_ANY_ROOM (run 151's rule: any cluster whose processors each have
# room; DeepSeek-V3 -3.0% there): more pairs counted, and does the count buy time?
# Then the default (unpaired) images against run 144's and 152's: session 28 changed them by a
# few integer instructions (the producer's ring write, the OS block's enqueue; SASS counts
# against ea69fca), no GEMM loop; prediction level (T16384 E8 ~0.86 ms, Qwen3 ~0.73).
# Carry: .carry/gpu-check. ~330 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-380}; source scripts/gpu-phases.sh
ph pairs 150 .carry/gpu-check --pairs --only "=paper-t16384-e128,=preset deepseek-v3"
ph pairs-any 150 env FLASHDMOE_EXTRA_DEFINES=FDM_PAIRS_ANY_ROOM .carry/gpu-check --pairs --only "=paper-t16384-e128,=preset deepseek-v3"
ph default 40 .carry/gpu-check --only "=paper-t16384-e8,=preset qwen3-30b-a3b"
tar czf $OUT/run153.tgz -C $w .
ab_lines pairs pairs-any default
grep -o "first wave [0-9]* tasks, [0-9]* paired" $w/pairs.log $w/pairs-any.log
cat $w/summary.txt
