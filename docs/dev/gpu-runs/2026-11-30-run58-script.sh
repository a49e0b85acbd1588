#!/usr/bin/env bash
# run 58: the real-model grid at T4096 against PyTorch on main (.carry/m/: weights in GEMM1, the
# 128-flag window) with the harness's device-resident timing (both sides back to back: ours
# device-resident forwards, PyTorch graph replays); then a traced Mixtral forward as time allows.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((545 - ($(date +%s) - start))); }
timeout 460 .carry/m/flashdmoe bench --grid models-t4096 --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/models > $w/models.log 2>&1; echo "models rc=$? left $(left)" >> $w/summary.txt
[ "$(left)" -gt 35 ] && { timeout $(( $(left) - 8 )) .carry/m/flashdmoe run --preset mixtral-8x7b --world 1 --dropless --backend cuda --trace $w/mixtral.json > $w/mixtral.log 2>&1; echo "mixtral trace rc=$? left $(left)" >> $w/summary.txt; }
gzip -f $w/mixtral.json 2>/dev/null
tar czf $OUT/run58.tgz -C $w .
grep -vE ": (build|first forward|check again)" $w/models.log | grep -E "flashdmoe-cuda|graph|^[a-z]" | cut -c1-140 | tail -30
grep -h -E "busy|PASS|FAIL|error" $w/mixtral.log | cut -c1-250
cat $w/summary.txt
