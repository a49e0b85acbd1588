#!/usr/bin/env bash
# run 140 (written in session 26, NOT YET RUN): issue 13's T16384 row, Qwen3 and OLMoE beside
# PyTorch's grouped graph and the dense pair, every side sustained (2000 forwards or
# iterations: the board's 700 W power cap, runs 137-138), the clocks sampled beside each.
# Why: runs 137-138 measured ours and the dense pair sustained (T16384 E8 1.147-1.151x, E32
# 1.226x) but not PyTorch's grouped graph, nor E128, Qwen3 and OLMoE against theirs.
# Prediction: ours / dense as runs 137-138 (E8 1.14-1.16x, E32 1.21-1.24x, E128 1.50-1.56x);
# ours / PyTorch graph within ±5% of run 132's short ratios (1.73 / 1.62 / 1.46x, Qwen3 1.92x,
# OLMoE 1.85x): both slow under the cap.
# Carry: .carry/gpu-check (`cargo build --release -p flashdmoe-bench --bin gpu-check`, built at
# 830a550 or later for --sustain; stripped). ~300 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-330}; source scripts/gpu-phases.sh
cases="=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
clocks_start
mph ours 150 .carry/gpu-check --sustain 2000 --only "$cases" --json $w/ours.jsonl
mph torch 150 python3 bench/baselines/torch_single.py --variants graph,dense --iters 2000 --warmup 20 \
  --preset paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e128-cf1 qwen3-30b-a3b olmoe-1b-7b \
  --out $w/torch.jsonl
clocks_stop > $w/clocks.txt
tar czf $OUT/run140.tgz -C $w .
cat $w/clocks.txt
grep -hE "^(preset|paper)" $w/ours.log | cut -c1-100
grep -h "back to back" $w/ours.log | grep -o "^\[[a-zA-Z]*\] [^(]*\|back to back [0-9.]* ms a forward over [0-9]*\|output digest [0-9a-f]*" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'
grep -hE "graph|cublas-dense" $w/torch.log | cut -c1-120
cat $w/summary.txt
