#!/usr/bin/env bash
# run 166 (session 32): run 165 found a fifth stage worth -7 to -11% of T16384 E128's main loops
# at 64x128 (K = 2048: 32 k-tiles a task, so each task's pipeline fill is a large share) but
# only -2 to -4% of DeepSeek-V3's GEMM0 (K = 7168). The paper layer's default tile, 128x256s4
# (48 KiB a stage), cannot take a fifth stage; 128x128 (32 KiB) takes 5 or 6. Question: does a
# deeper 128x128 pipeline beat the default where issue 13's targets are missed (T16384 E128
# 1.41x and E32 1.21x the dense pair)? Prediction: 128x128s4 slower than the default (A read
# twice as often: +5 to +15%); s5 and s6 each -4 to -8% on s4's main loops; whether s6 beats
# the default is open (needs >= 10% off s4). E8 as the control where weights sit in L2.
# Carry: .carry/gpu-check built from main (8c13075 or later). ~330 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-480}; source scripts/gpu-phases.sh
for c in e128 e32 e8; do
  case=paper-t16384-$c
  ph $c-default 30 .carry/gpu-check --only "=$case"
  ph $c-s4 30 .carry/gpu-check --tile 128x128s4 --only "=$case"
  ph $c-s5 30 .carry/gpu-check --tile 128x128s5 --only "=$case"
  ph $c-s6 30 .carry/gpu-check --tile 128x128s6 --only "=$case"
done
ph e128-default2 30 .carry/gpu-check --only "=paper-t16384-e128"
ph e128-s6b 30 .carry/gpu-check --tile 128x128s6 --only "=paper-t16384-e128"
tar czf $OUT/run166.tgz -C $w .
labels="e128-default e128-s4 e128-s5 e128-s6 e128-default2 e128-s6b e32-default e32-s4 e32-s5 e32-s6 e8-default e8-s4 e8-s5 e8-s6"
for f in $labels; do
  [ -f $w/$f.log ] || continue
  echo "== $f $(grep -o -E "output digest [0-9a-f]+|in-task µs \([^)]*\): [^;]*|back to back [0-9.]+ ms" $w/$f.log | tr '\n' ' ')"
  grep -h "^paper" $w/$f.log
done
cat $w/summary.txt
