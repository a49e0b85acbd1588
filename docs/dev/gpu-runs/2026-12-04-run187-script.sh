#!/usr/bin/env bash
# run 187 (session 36): experiment FDM_PDL (perf-notes v49 (d)): the MoE kernel launched with
# programmatic stream serialization (cuLaunchKernelEx, cooperative + programmatic), every
# thread waiting on griddepcontrol.wait first and then triggering the next launch. Against
# main, alternated twice, on the T128 grid (where the launch's ~8 µs between back-to-back
# forwards is ~10% of a forward), T4096 E8, T16384 E8 and Qwen3-30B-A3B, then the checks that
# queue forwards back to back or time out (device-resident, forced timeouts, virtual P = 2).
# Prediction: back to back -2 to -5 µs a forward (T128 E8 0.085 -> ~0.081 ms, -5%; T16384 E8
# level within 0.5%); if the driver refuses the attribute with a cooperative launch, every
# case fails at launch with a typed error naming cuLaunchKernelEx.
# Carry: .carry/gpu-check built from main at or after this script's commit. ~260 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run187.log; BUDGET=${BUDGET:-320}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_PDL"
cases="=paper-t128-e8,=paper-t128-e16,=paper-t128-e32,=paper-t128-e128,=paper-t4096-e8,=paper-t16384-e8,=preset qwen3-30b-a3b"
ph base 50 .carry/gpu-check --only "$cases"
ph pdl 50 $x .carry/gpu-check --only "$cases"
ph pdl2 40 $x .carry/gpu-check --only "$cases"
ph base2 40 .carry/gpu-check --only "$cases"
ph checks_pdl 60 $x .carry/gpu-check --quick --only "device-resident,forced timeout,virtual P=2"
L="base pdl pdl2 base2"
for f in $L; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^\[FAIL\]" $w/$f.log | cut -c1-300; grep -hE "^(paper|preset)" $w/$f.log; }
done
ab_lines base pdl | grep -o "^\[[a-zA-Z]*\] [a-z0-9 =-]*\|output digest [0-9a-f]*" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'
echo "== checks_pdl"; [ -f $w/checks_pdl.log ] && grep -E "^\[FAIL|passed|failed" $w/checks_pdl.log | cut -c1-300
cat $w/summary.txt
