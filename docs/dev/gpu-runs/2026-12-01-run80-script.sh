#!/usr/bin/env bash
# run 80 (nvidia-h200): first GPU run of 256x192 tiles (9bc03d0) in the tile bench against 128x256
# at the same N7680 (and cuBLAS on that shape); then main 4ac2026 (.carry/m) against 880c6dc
# (.carry/b, before the slab refactor and the PendingReturn review) on the paper layer alternated
# twice (the MoE images must not move); then main's gpu-check --quick.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-560}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for f in .carry/cubins/*256x192*.cubin .carry/cubins/*n7680*.cubin; do
  [ -f "$f" ] && printf '%-60s HGMMA %s\n' "$(basename "$f")" "$(cuobjdump --dump-sass "$f" | grep -c HGMMA)" >> $w/sass.txt
done
i=0
for r in 1 2; do
for label in "bf16 256x192 s3 m16384 n7680 k4096 plain" "bf16 128x256 s3 e512 m16384 n7680 k4096 plain" "bf16 256x192 gather s3 m16347 n7680 k4096 bias-relu" "bf16 128x256 s3 e512 m16384 n8192 k4096 plain"; do
  i=$((i+1)); ph tile-$r-$i 30 .carry/tile-bench --only "$label" --iters 20
done; done
ph torchmm 40 python3 bench/baselines/torch_mm.py --shape 16384 7680 4096 --shape 16384 8192 4096
for r in 1 2; do for side in m b; do for preset in paper-t16384-e8 paper-t4096-e32 paper-t128-e8; do
  ph $preset-$side-$r 15 .carry/$side/flashdmoe run --preset $preset --backend cuda --back-to-back 100
done; done; done
ph quick 200 .carry/m/gpu-check --quick
tar czf $OUT/run80.tgz -C $w .
cat $w/sass.txt
grep -h -E '^(ok|FAIL)|TFLOP|wrong|mismatch' $w/tile-*.log | cut -c1-200
grep -h -E 'torch.mm|TFLOP' $w/torchmm.log | cut -c1-200
for f in $w/paper*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E "^\[FAIL|passed" $w/quick.log | cut -c1-150
cat $w/summary.txt | tail -3
