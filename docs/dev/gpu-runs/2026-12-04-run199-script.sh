#!/usr/bin/env bash
# run 199 (written in session 38, not yet run): experiments FDM_REDUCE_BULK and
# FDM_REDUCE_ZERO_ASYNC on FDM_REDUCE_RETURN (perf-notes v51 (c)-(d), reduce-return.md):
# GEMM1's reductions into the output sent by bulk reductions (cp.reduce.async.bulk, a staged
# row each, the chunk first rewritten in row order) instead of the consumers' red.global.add,
# which cost GEMM1's epilogue +3 µs a task in run 197 (2.8 -> 5.8 µs at T16384 E8: the forward
# +1.5% though the combine tail went); and the output zeroed by bulk stores issued at A2's
# start instead of stores under A1's barrier (run 197: the first task 42 -> 58 µs at T16384).
# First the checks with all three (the small layers, skewed routing, virtual P = 2 / 4, the
# device-resident cases: run 197 ran out of time for them), then main / all three / bulk
# without the async zeroing / main on the paper grid and Mixtral, then the checks with the
# red form if time is left. Prediction: main's digests in every k <= 2 case; GEMM1's epilogue
# ~3.1 µs a task (main 2.8, the red form 5.8); the first task at main's time with the async
# zeroing (T16384 E8 ~42 µs), ~58 without; T16384 E8 0.865 -> ~0.82 with all three (-5%),
# ~0.835 bulk alone; E32 / E128 -3 to -4%; T128 E8 ~0.082 (-3.5%); T4096 -2 to -4%.
# Carry: .carry/gpu-check from main at or after this script's commit. ~560 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run199.log; BUDGET=${BUDGET:-570}; source scripts/gpu-phases.sh
red="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN"
bulk="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN,FDM_REDUCE_BULK"
all="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN,FDM_REDUCE_BULK,FDM_REDUCE_ZERO_ASYNC"
checks="small,skewed,virtual P=2,virtual P=4,device-resident"
cases="=paper-t128-e8,=paper-t128-e16,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset mixtral-8x7b"
ph checks_all 110 $all .carry/gpu-check --quick --only "$checks"
ph base 100 .carry/gpu-check --only "$cases"
ph all 80 $all .carry/gpu-check --only "$cases"
ph bulk 100 $bulk .carry/gpu-check --only "$cases"
ph base2 70 .carry/gpu-check --only "$cases"
ph checks_red 90 $red .carry/gpu-check --quick --only "$checks"
L="base all bulk base2"
ab_lines $L
for f in $L; do [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^(paper|preset)" $w/$f.log; }; done
for f in checks_all checks_red; do echo "== $f"; [ -f $w/$f.log ] && grep -E "^\[FAIL|passed|failed" $w/$f.log | cut -c1-200; done
cat $w/summary.txt
