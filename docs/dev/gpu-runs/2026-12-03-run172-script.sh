#!/usr/bin/env bash
# run 172 (written in session 32, NOT YET RUN; after run 171, on the same build): the weights
# as tiles (gpu-check --weight-tiles) on the other layers that stream their weights, each
# against the default in one call: Mixtral (K 4096 / 14336, paired), Kimi-K2 (K 7168, paired),
# T128 E8 (one row tile an expert, every weight read once from HBM at K 2048: the small-batch
# target, 3.3x its floor) and T16384 E128 (K 2048, two row tiles a weight tile). Prediction
# (run 170's bench: -4% at K 7168, level at K 2048 with two row tiles sharing the weights):
# Kimi-K2 -2 to -3%, Mixtral -1 to -2%, T128 E8 -2 to +2% (one row tile: no L2 sharing, so
# the K 2048 result may not carry over), E128 level. The same digests with and without.
# First the tile bench's T128 E8 shape (one row tile a weight tile, K 2048, 64 MiB of B read
# once) in both forms: does run 170's K 2048 result (level) hold without L2 sharing?
# Carry: .carry/gpu-check built from main (5dfab35 or later) and .carry/tile-bench
# (`cargo build --release -p flashdmoe-cuda --example tile-bench`, stripped). ~470 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-520}; source scripts/gpu-phases.sh
wt="--weight-tiles"
ph bench-t128 10 .carry/tile-bench --iters 30 --only "s4 e256 m128 n16384 k2048"
ph bench-t128-bt 10 .carry/tile-bench --iters 30 --only "s4 e256 bt m128 n16384 k2048"
ph t128-wt 25 .carry/gpu-check $wt --only "=paper-t128-e8"
ph t128-base 25 .carry/gpu-check --only "=paper-t128-e8"
ph e128-wt 30 .carry/gpu-check $wt --only "=paper-t16384-e128"
ph e128-base 30 .carry/gpu-check --only "=paper-t16384-e128"
ph mixtral-wt 70 .carry/gpu-check $wt --only "=preset mixtral-8x7b"
ph mixtral-base 70 .carry/gpu-check --only "=preset mixtral-8x7b"
ph kimi-base 120 .carry/gpu-check --only "=preset kimi-k2"
ph kimi-wt 120 .carry/gpu-check $wt --only "=preset kimi-k2"
tar czf $OUT/run172.tgz -C $w .
for b in bench-t128 bench-t128-bt; do
  [ -f $w/$b.log ] && { echo "== $b"; grep -hE "^\||failed|FAIL|rror" $w/$b.log | grep -v -- "---\|config" | cut -c1-140; }
done
ab_lines t128-wt t128-base e128-wt e128-base mixtral-wt mixtral-base kimi-base kimi-wt
for f in t128-wt t128-base e128-wt e128-base mixtral-wt mixtral-base kimi-base kimi-wt; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "^preset\|^paper\|host seconds" $w/$f.log | grep -o "^[a-z].*\|host seconds: .*" | cut -c1-200; }
done
cat $w/summary.txt
