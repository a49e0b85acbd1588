#!/usr/bin/env bash
# run 65 (nvidia-h200-x2): A4's register copies (d, branch dispatch-loads) against the same plus
# one fence a batch of 8 items (e, branch dispatch-loads-fences): P = 2 T8192/GPU E32 alternated
# twice (back to back, traced, verified); e dropless.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d)
for r in 1 2; do for side in e d; do
  timeout 40 .carry/$side/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --back-to-back 50 --trace $w/p2-$side-$r.json > $w/p2-$side-$r.log 2>&1; echo "p2-$side-$r rc=$?"
done; done
timeout 40 .carry/e/flashdmoe run --preset paper-t8192-e32 --dropless --world 2 --backend cuda --back-to-back 50 > $w/p2-e-dropless.log 2>&1
gzip -f $w/*.json; tar czf $OUT/run65.tgz -C $w .
for f in $w/p*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
