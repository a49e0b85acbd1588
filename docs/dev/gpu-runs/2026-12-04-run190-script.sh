#!/usr/bin/env bash
# run 190 (session 37): core's model of the waves (flashdmoe_core::runtime::Waves) against
# the kernel's control words on the one-GPU paper layers and Qwen3 (gpu-check's timed cases
# now print "waves (first, second, third) as core's model" or fail), then the quick set on
# main after FDM_GEMM1_WINDOW's removal (e881d2a: kernel code removed, the default path
# untouched). Prediction: every timed case "as core's model" (T128 E8 (128, 128, 32), E16
# (128, 128, 16), E32 / E128 (131, 0, 0)); the quick set 56 of 56 (the default build);
# timings as run 189's main phase (T128 E8 0.085, T16384 E8 0.86-0.88).
# Carry: .carry/gpu-check built from this script's commit. ~250 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run190.log; BUDGET=${BUDGET:-500}; source scripts/gpu-phases.sh
cases="=paper-t128-e8,=paper-t128-e16,=paper-t128-e32,=paper-t128-e128,=paper-t4096-e8,=paper-t16384-e8,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
ph waves 120 .carry/gpu-check --only "$cases"
ph quick 300 .carry/gpu-check --quick
echo "== waves"; grep -hE "^\[(ok|FAIL)\]" $w/waves.log | grep -o "^\[[a-zA-Z]*\] [a-z0-9 =.-]*\|waves [^;]*\|output digest [0-9a-f]*" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'
grep -hE "^(paper|preset)" $w/waves.log
echo "== quick"; grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-300
cat $w/summary.txt
