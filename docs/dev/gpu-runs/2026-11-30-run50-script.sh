#!/usr/bin/env bash
# run 50: ping-pong consumers in the tile bench (branch pingpong: each consumer warpgroup its own
# 128x128 tile, main loops taking turns) against the cooperative 128x256 engine (main + stmatrix),
# steady state and MoE-like shapes, alternated; torch.mm in the same call. Every config checked.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d)
for round in 1 2; do
  for t in "s5 pp m16384 n8192 k4096" "s4 pp m16384 n8192 k4096" "128x256 s3 e512 m16384 n8192 k4096" "s5 pp m16384 n2048" "128x256 s3 e512 m16384 n2048" "gather s5 pp"; do
    timeout 60 .carry/pp-tile-bench --only "$t" --iters 20 2>&1 | grep -E '^ok|^FAIL|rror' >> $w/tile.log
  done
done
python3 bench/baselines/torch_mm.py --shape 16384 8192 4096 --shape 16384 2048 2048 >> $w/tile.log 2>&1
cp $w/tile.log $OUT/
cut -c1-150 $w/tile.log
