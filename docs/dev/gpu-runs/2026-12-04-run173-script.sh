#!/usr/bin/env bash
# run 173 (session 33): the weights as tiles read through tensor maps of 128-byte rows
# (FDM_TILED_MAP, tile_wgmma.cuh kTiledMap; TensorMap::tiles) instead of bulk copies. Run 171
# (bulk copies): DeepSeek-V3's paired GEMM0 tasks' main loop 81.3 -> 88.0 us (+8%: each CTA's
# half by a multicast bulk copy) while its unpaired GEMM0 (79.1 -> 76.0) and GEMM1 (22.8 ->
# 22.0) main loops won 3-4%; the forward level (9.007/9.015 vs 8.978/8.909 ms).
# First the tile bench, three forms a shape (row-major boxes, bulk copies `bt`, map `btm`):
# DeepSeek-V3's GEMM0 tile alone and as a 2-CTA cluster's pair (g1: the weights read from HBM),
# the plain 128x256 at K 7168 and T128 E8's K 2048 shape. Prediction: `btm` level with `bt`
# alone (both contiguous), and in the cluster the row-major pair's time or better (not
# `bt`'s multicast-bulk loss). Then the MoE kernel: four checks with --weight-tiles, and
# DeepSeek-V3 wt/base/wt. Prediction: paired GEMM0 main loop 81 -> 77-79 us, unpaired GEMM0
# and GEMM1 as run 171 (-3 to -4%), the forward -2 to -3%; the same digests.
# Carry: .carry/gpu-check and .carry/tile-bench built from main at this commit. ~420 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-440}; source scripts/gpu-phases.sh
tb=".carry/tile-bench --iters 30 --only"  # (ph runs commands under timeout: no shell function)
ph dsv3 10 $tb "gather s4 m128 n32768 k7168"
ph dsv3-bt 10 $tb "gather s4 bt m128 n32768 k7168"
ph dsv3-btm 10 $tb "gather s4 btm m128 n32768 k7168"
ph pair 10 $tb "gather s4 c2 g1 m256 n32768"
ph pair-bt 10 $tb "gather s4 c2 g1 bt m256 n32768"
ph pair-btm 10 $tb "gather s4 c2 g1 btm m256 n32768"
ph solo-g1 10 $tb "gather s4 g1 m256 n32768"
ph wide 10 $tb "s3 e512 m128 n65536"
ph wide-bt 10 $tb "s3 e512 bt m128 n65536"
ph wide-btm 10 $tb "s3 e512 btm m128 n65536"
ph t128 10 $tb "s4 e256 m128 n16384 k2048"
ph t128-bt 10 $tb "s4 e256 bt m128 n16384 k2048"
ph t128-btm 10 $tb "s4 e256 btm m128 n16384 k2048"
wt="--weight-tiles"
checks="=small column groups,=virtual P=2 column groups,=forced timeout + recovery virtual P=2,=combine stream small top-8"
ph checks 50 .carry/gpu-check --quick $wt --only "$checks"
ph dsv3-wt 90 .carry/gpu-check $wt --only "=preset deepseek-v3"
ph dsv3-base 90 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-wt2 90 .carry/gpu-check $wt --only "=preset deepseek-v3"
tar czf $OUT/run173.tgz -C $w .
for b in dsv3 dsv3-bt dsv3-btm pair pair-bt pair-btm solo-g1 wide wide-bt wide-btm t128 t128-bt t128-btm; do
  [ -f $w/$b.log ] && { echo "== $b"; grep -hE "^ok|^FAIL|failed [1-9]|rror" $w/$b.log | cut -c1-120; }
done
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-150
ab_lines dsv3-wt dsv3-base dsv3-wt2
for f in dsv3-wt dsv3-base dsv3-wt2; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "^preset\|host seconds" $w/$f.log | grep -o "^[a-z].*\|host seconds: .*" | cut -c1-200; }
done
cat $w/summary.txt
