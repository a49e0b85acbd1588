#!/usr/bin/env bash
# run 89 (session 15): run 88 left gpt-oss-20b +1 to +3.5% with the idle warpgroup's skip
# (1.881 / 1.920 ms base against 1.947 / 1.937 new) inside its base's own spread; three more
# alternations, each side traced once, and Qwen2-57B-A14B once a side.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-230}; source scripts/gpu-phases.sh
for r in 1 2 3; do for side in base new; do
  d=.carry; [ $side = base ] && d=.carry/base
  tr=(); [ $r = 1 ] && tr=(--trace $w/trace-oss-$side.json)
  ph oss-$side-$r 25 $d/flashdmoe run --preset gpt-oss-20b --backend cuda --back-to-back 40 "${tr[@]}"
done; done
for side in base new; do d=.carry; [ $side = base ] && d=.carry/base
  ph qwen2-$side 50 $d/flashdmoe run --preset qwen2-57b-a14b --backend cuda --back-to-back 20; done
gzip -f $w/*.json 2>/dev/null
tar czf $OUT/run89.tgz -C $w .
for f in $w/oss-*.log $w/qwen2-*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E '^task times' $w/oss-*-1.log | cut -c1-250
cat $w/summary.txt
