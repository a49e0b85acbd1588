#!/usr/bin/env bash
# run 199 (written in session 38, not yet run): experiment FDM_REDUCE_BULK on FDM_REDUCE_RETURN
# (perf-notes v51 (c)-(d)): GEMM1's reductions into the output sent by bulk reductions
# (cp.reduce.async.bulk, a staged row each, the chunk first rewritten in row order) instead of
# the consumers' red.global.add, which cost GEMM1's epilogue +3 µs a task in run 197 (2.8 ->
# 5.8 µs at T16384 E8: the forward +1.5% though the combine tail went). First the checks with
# both forms (run 198's set, which run 197 ran out of time for), then main / red / bulk / main
# on the paper grid and Mixtral. Prediction: the same digests as main for every k <= 2 case;
# GEMM1's epilogue back near main's ~2.8 µs + ~0.3 µs for the rewrite; T16384 E8 0.865 ->
# ~0.83 (its GEMM1s end where main's do, the combines' no-op tail ~14 µs after them, against
# main's ~50), E32 / E128 -3%; T128 E8 0.082 as the red form (-3.5%); T4096 -2 to -4%.
# Carry: .carry/gpu-check from main at or after this script's commit. ~560 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run199.log; BUDGET=${BUDGET:-570}; source scripts/gpu-phases.sh
red="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN"
bulk="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN,FDM_REDUCE_BULK"
checks="small,skewed,virtual P=2,virtual P=4,device-resident"
cases="=paper-t128-e8,=paper-t128-e16,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset mixtral-8x7b"
ph checks_bulk 110 $bulk .carry/gpu-check --quick --only "$checks"
ph base 100 .carry/gpu-check --only "$cases"
ph bulk 80 $bulk .carry/gpu-check --only "$cases"
ph red 100 $red .carry/gpu-check --only "$cases"
ph base2 70 .carry/gpu-check --only "$cases"
ph checks_red 90 $red .carry/gpu-check --quick --only "$checks"
L="base bulk red base2"
ab_lines $L
for f in $L; do [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^(paper|preset)" $w/$f.log; }; done
for f in checks_bulk checks_red; do echo "== $f"; [ -f $w/$f.log ] && grep -E "^\[FAIL|passed|failed" $w/$f.log | cut -c1-200; done
cat $w/summary.txt
