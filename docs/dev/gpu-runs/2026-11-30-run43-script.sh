#!/usr/bin/env bash
# run 43: the real-model grid at T4096 against PyTorch on the v18 kernel (issue 16 item 6).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d)
t0=$(date +%s)
timeout 440 .carry/flashdmoe bench --grid models-t4096 --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/models > $w/models.log 2>&1; echo "models rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
tar czf $OUT/run43.tgz -C $w .
grep -vE ": (build|first forward|check again)" $w/models.log | grep -E "flashdmoe-cuda|graph|^[a-z]" | cut -c1-140 | tail -40
cat $w/summary.txt
