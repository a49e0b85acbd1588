#!/usr/bin/env bash
# run 48 (nvidia-h200-x2): weak scaling with the Hopper engine (target 6): T = 8192 a GPU, E = 32,
# P = 1 and 2 (P = 4 and 8 skipped: no such machine lent), against PyTorch single-GPU and EP
# baselines in the same call; every case verified. Kernel: main + stmatrix staging (run 47).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d)
nvidia-smi topo -m > $w/topo.txt 2>&1
timeout 420 .carry/flashdmoe bench --backend cuda --config bench/grids/weak-scaling.toml --baselines torch-single,torch-ep \
  --iters 20 --warmup 5 --out $w/weak > $w/weak.log 2>&1; echo "weak rc=$?" >> $w/summary.txt
tar czf $OUT/run48.tgz -C $w .
grep -vE "^\s*note" $w/weak.log | tail -30 | cut -c1-160
cat $w/summary.txt
