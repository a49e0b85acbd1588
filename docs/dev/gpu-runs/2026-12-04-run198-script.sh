#!/usr/bin/env bash
# run 198 (session 38, nvidia-h200): the checks run 197 ran out of time for, with experiment
# FDM_REDUCE_RETURN (GEMM1's rows reduced into the output, the combines empty): the small
# layers of every dtype and activation, skewed routing, virtual P = 2 / 4 (ranks sharing the
# GPU: GEMM1 reduces into another virtual rank's output) and the device-resident cases.
# Prediction: every case passes with main's digests where k <= 2 (k > 2 layers are unchanged).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run198.log; BUDGET=${BUDGET:-170}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_REDUCE_RETURN"
ph checks_red 150 $x .carry/gpu-check --quick --only "small,skewed,virtual P=2,virtual P=4,device-resident"
echo "== checks_red"; [ -f $w/checks_red.log ] && grep -E "^\[FAIL|passed|failed|^\[ok\]" $w/checks_red.log | cut -c1-160
cat $w/summary.txt
