#!/usr/bin/env bash
# run 178 (session 34, after run 177): (1) the new Hopper tile rule (spec.rs hopper_bn: the
# GEMM0 width whose waves of bytes an SM receives are fewest) changes only T128 E8 (64x64 ->
# 64x128), E16 (64x64 -> 64x256) and E32 (64x128 -> 64x256) of the presets and paper grid.
# Run 177 forced two of them: E8 64x128s8 -4%, E32 64x256s5 -2.6%. Prediction: E16 -5 to
# -10% (four waves of 64-column tasks -> one of 256: the model's bytes -15%); the defaults'
# stage counts as the forced ones or level. (2) FDM_TWO_WAVES (run 177: T128 E8 -1.5%, E32
# -0.8%, T4096 level, T16384 E128 -1.5% once) on the new tiles: E8's 128 tasks are one wave
# (no effect), E16/E32's 256 two (predicted -1%). (3) The whole quick check set with both
# changes (the checks' small layers take the new rule too). Every timed case verified.
# Carry: .carry/gpu-check built from this commit. ~320 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$OUT/run178; mkdir -p $w; BUDGET=${BUDGET:-380}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_TWO_WAVES"
for e in e8 e16 e32; do
  case $e in e8) old=64x64s8;; e16) old=64x64s8;; e32) old=64x128s8;; esac
  ph $e-new 12 .carry/gpu-check --only "=paper-t128-$e"
  ph $e-old 12 .carry/gpu-check --tile $old --only "=paper-t128-$e"
  ph $e-two 12 $x .carry/gpu-check --only "=paper-t128-$e"
  ph $e-new2 12 .carry/gpu-check --only "=paper-t128-$e"
  ph $e-old2 12 .carry/gpu-check --tile $old --only "=paper-t128-$e"
  ph $e-two2 12 $x .carry/gpu-check --only "=paper-t128-$e"
done
ph e32-s5 12 .carry/gpu-check --tile 64x256s5 --only "=paper-t128-e32"
ph e16-s5 12 .carry/gpu-check --tile 64x256s5 --only "=paper-t128-e16"
ph quick 150 $x .carry/gpu-check --quick
L=""; for e in e8 e16 e32; do L="$L $e-new $e-old $e-two $e-new2 $e-old2 $e-two2"; done; L="$L e32-s5 e16-s5"
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f $(grep -ho '\[bf16[^]]*\]' $w/$f.log | head -1) $(grep -ho 'first task at [0-9]*us\|gaps before [^;]*\|back to back [0-9.]* ms' $w/$f.log | paste -sd' ' | cut -c1-200)"; grep -hE "^paper" $w/$f.log; }
done
echo "== quick"; grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-200
cat $w/summary.txt
