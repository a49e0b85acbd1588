#!/usr/bin/env bash
# run 116 (session 21): main on two of run 115's presets (the same warm machine as run 115; the fw phase after it was cut by the budget)
# Carry: .carry/gpu-check = main 2433cac; .carry/fw/gpu-check = the first wave (see run 112's
# script; runs 112-113 ran its first form, every in-place task written before the wave was
# released; runs 114-116 the second, the wave's tasks written and released first).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=290; source scripts/gpu-phases.sh
cases="preset deepseek-v3,preset gpt-oss-20b"
ph main 120 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fw 120 .carry/fw/gpu-check --only "$cases" --json $w/fw.jsonl
tar czf $OUT/run.tgz -C $w .
for b in fw main fw2; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|placed [0-9]+us|dispatched [0-9]+us|first wave [0-9]+ tasks|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
cat $w/summary.txt
