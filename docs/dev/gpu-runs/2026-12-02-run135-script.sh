#!/usr/bin/env bash
# run 135 (written in session 25, NOT YET RUN): the two-slab images re-measured after 5b3bd2c
# (perf-notes v39 (b)): until then ptxas serialised every wgmma of an image whose warpgroup
# owns two 64-row slabs (C7520: a run-time `m < slabs` among the wgmmas), so runs 131/133's
# ping-pong and session 16-17's 256-row tiles measured broken images.
# Predictions: (1) tile bench, ping-pong 128x128 at K 4096 near v21's 575-580 TFLOP/s (its own
# loop, session 9) against the cooperative 128x256's 640-665: -10 to -15%; at K 768 (Qwen3's
# GEMM1 shape) within +-5% of the cooperative's 535-539 (the epilogue hidden, the 128x128
# tile's bytes paid). (2) 256x192 at N7680 K4096 above run 80's 518 (then unserialised? it
# predates the test) and the 256x64 gated forms at K 7168 at least 1.5x their run-91 times
# (0.707 / 0.717 ms), within 10% of 128x128's 0.438-0.450. (3) DeepSeek-V3 with --tile 256x64
# from 15.85 ms (run 91) to within +-10% of the default's ~8.6-9.8 (the whole layer with its
# shared expert; default and 256x64 in the same call).
# Carry (stripped, built at 5b3bd2c or later): .carry/tile-bench (`cargo build --release -p
# flashdmoe-cuda --example tile-bench`), .carry/flashdmoe (`cargo build --release --bin
# flashdmoe`), .carry/gpu-check.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
ph tile-k4096 60 timeout 120 .carry/tile-bench --iters 20 --only "n8192 k4096"
ph tile-k768 60 timeout 120 .carry/tile-bench --iters 30 --only "n2048 k768"
ph tile-256 90 timeout 150 .carry/tile-bench --iters 20 --only "256x"
ph tile-k7168 60 timeout 120 .carry/tile-bench --iters 20 --only "n32768 k7168"
ph check256 60 .carry/gpu-check --only "tile 256x64" --json $w/check256.jsonl
ph ds-default 110 .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 10
ph ds-256 110 .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 10 --tile 256x64
tar czf $OUT/run135.tgz -C $w .
for b in tile-k4096 tile-k768 tile-256 tile-k7168; do echo "== $b"; grep -hE "^\||^FAIL|failed" $w/$b.log | cut -c1-130; done
echo "check256: $(grep -c '^\[ok\]' $w/check256.log) ok, $(grep -c '^\[FAIL\]' $w/check256.log) FAIL"
for b in ds-default ds-256; do echo "== $b"; grep -iE "kernel:|verif|back to back|median|PASS|FAIL|error" $w/$b.log | head -8 | cut -c1-200; done
cat $w/summary.txt
