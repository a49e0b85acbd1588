#!/usr/bin/env bash
# run 148 (written in session 27, NOT YET RUN): the first step of docs/dev/paired-tasks.md in
# the tile bench: `c2m` (FDM_CLUSTER_MIXED), solo tiles among a 2-CTA cluster's pairs on one set
# of barriers (a solo tile loads both halves of B itself and counts its releases twice), every
# fourth pair split (rank 1 computes both row tiles alone, rank 0 none), the pipelines
# re-initialised and re-aligned before each pair (tile_bench.cu `align_for_pair`).
# Prediction: correct (the f64 check of every tile; a barrier hazard would show as a wrong tile
# or a hang, bounded by the phase's timeout); c2m 20-25% below the 4-stage c2 (661 TFLOP/s
# sustained in run 141): a split item takes two tile times on rank 1 while rank 0 waits at the
# next pair (5 tile times per 4 items: -20%), plus a drain before each pair (~1 µs of a ~28
# µs pair at K 4096). Measured beyond -25%, the re-alignment costs more than predicted.
# Carry: .carry/tile-bench (`cargo build --release -p flashdmoe-cuda --example tile-bench`,
# stripped). ~60 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-90}; source scripts/gpu-phases.sh
ph short 40 timeout 60 .carry/tile-bench --iters 30 --only "128x256 tma-a s4"
ph repeat 30 timeout 40 .carry/tile-bench --iters 200 --only "c2m"
tar czf $OUT/run148.tgz -C $w .
for f in $w/short.log $w/repeat.log; do echo "== $(basename $f)"; grep -hE "^\||failed|FAIL|error" $f | grep -v -- "---\|config" | cut -c1-130; done
cat $w/summary.txt
