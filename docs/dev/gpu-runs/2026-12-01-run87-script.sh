#!/usr/bin/env bash
# run 87 (session 15): main dd8f9ce (the odd A2 row stride, the router tile's width following E)
# on the real models of issue 16 at T 4096 against PyTorch, verified and traced by `flashdmoe
# bench`: DeepSeek-V3, Kimi-K2, Qwen3-30B-A3B.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
ph bench 400 .carry/flashdmoe bench --preset qwen3-30b-a3b deepseek-v3 kimi-k2 --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/bench
tar czf $OUT/run87.tgz -C $w .
grep -vE ": (build|first forward|check again)" $w/bench.log | grep -E "flashdmoe-cuda|graph|^[a-z]" | cut -c1-160 | tail -16
cat $w/summary.txt
