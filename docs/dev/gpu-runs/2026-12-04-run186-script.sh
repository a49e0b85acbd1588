#!/usr/bin/env bash
# run 186 (session 36): experiment FDM_GEMM1_DEFER (perf-notes v49 (c)): on a one-GPU layer
# whose GEMM0 tasks the OS block enqueues at once, every row tile's second column group of
# GEMM1 tasks goes to the GEMM log's end, so the first group's combines run beside the second
# group's GEMM1s. Against main on T16384 and T4096 E8 / E32 / E128, T128 E32 (eligible, no
# second wave) and Qwen3-30B-A3B, alternated twice, then the quick set with it.
# Prediction (perf-notes v49 (c)): T16384 E8 / E32 -2 to -4% (the combine tail about halved,
# +128 MiB of intermediate rows read again), E128 level (its weights stream: the re-reads
# compete); T4096 -1 to -3%; T128 E32 and Qwen3 level. The same output digests (the same tasks).
# Carry: .carry/gpu-check built from main at or after this script's commit. ~420 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run186.log; BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_GEMM1_DEFER"
cases="=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t128-e32,=preset qwen3-30b-a3b"
ph base 80 .carry/gpu-check --only "$cases"
ph defer 80 $x .carry/gpu-check --only "$cases"
ph defer2 60 $x .carry/gpu-check --only "$cases"
ph base2 60 .carry/gpu-check --only "$cases"
ph quick_defer 200 $x .carry/gpu-check --quick
L="base defer defer2 base2"
ab_lines $L
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^\[(ok|FAIL)\] " $w/$f.log | grep -o "^\[[a-zA-Z]*\] [a-z0-9 =-]*\|gemm1 n=[0-9]* mean [0-9.]*us span [0-9-]*us\|combine n=[0-9]* mean [0-9.]*us span [0-9-]*us\|deferred GEMM1 [0-9]*\|busy [0-9.]*%" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g'; grep -hE "^(paper|preset)" $w/$f.log; }
done
echo "== quick_defer"; [ -f $w/quick_defer.log ] && grep -E "^\[FAIL|passed|failed" $w/quick_defer.log | cut -c1-200
cat $w/summary.txt
