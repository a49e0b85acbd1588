#!/usr/bin/env bash
# run 139 (written in session 26, NOT YET RUN): 2-CTA clusters multicasting B in the tile bench,
# rebuilt (v22's branch was lost): tile_wgmma.cuh "CLUSTERS", tile_bench.cu's pair schedule,
# BenchConfig::cluster (label " c2"); perf-notes v40 (f).
# Why: runs 137-138 put every sustained phase at the board's 700 W cap, our tile at 1425-1485
# MHz where cuBLAS holds 1560-1635: bytes a FLOP, not idle time, are the lever. A cluster pair
# halves B's L2 -> shared-memory bytes (0.0078 B/FLOP against 0.0117). v22 lost 18% on 3
# stages with A by cp.async, the pair in lockstep.
# Prediction: short runs (30 iterations, mostly unthrottled): c2 with A by TMA on 4 stages
# within -5 to +5% of the same tile alone (the lockstep's stalls against the bytes saved); c2
# with cp.async A -5 to -15%. Sustained (1000 iterations, at the cap): c2 by TMA +3 to +8%
# over the tile alone, its SM clock higher. Every configuration is checked against its f64
# reference before it is timed (a wrong multicast or a lost half tile fails there).
# Carry: .carry/tile-bench (`cargo build --release -p flashdmoe-cuda --example tile-bench`,
# stripped). ~150 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-200}; source scripts/gpu-phases.sh
clocks_start
mph short 60 timeout 90 .carry/tile-bench --iters 30 --only "n8192 k4096"
for c in "128x256 tma-a s4 m16384" "128x256 tma-a s4 c2" "128x256 s4 c2" "128x256 tma-a s3 e512 c2"; do
  l=$(echo "$c" | tr ' ' '_'); mph "sus_$l" 20 timeout 40 .carry/tile-bench --iters 1000 --only "$c"
done
clocks_stop > $w/clocks.txt
tar czf $OUT/run139.tgz -C $w .
cat $w/clocks.txt
for f in $w/short.log $w/sus_*.log; do echo "== $(basename $f)"; grep -hE "^\||failed|FAIL|error" $f | cut -c1-130; done
cat $w/summary.txt
