#!/usr/bin/env bash
# run 189 (written in session 36, not yet run): experiment FDM_GEMM1_WINDOW=W (perf-notes v49
# (f)): on a one-GPU layer whose GEMM0 tasks the OS block enqueues at once, a completing GEMM0
# publishes its row tile's first column group of GEMM1 tasks and the OS block's warp 1 (the
# window poster) the second, W row tiles behind the completed prefix; the last W row tiles'
# second groups run beside the first groups' combines. Against main on T16384 and T4096 E8 /
# E32 / E128 and Qwen3-30B-A3B, W = 32 twice and W = 16 once, then the checks with W = 32.
# Prediction: T16384 E8 / E32 -2 to -3% (the combine tail ~48 -> ~25 µs, the second groups'
# intermediate rows from L2: 16 MiB at W 32), E128 level to -2%; T4096 E8 / E32 -2% (run
# 186's form already won there: the rows fit L2); Qwen3 level. The same output digests.
# Main's T128 E8 in every phase also verifies session 36's review mend (in_place_gemm1: the
# second wave's descriptors; expect "second wave 128", digest 5666d09c14b187bb).
# Carry: .carry/gpu-check built from main at or after this script's commit. ~530 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run189.log; BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
w32="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_WINDOW=32"
w16="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_WINDOW=16"
cases="=paper-t128-e8,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=preset qwen3-30b-a3b"
ph base 80 .carry/gpu-check --only "$cases"
ph w32 80 $w32 .carry/gpu-check --only "$cases"
ph w16 80 $w16 .carry/gpu-check --only "$cases"
ph w32b 60 $w32 .carry/gpu-check --only "$cases"
ph base2 60 .carry/gpu-check --only "$cases"
ph checks_w32 120 $w32 .carry/gpu-check --quick --only "small,skewed,virtual P=2,virtual P=4,device-resident,forced timeout"
L="base w32 w16 w32b base2"
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^\[(ok|FAIL)\] " $w/$f.log | grep -o "^\[[a-zA-Z]*\] [a-z0-9 =-]*\|output digest [0-9a-f]*\|gemm1 n=[0-9]* mean [0-9.]*us span [0-9-]*us\|combine n=[0-9]* mean [0-9.]*us span [0-9-]*us\|windowed GEMM1 [0-9]*\|busy [0-9.]*%" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'; grep -hE "^(paper|preset)" $w/$f.log; }
done
echo "== checks_w32"; [ -f $w/checks_w32.log ] && grep -E "^\[FAIL|passed|failed" $w/checks_w32.log | cut -c1-200
cat $w/summary.txt
