#!/usr/bin/env bash
# run 129 (session 24): experiment FDM_WARP0_PUBLISHES (processor_wgmma.cuh wgmma_consumer):
# consumer warp 0 alone publishes a GEMM tile stored on this GPU (the fence, the row-tile count
# and the GEMM1 tasks, or the return signal) and reports the task; the other seven warps go on
# to the next task at once.
# Why (run 128, `gaps before`): the idle time before a GEMM task is a median 2.0-2.5 µs
# (GEMM0) and 1.4-2.1 µs (GEMM1) on every case, 36 + 42 µs a processor on Qwen3's 0.755 ms
# forward, 31 + 23 on T16384 E8's 0.890: the publication chain (fence: the tile's stores
# drain; the row-tile atomic's round trip; a barrier; the trace record and the completion
# count) run while all 256 consumers wait.
# Prediction: warp 0's lag is absorbed while warpgroup 1 runs ahead by up to the pipeline's
# depth (~1 µs of main loop): gaps before GEMM tasks -0.8 to -1.2 µs, Qwen3 and OLMoE -3 to
# -5%, T16384 E8 -2 to -3%, T128 E8 -2 to -5% (its GEMM tasks are 8-10 µs). The same digests
# as run 128 (publication order moves no value).
# Carry: .carry/gpu-check built at this commit.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-480}; source scripts/gpu-phases.sh
check="virtual P=2,virtual P=4,small Bf16 SiluGated bias,combine stream,device-resident virtual P=2,forced timeout + recovery,skewed dropless,small deepseek-v3"
cases="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e8,=paper-t128-e8,=paper-t128-e32,=paper-t4096-e32"
FLASHDMOE_EXTRA_DEFINES=FDM_WARP0_PUBLISHES ph check 110 .carry/gpu-check --only "$check" --json $w/check.jsonl
ph base1 60 .carry/gpu-check --only "$cases" --json $w/base1.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_WARP0_PUBLISHES ph w0a 60 .carry/gpu-check --only "$cases" --json $w/w0a.jsonl
ph base2 40 .carry/gpu-check --only "$cases" --json $w/base2.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_WARP0_PUBLISHES ph w0b 40 .carry/gpu-check --only "$cases" --json $w/w0b.jsonl
ph base3 40 .carry/gpu-check --only "$cases" --json $w/base3.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_WARP0_PUBLISHES ph w0c 40 .carry/gpu-check --only "$cases" --json $w/w0c.jsonl
tar czf $OUT/run129.tgz -C $w .
ab_lines base1 w0a base2 w0b base3 w0c
echo "check: $(grep -c '^\[ok\]' $w/check.log) ok, $(grep -c '^\[FAIL\]' $w/check.log) FAIL"; grep -h '^\[FAIL\]\|^extra kernel' $w/check.log | cut -c1-600
for b in base1 w0a base2 w0b base3 w0c; do grep -hE "^(preset|paper)" $w/$b.log | sed "s/^/$b /" | cut -c1-100; done
cat $w/summary.txt
