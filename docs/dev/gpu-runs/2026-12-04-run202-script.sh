#!/usr/bin/env bash
# run 202 (session 39): the issue-13 grid at T4096 / T16384 and T128 E8 beside PyTorch's grouped
# layer (CUDA graph) and the cuBLAS dense pair in one call (torch_single.py --variants
# graph,dense), main at 6385ea0 (the reduce and lane-group experiments removed): the targets'
# standing re-read in one call (the last such call was run 132, before sessions 28-38).
# gpu-check before and after PyTorch (its back-to-back medians, every forward verified).
# Prediction: ours as runs 199-200 (T16384 E8 / E32 / E128 ~0.857 / 0.908 / 1.09; T4096
# 0.268 / 0.308 / 0.632; T128 E8 0.085); PyTorch and the dense pair as run 132 (dense
# 0.731-0.732 at T16384, 0.20-0.21 at T4096; PyTorch 1.475 / 1.507 / 1.653 and 0.537 / 0.565 /
# 1.036): T16384 E8 ~1.17x the dense pair (target 1.15x), E32 ~1.24x, E128 ~1.49x.
# Carry: .carry/gpu-check (6385ea0). ~330 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run202.log; BUDGET=${BUDGET:-440}; source scripts/gpu-phases.sh
grid="=paper-t128-e8,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128"
ph ours1 150 .carry/gpu-check --only "$grid"
ph torch 100 python3 bench/baselines/torch_single.py --variants graph,dense --iters 20 --warmup 5 \
  --preset paper-t128-e8-cf1 paper-t4096-e8-cf1 paper-t4096-e32-cf1 paper-t4096-e128-cf1 \
  paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e128-cf1 --out $w/torch.jsonl
ph ours2 70 .carry/gpu-check --only "$grid"
ab_lines ours1 ours2
for b in ours1 ours2; do grep -hE "^(preset|paper)" $w/$b.log 2>/dev/null | sed "s/^/$b /" | cut -c1-100; done
grep -hE "graph|cublas-dense|dense" $w/torch.log | cut -c1-140
cat $w/summary.txt
