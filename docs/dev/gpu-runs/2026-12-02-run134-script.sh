#!/usr/bin/env bash
# run 134 (session 25, the device budget's last ~280 s): run 133's PyTorch phase again (it was
# refused: `--preset deepseek-v3-routed` was a grid name only; fixed in common.py), then ours
# on two of the same presets so that their ratios come from one call.
# Carry: .carry/gpu-check (1a464f8's kernel).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-210}; source scripts/gpu-phases.sh
ph torch 90 python3 bench/baselines/torch_single.py --variants graph --iters 10 --warmup 3 \
  --preset gpt-oss-20b deepseek-v3-routed kimi-k2-routed mixtral-8x7b --out $w/torch.jsonl
ph ours 80 .carry/gpu-check --only "=preset gpt-oss-20b,=preset deepseek-v3 routed part" --json $w/ours.jsonl
tar czf $OUT/run134.tgz -C $w .
grep -hE "graph" $w/torch.log | cut -c1-120; tail -3 $w/torch.log | cut -c1-300
grep -hE "^(preset|paper)" $w/ours.log 2>/dev/null | cut -c1-100
cat $w/summary.txt
