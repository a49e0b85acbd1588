#!/usr/bin/env bash
# run 132 (session 25): the completion count relaxed after a GEMM task's own fence as the
# default (mailbox.cuh `mailbox_complete(.., fenced)`, signal_to as release fence + relaxed
# store: the same SASS as st.release), timed on the issue-13 grid and the streamed presets
# beside PyTorch's grouped layer and the cuBLAS dense pair in the same call; and a profile of
# run 131's ping-pong tile (why it lost 25-45%).
# Prediction: the same digests as run 130; times within +-0.3% of run 130's
# FDM_RELAXED_COMPLETION passes (Qwen3 0.727-0.728, OLMoE 0.794, T16384 E8 0.861, T128 E8
# 0.099-0.100): only combine tasks and a peer's GEMM1 tiles keep the release store, and a
# combine task's fence waits on its own output stores. Ping-pong: the tensor pipe active ~40%
# of the cooperative's, L2->SM bytes a FLOP 1.37x the cooperative's (A reused over 128
# columns, not 256).
# Carry: .carry/gpu-check, .carry/tile-bench (built at this commit, stripped).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
check="virtual P=2,virtual P=4,small Bf16 SiluGated bias,combine stream,device-resident virtual P=2,forced timeout + recovery,skewed dropless"
grid="=paper-t128-e8,=paper-t128-e32,=paper-t128-e128,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128"
streamed="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e8"
ph check 110 .carry/gpu-check --only "$check" --json $w/check.jsonl
ph streamed1 40 .carry/gpu-check --only "$streamed" --json $w/streamed1.jsonl
ph grid 150 .carry/gpu-check --only "$grid" --json $w/grid.jsonl
ph torch 90 python3 bench/baselines/torch_single.py --variants graph,dense --iters 20 --warmup 5 \
  --preset paper-t128-e8-cf1 paper-t128-e32-cf1 paper-t128-e128-cf1 paper-t4096-e8-cf1 paper-t4096-e32-cf1 \
  paper-t4096-e128-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e128-cf1 qwen3-30b-a3b olmoe-1b-7b \
  --out $w/torch.jsonl
ph streamed2 40 .carry/gpu-check --only "$streamed" --json $w/streamed2.jsonl
ph ncu-pp 70 ncu --clock-control none -k regex:fdm_tile_bench --launch-skip 3 --launch-count 6 \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section ComputeWorkloadAnalysis \
  -o $w/pp .carry/tile-bench --iters 3 --only "n8192 k4096 plain"
[ -f $w/pp.ncu-rep ] && ncu -i $w/pp.ncu-rep --page details > $w/pp-details.txt 2>&1
tar czf $OUT/run132.tgz -C $w .
ab_lines streamed1 grid streamed2
echo "check: $(grep -c '^\[ok\]' $w/check.log) ok, $(grep -c '^\[FAIL\]' $w/check.log) FAIL"; grep -h '^\[FAIL\]' $w/check.log | cut -c1-600
for b in streamed1 grid streamed2; do grep -hE "^(preset|paper)" $w/$b.log 2>/dev/null | sed "s/^/$b /" | cut -c1-100; done
grep -hE "graph|cublas-dense" $w/torch.log | cut -c1-120
grep -E "Duration|Tensor|L2 Cache Throughput|Compute \(SM\) Throughput|Block Size|Executed Ipc A" $w/pp-details.txt 2>/dev/null | head -60
cat $w/summary.txt
