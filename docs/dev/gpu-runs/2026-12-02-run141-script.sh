#!/usr/bin/env bash
# run 141 (session 27): run 139's 2-CTA cluster forms again after the remote arrive lost its
# `.release.cluster` (hopper.cuh mbar_arrive_cluster): run 139's SASS put MEMBAR.ALL.GPU before
# every consumer warp's remote release, each k-step; now none in the loop (checked with nvdisasm).
# Prediction: c2 with A by TMA on 4 stages +0 to +6% over the tile alone short (670.7 TFLOP/s
# in run 139), sustained +3 to +8% (664.2), its clock no longer above the alone form's.
# Carry: .carry/tile-bench. ~90 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-150}; source scripts/gpu-phases.sh
clocks_start
mph short 60 timeout 90 .carry/tile-bench --iters 30 --only "n8192 k4096"
for c in "128x256 tma-a s4 m16384" "128x256 tma-a s4 c2" "128x256 tma-a s3 e512 m16384" "128x256 tma-a s3 e512 c2"; do
  l=$(echo "$c" | tr ' ' '_'); mph "sus_$l" 20 timeout 40 .carry/tile-bench --iters 1000 --only "$c"
done
clocks_stop > $w/clocks.txt
tar czf $OUT/run141.tgz -C $w .
cat $w/clocks.txt
for f in $w/short.log $w/sus_*.log; do echo "== $(basename $f)"; grep -hE "^\||failed|FAIL|error" $f | grep -v -- "---\|config" | cut -c1-130; done
cat $w/summary.txt
