#!/usr/bin/env bash
# run 51: 2-CTA clusters sharing the B tile by TMA multicast in the tile bench (branch cluster)
# against the same engine without clusters, alternated; every config checked; torch.mm same call.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d)
for round in 1 2; do
  for t in "s3 c2 e512 m16384 n8192 k4096" "s3 e512 m16384 n8192 k4096 plain" "s3 c2 e512 m16384 n2048" "128x256 s3 e512 m16384 n2048" "c2 m8187" "c2 m16347"; do
    timeout 40 .carry/cl-tile-bench --only "$t" --iters 20 2>&1 | grep -E '^ok|^FAIL|rror|panick' >> $w/tile.log; echo "rc=$? $t" >> $w/rc.txt
  done
done
python3 bench/baselines/torch_mm.py --shape 16384 8192 4096 >> $w/tile.log 2>&1
cp $w/tile.log $w/rc.txt $OUT/
cut -c1-150 $w/tile.log; cat $w/rc.txt
