#!/usr/bin/env bash
# run 196 (session 38): why run 195 failed: the experiment with printf of a GEMM1 task's token list and the zeroing (FDM_RR_DEBUG, since removed), and memcheck on one small case. Found: the reductions ignored the task's column tile.
set -u
source scripts/gpu-env.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN,FDM_RR_DEBUG"
$x timeout 120 .carry/flashdmoe run --preset paper-t128-e8 --backend cuda 2>&1 | grep -v "^  " | head -60
$x timeout 200 compute-sanitizer --tool memcheck .carry/gpu-check --quick --only "=small Bf16 Relu" 2>&1 | grep -v "^RR" | head -40
