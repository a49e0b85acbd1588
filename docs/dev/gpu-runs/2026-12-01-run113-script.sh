#!/usr/bin/env bash
# run 113 (session 21): the first wave's first form against main, interleaved (run 112's A/B was cut by its budget)
# Carry: .carry/gpu-check = main 2433cac; .carry/fw/gpu-check = the first wave (see run 112's
# script; runs 112-113 ran its first form, every in-place task written before the wave was
# released; runs 114-116 the second, the wave's tasks written and released first).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=330; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t128-e32,paper-t16384-e8,preset qwen3-30b-a3b"
ph fw 100 .carry/fw/gpu-check --only "$cases" --json $w/fw.jsonl
ph main 100 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fw2 100 .carry/fw/gpu-check --only "$cases" --json $w/fw2.jsonl
tar czf $OUT/run.tgz -C $w .
for b in fw main fw2; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|placed [0-9]+us|dispatched [0-9]+us|first wave [0-9]+ tasks|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
cat $w/summary.txt
