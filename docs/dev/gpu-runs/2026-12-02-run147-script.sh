#!/usr/bin/env bash
# run 147 (written in session 27, NOT YET RUN): the size of the paired-task prize
# (docs/dev/paired-tasks.md) in DRAM bytes: ncu's dram__bytes_read.sum over one forward of
# DeepSeek-V3 (the whole layer, T 4096), paper T16384 E128 and E8, beside each layer's weight
# bytes.
# Why: v29 (d) inferred from task times that DeepSeek-V3's GEMM0 reads ~25 GB of weights for
# 15 GB (GEMM1 11.4 for 7.5): a pair reads a column tile's weights once for two row tiles.
# Measured bytes say how much a pair can save before it is built.
# Prediction: DeepSeek-V3 36-40 GB read a forward (22.6 GB of weights, ~1.6x, plus ~1 GB of
# activations); T16384 E128 2.0-2.6 GB (2.1 GB of weights, an expert's two row tiles mostly
# sharing B through L2) plus ~0.6 GB of activations; T16384 E8 ~0.7 GB (64 MiB of weights from
# L2, X and the intermediate rows from HBM).
# Carry: .carry/flashdmoe (`cargo build --release --bin flashdmoe`, stripped). ~240 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-280}; source scripts/gpu-phases.sh
m=dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum
for p in paper-t16384-e8 paper-t16384-e128 deepseek-v3; do
  ph "ncu-$p" 60 ncu --clock-control none --replay-mode application -k regex:fdm_moe --launch-skip 1 --launch-count 1 \
    --metrics $m --csv .carry/flashdmoe run --preset $p --backend cuda --back-to-back 2
done
tar czf $OUT/run147.tgz -C $w .
for p in paper-t16384-e8 paper-t16384-e128 deepseek-v3; do
  echo "== $p"; grep -E "dram__|lts__t_bytes|gpu__time|verify|error|ERROR" $w/ncu-$p.log | cut -c1-200
done
cat $w/summary.txt
