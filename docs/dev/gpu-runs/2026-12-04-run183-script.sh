#!/usr/bin/env bash
# run 183 (session 35's last call, or the next session's first): the default build with the
# second wave (run 182's FDM_GEMM1_EARLY without its #ifdef, plus the host's kSecondWave word).
# Check: T128 E8 / E16 verified, "second wave 128" in both phase-A lines, times as run 182's
# experiment (E8 ~0.090, E16 ~0.121 ms); then the quick set's one-GPU and recovery cases
# (the whole set where the budget allows). Carry: .carry/gpu-check built from main at or after
# this script's commit. ~60 s + the quick set + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run183.log; BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
ph t128 15 .carry/gpu-check --only "=paper-t128-e8,=paper-t128-e16"
ph quick 40 .carry/gpu-check --quick ${QUICK_ONLY:+--only "$QUICK_ONLY"}
echo "== t128"; grep -o "second wave [0-9]*" $w/t128.log | paste -sd' '; grep -hE "^paper" $w/t128.log
echo "== quick"; [ -f $w/quick.log ] && grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-200
cat $w/summary.txt
