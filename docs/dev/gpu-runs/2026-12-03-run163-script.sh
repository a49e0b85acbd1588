#!/usr/bin/env bash
# run 163 (session 31): DeepSeek-V3's DRAM and L2 bytes with the producer's L2 prefetch one
# k-tile past its stages (FDM_B_PREFETCH_AHEAD=5) against the default, as run 160 measured
# them. Run 162: D = 5 costs +19% (GEMM0 main loops 79 -> 97-102 µs) though it holds only one
# more k-tile in flight an SM (~6 MB over the GPU, 1/8 of L2, ~0.75 µs ahead of its use).
# Question: do the prefetched boxes leave L2 before their load (then DRAM bytes grow, as
# evict_first's +7 GB in run 160) or is the cost in the request path (bytes level)?
# Prediction: DRAM read within +-1 GB of the default's 26.7 GB; L2 bytes up by at most the
# prefetched boxes' 15-23 GB, the kernel +15-20% under ncu as under gpu-check.
# Carry: .carry/flashdmoe built at 1af205a (the experiment's code, 2026-12-03-run161-experiments.patch). ~260 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
m=dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum
cat > $w/ncu-dsv3.sh <<NCU
ncu --clock-control none --replay-mode application -k regex:fdm_moe --launch-skip 1 --launch-count 1 \\
  --metrics $m --csv .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 2
NCU
ph ncu-base 100 bash $w/ncu-dsv3.sh
ph ncu-p5 100 env FLASHDMOE_EXTRA_DEFINES=FDM_B_PREFETCH_AHEAD=5 bash $w/ncu-dsv3.sh
tar czf $OUT/run163.tgz -C $w .
for b in ncu-base ncu-p5; do
  [ -f $w/$b.log ] || continue
  echo "== $b"; grep -E "dram__|lts__t_bytes|gpu__time|verif|error|ERROR|mismatch" $w/$b.log | grep -o '"[a-z_]*__[a-z_.]*","[a-z]*","[0-9,]*"\|.*verif.*\|.*rror.*' | cut -c1-200
done
cat $w/summary.txt
