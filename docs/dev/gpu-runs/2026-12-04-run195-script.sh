#!/usr/bin/env bash
# run 195 (session 38, nvidia-h200; run again as run 197 after the fix below): experiment FDM_REDUCE_RETURN (perf-notes v51 (b)): GEMM1's
# epilogue adds its rows into the tokens' output rows by vector reductions (red.global.add
# .noftz.v4.bf16x2) on rows zeroed during A1; the combine tasks are left empty. At most two
# slots a token (the paper layers, Mixtral): a two-term sum onto zero rounds once in either
# order, so the output must keep main's digest bit for bit. Run 194's write-path bench: the
# 128 MiB of reductions take 73 µs alone against 36 for the stores, but the split form's
# combine pass (55 µs) and its place after the last GEMM1 go. Main / red / red / main on the
# paper grid (T128 E8 / E16, T4096 and T16384 at E 8 / 32 / 128) and Mixtral, then the
# checks with it. Prediction: T16384 -45 to -65 µs (E8 0.880 -> ~0.82, E32 0.927 -> ~0.87,
# E128 1.113 -> ~1.07: its weights stream, so the reductions' line fetches compete), T4096
# -10 to -20 µs, T128 E8 / E16 -4 to -6 µs (the combines after GEMM1 go), Mixtral -1%;
# the same digests. Carry: .carry/gpu-check from main with the experiment. ~470 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run195.log; BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN"
cases="=paper-t128-e8,=paper-t128-e16,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset mixtral-8x7b"
ph base 110 .carry/gpu-check --only "$cases"
ph red 110 $x .carry/gpu-check --only "$cases"
ph red2 80 $x .carry/gpu-check --only "$cases"
ph base2 80 .carry/gpu-check --only "$cases"
ph checks_red 120 $x .carry/gpu-check --quick --only "small,skewed,virtual P=2,virtual P=4,device-resident,forced timeout"
L="base red red2 base2"
ab_lines $L
for f in $L; do [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^(paper|preset)" $w/$f.log; }; done
echo "== checks_red"; [ -f $w/checks_red.log ] && grep -E "^\[FAIL|passed|failed" $w/checks_red.log | cut -c1-200
cat $w/summary.txt
