#!/usr/bin/env bash
# run 191 (session 37): the third wave's new rule (every GEMM1 task in the second wave), from
# a deadlock core's model of the waves found (the simulator's proptest, H > I: a gated
# combine with a GEMM1 it waits for posted behind it in the same mailbox; perf-notes v50 (e)).
# (1) The layer that can hit it on the GPU (T64, H 2048, I 256, E8, top-1: GEMM1 tasks 8x the
# GEMM0 tasks) with the OLD kernel (.carry/flashdmoe-old, built before the fix), 300 forwards
# back to back: a timeout would confirm the bug on the GPU; passing says the GPU's 131
# processors made it unlikely, not that it cannot happen. (2) The same layer with the fix, in
# gpu-check's new quick case (waves compared with core's model; expect no third wave), and
# the waves of the T128 paper layers unchanged (T128 E8 (128, 128, 32), E16 (128, 128, 16)).
# (3) The quick set with the fix.
# Carry: .carry/gpu-check, .carry/flashdmoe (the fix), .carry/flashdmoe-old. ~250 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run191.log; BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
layer="--backend cuda --world 1 --tokens 64 --hidden 2048 --inter 256 --experts 8 --top-k 1 --dtype bf16 --activation relu --dropless"
ph old_kernel 90 .carry/flashdmoe-old run $layer --back-to-back 300
ph new_kernel 60 .carry/flashdmoe run $layer --back-to-back 300
ph waves 60 .carry/gpu-check --only "=paper-t128-e8,=paper-t128-e16,waves with GEMM1"
ph quick 240 .carry/gpu-check --quick
for f in old_kernel new_kernel; do echo "== $f"; grep -hE "verify|back to back|timeout|error|tasks:" $w/$f.log | cut -c1-300 | head -6; done
echo "== waves"; grep -hE "^\[(ok|FAIL)\]" $w/waves.log | grep -o "^\[[a-zA-Z]*\] [a-zA-Z0-9 =.-]*\|waves [^;]*" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'
grep -hE "^(paper|preset)" $w/waves.log
echo "== quick"; grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-300
cat $w/summary.txt
