#!/usr/bin/env bash
# run 169 (session 32): where a large preset's check spends its device time. gpu-check's
# DeepSeek-V3 phase takes 70-90 s of the 30-minute budget for ~2 s of kernels (run 165); each
# check now prints its host seconds by step (weights, build with JIT and upload, forwards,
# oracle). Prediction: build (encode + upload of 22.5 GB) and weights dominate, ~25-30 s
# each; the oracle's 32 sampled rows ~5 s. Carry: .carry/gpu-check built from main. ~90 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-100}; source scripts/gpu-phases.sh
ph dsv3 90 .carry/gpu-check --only "=preset deepseek-v3"
grep -o -E "output digest [0-9a-f]+|host seconds: .*|back to back [0-9.]+ ms" $w/dsv3.log
grep -h "^preset" $w/dsv3.log
cat $w/summary.txt
