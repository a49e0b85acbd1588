#!/usr/bin/env bash
# run 123 (session 23): the GEMM epilogue's kind chosen once a chunk (tile_wgmma.cuh
# `store_either`) and the SwiGLU's sigmoid by the hardware's approximations (activation_math.h
# `over_one_plus_exp_neg`), against the build before them, in one call.
# Carry: .carry/gpu-check-base = gpu-check of c379e9c (stripped); .carry/gpu-check = gpu-check
# of the change (stripped).
# Why (run 121's in-task marks): Qwen3's GEMM0 epilogue takes 6.0 µs against the paper layer's
# 2.8 for half the bytes, its GEMM1's 5.4 against 2.7 for the same bytes; the SASS put a branch
# around every element's activation (the op chose GEMM0 or GEMM1 an element), so the elements'
# dependent chains (exact expf, a checked division) ran one after another.
# Prediction: Qwen3 GEMM0 epilogue 6.0 -> ~3.5 µs, GEMM1 5.4 -> ~3; the forward 0.79 -> 0.72-0.74
# ms (-7 to -9%); OLMoE and gpt-oss-20b alike (-5 to -9%); the paper layer (ReLU, no
# per-element branch before) level. Digests: GEMM0's SwiGLU rounds differently (approximate
# exp and reciprocal, ~2^-22 relative before the bf16 rounding): the gated layers' digests may
# change, each checked against the oracle; the paper layer's must not (3e3fffeb851ccdc2).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-570}; source scripts/gpu-phases.sh
cases="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=preset gpt-oss-20b,=paper-t16384-e8"
ph quick 200 .carry/gpu-check --quick --json $w/quick.jsonl
ph base1 80 .carry/gpu-check-base --only "$cases" --json $w/base1.jsonl
ph new1 80 .carry/gpu-check --only "$cases" --json $w/new1.jsonl
ph base2 80 .carry/gpu-check-base --only "$cases" --json $w/base2.jsonl
ph new2 80 .carry/gpu-check --only "$cases" --json $w/new2.jsonl
tar czf $OUT/run123.tgz -C $w .
ab_lines base1 new1 base2 new2
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-600
grep -hE "^(preset|paper)" $w/base1.log $w/new1.log $w/base2.log $w/new2.log | cut -c1-100
cat $w/summary.txt
