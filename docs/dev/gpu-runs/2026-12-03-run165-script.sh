#!/usr/bin/env bash
# run 165 (session 32): is a streamed GEMM0 tile bound by its stages' round trip? (perf-notes
# v44 (g) "What (d)-(g) leave standing".) DeepSeek-V3 in one tile geometry, 64x128 (a stage:
# 64 A rows + the gate and up weights' 2 x 128 rows, 40 KiB), at 4 stages and at 5, alternated
# in one call (gpu-check --tile, new in this session; both images compile with zero spills on
# the CPU: dump-moe deepseek-v3 OUT 64x128s4 / 64x128s5). The default (128x128s4, paired) once
# for reference. Prediction: if a k-tile's time is the stages' round trip (~2.8 µs loaded
# latency over 4 stages), s5's GEMM0 main loops (in-task µs, ≤ half and full) -15 to -20%
# against s4 and the forward -8 to -12%; if the tile waits on its SM's requests (v44 (f)'s
# reading), level within ±3%. T16384 E128 the same pair (its GEMM0 tiles mostly ≤ half).
# Carry: .carry/gpu-check built from main. ~480 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
ph dsv3-s4 90 .carry/gpu-check --tile 64x128s4 --only "=preset deepseek-v3"
ph dsv3-s5 90 .carry/gpu-check --tile 64x128s5 --only "=preset deepseek-v3"
ph e128-s4 25 .carry/gpu-check --tile 64x128s4 --only "=paper-t16384-e128"
ph e128-s5 25 .carry/gpu-check --tile 64x128s5 --only "=paper-t16384-e128"
ph dsv3-s5b 90 .carry/gpu-check --tile 64x128s5 --only "=preset deepseek-v3"
ph dsv3-s4b 90 .carry/gpu-check --tile 64x128s4 --only "=preset deepseek-v3"
ph dsv3-default 90 .carry/gpu-check --only "=preset deepseek-v3"
tar czf $OUT/run165.tgz -C $w .
ab_lines dsv3-s4 dsv3-s5 dsv3-s5b dsv3-s4b dsv3-default e128-s4 e128-s5
for f in dsv3-s4 dsv3-s5 dsv3-s5b dsv3-s4b dsv3-default e128-s4 e128-s5; do
  [ -f $w/$f.log ] || continue
  echo "== $f"; grep -h "^preset\|^paper\|kernel\|passed" $w/$f.log | cut -c1-200
done
cat $w/summary.txt
