#!/usr/bin/env bash
# run 149 (session 28): the paired tasks' prize in the tile bench before step 2 is built
# (docs/dev/paired-tasks.md): DeepSeek-V3's gated GEMM0 tile (128x128 SwiGLU, A gathered, K
# 7168, 128 column tiles of weights) on experts of two row tiles (m 256, and m 150: one full,
# one of 22 rows), the row tiles a wave apart (g1: the second reads its weights from HBM again,
# as in the MoE kernel, v29 (d)) against the two as a 2-CTA cluster's pair (c2 g1: B read once,
# half boxes multicast), beside the row tiles side by side (g16, sharing B through L2).
# Prediction: g16 m256 0.41-0.42 ms (runs 91-135); g1 m256 ~0.50 (every tile bound by HBM at
# ~125 µs, as m128's 0.25 ms for two waves); c2 g1 m256 0.40-0.43 (level with g16: B once,
# then bound by the tile's compute); m150 like m256 in each form (a 22-row tile costs a full
# one's B bytes and, with both warpgroups' rows... one warpgroup, the same time).
# Carry: .carry/tile-bench (`cargo build --release -p flashdmoe-cuda --example tile-bench`,
# stripped). ~70 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-100}; source scripts/gpu-phases.sh
ph g16 30 timeout 60 .carry/tile-bench --iters 50 --only "gather s4 m256 n32768 k7168"
ph g1a 30 timeout 60 .carry/tile-bench --iters 50 --only "s4 g1 m"
ph g1b 30 timeout 60 .carry/tile-bench --iters 50 --only "s4 c2 g1 m"
ph g16b 15 timeout 60 .carry/tile-bench --iters 50 --only "gather s4 m150 n32768 k7168"
tar czf $OUT/run149.tgz -C $w .
for f in $w/g16.log $w/g1a.log $w/g1b.log $w/g16b.log; do echo "== $(basename $f)"; grep -hE "^\||failed|FAIL|error" $f | grep -v -- "---\|config" | cut -c1-130; done
cat $w/summary.txt
