#!/usr/bin/env bash
# run 174 (session 33): run 168's question, queued since session 32 -- how near its L2's and
# its DRAM's peak rates DeepSeek-V3's forward runs (ncu's throughput percentages over the whole
# kernel, one forward of `flashdmoe run`) -- now that v46 struck the load-path forms of the
# DRAM-rate lever. Prediction (run 168's): L2 throughput >= 80% of its peak sustained rate if
# the L2 is the ceiling (then GEMM1 pairs, which halve B's L2 reads, are the lever), DRAM ~65%
# (3.1 of ~4.8 TB/s). Then the traces of T128 E8 and T16384 E128 (gpu-check's task marks), the
# two paper layers furthest from issue 13's targets (3.3x the weight floor; 1.41x the dense
# pair), on this build, for the next levers' sizes.
# Carry: .carry/flashdmoe and .carry/gpu-check built from main at this commit. ~190 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-230}; source scripts/gpu-phases.sh
m=lts__t_bytes.sum,lts__t_bytes.sum.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_read.sum.pct_of_peak_sustained_elapsed,gpu__time_duration.sum
cat > $w/ncu-dsv3.sh <<NCU
ncu --clock-control none --replay-mode application -k regex:fdm_moe --launch-skip 1 --launch-count 1 \\
  --metrics $m --csv .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 2
NCU
ph t128 25 .carry/gpu-check --only "=paper-t128-e8"
ph e128 30 .carry/gpu-check --only "=paper-t16384-e128"
ph ncu-dsv3 120 bash $w/ncu-dsv3.sh
tar czf $OUT/run174.tgz -C $w .
grep -E "lts__|dram__|gpu__time|verif|rror|mismatch|PASS" $w/ncu-dsv3.log | cut -c1-300
ab_lines t128 e128
for f in t128 e128; do
  [ -f $w/$f.log ] && { echo "== $f"; grep -h "^paper\|host seconds" $w/$f.log | grep -o "^[a-z].*\|host seconds: .*" | cut -c1-200; }
done
cat $w/summary.txt
