#!/usr/bin/env bash
# run 125 (session 23): DeepSeek-V3 before and after run 123's epilogue, in one call (run 124
# put it at 9.026 ms with the change against run 119's 8.866 without: another machine start,
# so no verdict). Carry: .carry/gpu-check-base (c379e9c), .carry/gpu-check (the change).
# Prediction: level to -2% (its tasks wait on B's loads; the epilogue is ~3% of a GEMM0 task).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
ph base 130 .carry/gpu-check-base --only "=preset deepseek-v3" --json $w/base.jsonl
ph new 130 .carry/gpu-check --only "=preset deepseek-v3" --json $w/new.jsonl
tar czf $OUT/run125.tgz -C $w .
ab_lines base new
grep -hE "^preset" $w/base.log $w/new.log | cut -c1-120
cat $w/summary.txt
