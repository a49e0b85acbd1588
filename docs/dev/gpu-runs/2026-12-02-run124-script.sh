#!/usr/bin/env bash
# run 124 (session 23): the two largest presets with run 123's epilogue (store_either, the
# approximate sigmoid): DeepSeek-V3 (run 119: 8.866 ms back to back, routed part 8.335, digest
# 9e55cbe062ad4903 before the change) and Kimi-K2 in its default streamed form, which compiles
# only through the FDM_FRESH_TID fallback and has not run before (run 90, registers' form and
# the old epilogue: 10.738 ms). Replaces run 122's script (its question, streamed against
# registers on Kimi, waits for a call with the budget for it).
# Carry: .carry/gpu-check = gpu-check of the change (stripped).
# Prediction: both verified against the oracle; their GEMM tasks wait on B's loads (v36 (b)),
# so the epilogue's ~3 µs a task matter less: DeepSeek-V3 -1 to -3% (epilogue ~3 of ~90 µs
# GEMM0 tasks, ~3 of ~28 µs GEMM1 tasks), Kimi-K2 alike against run 90.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
ph ds 240 .carry/gpu-check --only "=preset deepseek-v3" --json $w/ds.jsonl
ph kimi 260 .carry/gpu-check --only "=preset kimi-k2" --json $w/kimi.jsonl
tar czf $OUT/run124.tgz -C $w .
ab_lines ds kimi
grep -hE "^preset" $w/ds.log $w/kimi.log | cut -c1-120
cat $w/summary.txt
