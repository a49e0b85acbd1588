#!/usr/bin/env bash
# run 170 (session 32): does the weights' DRAM locality set the rate at which a tile streams
# them? The tile bench's `bt` configurations (FDM_B_TILED, perf-notes v45 (d)) store B as
# tiles -- a k-tile's bn rows x 128 bytes contiguous and pre-swizzled, a column tile's k-tiles
# one after another -- loaded by one bulk copy a tile, against the same shapes from row-major
# B by TMA boxes (each box row 128 bytes of a different weight row, 4-14 KiB apart):
# DeepSeek-V3's GEMM0 streaming (128x128 SwiGLU, one row tile, K 7168), the plain 128x256 at
# K 7168, and T16384 E128's short K (128x256 s4, K 2048, two row tiles a weight tile, 128 MiB
# of B). Prediction: if locality sets the rate, `bt` 10-25% faster on all three; if not,
# level within +-3%. Both forms checked against the f64 reference.
# Carry: .carry/tile-bench (`cargo build --release -p flashdmoe-cuda --example tile-bench`,
# stripped). ~70 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-85}; source scripts/gpu-phases.sh
tb=".carry/tile-bench --iters 30 --only"  # (ph runs commands under timeout: no shell function)
ph dsv3 12 $tb "gather s4 m128 n32768 k7168"
ph dsv3-bt 12 $tb "gather s4 bt m128 n32768 k7168"
ph e128 12 $tb "s4 e256 m256 n32768 k2048"
ph e128-bt 12 $tb "s4 e256 bt m256 n32768 k2048"
ph wide 12 $tb "s3 e512 m128 n65536"
ph wide-bt 12 $tb "s3 e512 bt m128 n65536"
ph dsv3-bt2 10 $tb "gather s4 bt m128 n32768 k7168"
ph dsv3-2 10 $tb "gather s4 m128 n32768 k7168"
tar czf $OUT/run170.tgz -C $w .
for b in dsv3 dsv3-bt e128 e128-bt wide wide-bt dsv3-bt2 dsv3-2; do
  [ -f $w/$b.log ] && { echo "== $b"; grep -hE "^\||failed|FAIL|rror" $w/$b.log | grep -v -- "---\|config" | cut -c1-140; }
done
cat $w/summary.txt
