#!/usr/bin/env bash
# run 158 (queued by session 29, after run 157): the paired default sustained, against
# --no-pairs in the same call, clocks sampled. Runs 155-156 timed 20 back-to-back forwards;
# every sustained phase runs at the board's 700 W cap (perf-notes v40), and a pair moves fewer
# L2 -> SM bytes (its weight tile multicast), so it may hold a higher clock too. Prediction:
# DeepSeek-V3 -3 to -6%, Mixtral -5 to -9% sustained (1500 forwards; the
# clocks of the paired phases equal or higher), every case verified.
# Carry: .carry/gpu-check (release build, stripped). ~250 s, run in the same call right after
# run 157 (session 30 cut Kimi-K2, whose gain run 156 put with DeepSeek-V3's, and the count to
# 1500 to fit both runs in one call: 1500 DeepSeek-V3 forwards ~13 s, its build ~50 s).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
cases="=preset mixtral-8x7b,=preset deepseek-v3"
clocks_start
mph paired 140 .carry/gpu-check --sustain 1500 --only "$cases" --json $w/paired.jsonl
mph unpaired 140 .carry/gpu-check --sustain 1500 --no-pairs --only "$cases" --json $w/unpaired.jsonl
clocks_stop > $w/clocks.txt
tar czf $OUT/run158.tgz -C $w .
cat $w/clocks.txt
grep -ho "^\[ok\] preset [^:]*: \[[^]]*\]" $w/paired.log $w/unpaired.log
ab_lines paired unpaired
cat $w/summary.txt
