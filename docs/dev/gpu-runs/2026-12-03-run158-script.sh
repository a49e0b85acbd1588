#!/usr/bin/env bash
# run 158 (queued by session 29, after run 157): the paired default sustained, against
# --no-pairs in the same call, clocks sampled. Runs 155-156 timed 20 back-to-back forwards;
# every sustained phase runs at the board's 700 W cap (perf-notes v40), and a pair moves fewer
# L2 -> SM bytes (its weight tile multicast), so it may hold a higher clock too. Prediction:
# DeepSeek-V3 -3 to -6%, Kimi-K2 -4 to -7%, Mixtral -5 to -9% sustained (2000 forwards; the
# clocks of the paired phases equal or higher), every case verified.
# Carry: .carry/gpu-check (release build, stripped). ~420 s (DeepSeek-V3 and Kimi-K2 take
# 9-11 ms a forward: 2000 of them ~20 s each side, plus their builds, ~45-60 s each).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-450}; source scripts/gpu-phases.sh
cases="=preset mixtral-8x7b,=preset deepseek-v3,=preset kimi-k2"
clocks_start
mph paired 200 .carry/gpu-check --sustain 2000 --only "$cases" --json $w/paired.jsonl
mph unpaired 200 .carry/gpu-check --sustain 2000 --no-pairs --only "$cases" --json $w/unpaired.jsonl
clocks_stop > $w/clocks.txt
tar czf $OUT/run158.tgz -C $w .
cat $w/clocks.txt
grep -ho "^\[ok\] preset [^:]*: \[[^]]*\]" $w/paired.log $w/unpaired.log
ab_lines paired unpaired
cat $w/summary.txt
