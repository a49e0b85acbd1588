#!/usr/bin/env bash
# run 131 (written in session 24, NOT YET RUN): ping-pong consumers in the tile bench
# (docs/dev/pingpong-gemm1.md, step 1; `FDM_PINGPONG`, tile_wgmma.cuh "PING-PONG"), against
# the cooperative 128x256 on the same shapes, in one call.
# Why (perf-notes v38 (c)): in the cooperative engine both warpgroups share every stage, so one
# warpgroup's epilogue or hand-off runs under the other's main loop for ~1 µs at most; the
# epilogue is ~3 µs of Qwen3's 11 µs GEMM1 task (K 768). Ping-pong gives each warpgroup whole
# 128x128 tiles, the two in turn through the ring.
# Prediction (the design's): at K 768 (Qwen3's GEMM1 shape, N 2048) ping-pong 10-20% faster than
# the cooperative 128x256 (its epilogue hidden, for ~33% more bytes a FLOP); at K 4096 level to
# -5% (v21's loss there). Every configuration is checked against the f64 reference before it is
# timed (tile_bench.rs); a hang would be the ping-pong's ring or stage bookkeeping: each
# invocation runs under `timeout`.
# Carry: .carry/tile-bench = `cargo build --release -p flashdmoe-cuda --example tile-bench`
# (target/release/examples/tile-bench) stripped, at the commit that added FDM_PINGPONG or later.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
ph k768a 60 timeout 120 .carry/tile-bench --iters 30 --only "n2048 k768"
ph k4096 60 timeout 120 .carry/tile-bench --iters 20 --only "n8192 k4096 plain"
ph k768b 60 timeout 120 .carry/tile-bench --iters 30 --only "n2048 k768"
cp $w/*.log $OUT/ 2>/dev/null
for b in k768a k4096 k768b; do echo "== $b"; grep -E "TFLOP|tflop|^ok|^FAIL|fail|error|bf16" $w/$b.log | cut -c1-200; done
cat $w/summary.txt
