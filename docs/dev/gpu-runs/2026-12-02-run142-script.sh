#!/usr/bin/env bash
# run 142 (session 27): four pipeline stages for the paper layer's 128x256 tile (`--tile
# 128x256s4`: 4 stages, 256-byte epilogue staging) against the chosen 3 stages with 512-byte
# staging, sustained (2000 device-resident forwards), alternated, clocks sampled.
# Why: run 140's traces put T16384 E128's GEMM main loops at 24.9 / 25.9 µs against E8's
# 19.7 / 19.1 (E32 20.4 / 21.1): at E128 an expert has two row tiles, so every task's B comes
# from HBM, not L2, and three stages of 0.84 µs each hide less than its latency under load.
# The tile bench (B in L2) has s4 e256 level with s3 e512 (runs 139, 141).
# Prediction: E128 main loops -5 to -10%, the forward -4 to -8%; E32 -0 to -3%; E8 within +-1%.
# Carry: .carry/flashdmoe (`cargo build --release --bin flashdmoe`, stripped). ~260 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
clocks_start
for rep in 1 2; do
  for e in 128 32 8; do
    mph "e${e}_s3_$rep" 25 .carry/flashdmoe run --preset paper-t16384-e$e --backend cuda --back-to-back 2000
    mph "e${e}_s4_$rep" 25 .carry/flashdmoe run --preset paper-t16384-e$e --backend cuda --back-to-back 2000 --tile 128x256s4
  done
done
clocks_stop > $w/clocks.txt
tar czf $OUT/run142.tgz -C $w .
cat $w/clocks.txt
for f in $w/e*.log; do echo "== $(basename $f .log) $(grep -o 'kernel: [^ ]*' $f) $(grep -o 'verify: [A-Z]*' $f) $(grep -o 'per forward: median [0-9.]* ms' $f) $(grep -o 'back to back: [0-9.]* ms' $f)"; grep -iE "error|FAIL" $f | head -3; done
cat $w/summary.txt
