#!/usr/bin/env bash
# run 168 (session 32): how near its L2's and its DRAM's peak rates DeepSeek-V3's forward runs
# (ncu's throughput percentages over the whole kernel, one forward of `flashdmoe run`). Runs
# 165-167 left DeepSeek-V3's GEMM0 bound neither by its stages' round trip (a fifth stage
# -2 to -4%) nor by DRAM's access pattern (v44 (g)); run 147 counted 88 GB of L2 traffic in
# ~8.5 ms (~10 TB/s). Question: is the L2 (its slices' bandwidth to the SMs) the ceiling?
# Prediction: L2 throughput >= 80% of its peak sustained rate over the kernel if so (then
# GEMM1 pairs, which halve B's L2 reads, are the lever), DRAM ~65% (3.1 of ~4.8 TB/s).
# Carry: .carry/flashdmoe built from main. ~150 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-175}; source scripts/gpu-phases.sh
# One counter each (run 147's set took one ~80-100 s phase), with their peak-rate roll-ups.
m=lts__t_bytes.sum,lts__t_bytes.sum.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_read.sum.pct_of_peak_sustained_elapsed,gpu__time_duration.sum
cat > $w/ncu-dsv3.sh <<NCU
ncu --clock-control none --replay-mode application -k regex:fdm_moe --launch-skip 1 --launch-count 1 \\
  --metrics $m --csv .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 2
NCU
ph ncu-dsv3 120 bash $w/ncu-dsv3.sh
tar czf $OUT/run168.tgz -C $w .
grep -E "lts__|dram__|gpu__time|verif|rror|mismatch|PASS" $w/ncu-dsv3.log | cut -c1-300
cat $w/summary.txt
