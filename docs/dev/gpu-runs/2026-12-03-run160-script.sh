#!/usr/bin/env bash
# run 160 (session 30): where DeepSeek-V3's DRAM bytes go now that its GEMM0 tasks pair, and
# whether L2 cache policies move them. Run 147 (unpaired): 30.0 GB read a forward for 22.6 GB
# of weights, 3.5 TB/s. Run 159 showed a <= half row tile is bound by the weight bytes it
# receives, not by its warpgroups' issue. Experiments (kernels.rs EXPERIMENTS):
# FDM_L2_WEIGHTS_FIRST (B tiles loaded evict_first: the streamed weights leave L2 before the A
# rows an expert's column tiles read again) and FDM_L2_ROWS_LAST (A rows loaded evict_last).
# Prediction: paired default 26-28 GB read; WEIGHTS_FIRST -0.5 to +1.5 GB (weights shared
# between row tiles through L2 miss more, A rows miss less), the forward within +-3%;
# ROWS_LAST -0 to -1.5 GB, the forward 0 to -2%.
# Carry: .carry/flashdmoe, .carry/gpu-check (release builds, stripped). ~540 s.
# Ran on a working tree with the L2 policies applied (`git apply docs/dev/gpu-runs/2026-12-03-run160-l2-hints.patch`,
# on main 9aab541; the define then went through FLASHDMOE_EXTRA_DEFINES); removed
# after the run (perf-notes v44): on main as it stands the defines change nothing.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-545}; source scripts/gpu-phases.sh
m=dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum
cat > $w/ncu-dsv3.sh <<NCU
ncu --clock-control none --replay-mode application -k regex:fdm_moe --launch-skip 1 --launch-count 1 \\
  --metrics $m --csv .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 2
NCU
WF="env FLASHDMOE_EXTRA_DEFINES=FDM_L2_WEIGHTS_FIRST"
RL="env FLASHDMOE_EXTRA_DEFINES=FDM_L2_ROWS_LAST"
BOTH="env FLASHDMOE_EXTRA_DEFINES=FDM_L2_WEIGHTS_FIRST,FDM_L2_ROWS_LAST"
ph ncu-base 80 bash $w/ncu-dsv3.sh
ph ncu-rl 80 $RL bash $w/ncu-dsv3.sh
ph ncu-wf 80 $WF bash $w/ncu-dsv3.sh
ph gc-base 80 .carry/gpu-check --only "=preset deepseek-v3"
ph gc-rl 80 $RL .carry/gpu-check --only "=preset deepseek-v3"
ph gc-wf 80 $WF .carry/gpu-check --only "=preset deepseek-v3"
ph ncu-both 80 $BOTH bash $w/ncu-dsv3.sh
tar czf $OUT/run160.tgz -C $w .
for b in ncu-base ncu-rl ncu-wf ncu-both; do
  [ -f $w/$b.log ] || continue
  echo "== $b"; grep -E "dram__|lts__t_bytes|gpu__time|verif|error|ERROR|mismatch" $w/$b.log | grep -o '"[a-z_]*__[a-z_.]*","[a-z]*","[0-9,]*"\|.*verif.*\|.*rror.*' | cut -c1-200
done
ab_lines gc-base gc-rl gc-wf
cat $w/summary.txt
