#!/usr/bin/env bash
# run 126 (session 23): every GEMM tile held until the next pause (processor_wgmma.cuh
# `PendingTile`: a GEMM0's fence and row-tile count, a local GEMM1's fence and return signal
# wait until the next task's main loop has run, as a remote GEMM1's already did), against
# 188c8bf, in one call.
# Carry: .carry/gpu-check-base = gpu-check of 188c8bf; .carry/gpu-check = the change (both
# stripped).
# Why (run 123's marks): with the epilogue's stores issued in one burst, a task's fences
# (stores -> end) grew 0.5 -> 1.2-1.5 µs on Qwen3 (the fence waits for every store's
# acknowledgment); under the next main loop they drain.
# Prediction: the fences+publication field 1.2-1.5 -> ~0.2 µs; Qwen3 -3 to -4% (4438 tasks x ~1
# µs / 131), OLMoE alike, T16384 E8 -1%; T128 E8 (short tasks, its GEMM1 waits on row tiles)
# level or worse: the announcements come up to a main loop later. Same digests as run 123.
# Correctness first: the multi-rank, streamed-combine, device-resident and timeout cases.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-390}; source scripts/gpu-phases.sh
check="virtual P=2,virtual P=4,small Bf16 SiluGated bias,small gpt-oss router and experts,combine stream virtual P=2 top-8,combine registers small top-8,device-resident virtual P=2,forced timeout + recovery virtual P=2,small column groups,tile 256x64 swiglu virtual P=2,skewed dropless"
cases="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e8,=paper-t128-e8"
ph check 120 .carry/gpu-check --only "$check" --json $w/check.jsonl
ph base1 45 .carry/gpu-check-base --only "$cases" --json $w/base1.jsonl
ph new1 45 .carry/gpu-check --only "$cases" --json $w/new1.jsonl
ph base2 45 .carry/gpu-check-base --only "$cases" --json $w/base2.jsonl
ph new2 45 .carry/gpu-check --only "$cases" --json $w/new2.jsonl
tar czf $OUT/run126.tgz -C $w .
ab_lines base1 new1 base2 new2
echo "check: $(grep -c '^\[ok\]' $w/check.log) ok, $(grep -c '^\[FAIL\]' $w/check.log) FAIL"; grep '^\[FAIL\]' $w/check.log | cut -c1-600
grep -hE "^(preset|paper)" $w/base1.log $w/new1.log $w/base2.log $w/new2.log | cut -c1-100
cat $w/summary.txt
