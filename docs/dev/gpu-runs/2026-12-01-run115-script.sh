#!/usr/bin/env bash
# run 115 (session 21): the first wave (second form) on the large presets (main ran in run 116, on the same warm machine)
# Carry: .carry/gpu-check = main 2433cac; .carry/fw/gpu-check = the first wave (see run 112's
# script; runs 112-113 ran its first form, every in-place task written before the wave was
# released; runs 114-116 the second, the wave's tasks written and released first).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=330; source scripts/gpu-phases.sh
cases="preset deepseek-v3,preset qwen2-57b-a14b,preset mixtral-8x7b,preset gpt-oss-20b"
ph fw 150 .carry/fw/gpu-check --only "$cases" --json $w/fw.jsonl
ph main 150 .carry/gpu-check --only "$cases" --json $w/main.jsonl
tar czf $OUT/run.tgz -C $w .
for b in fw main fw2; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|placed [0-9]+us|dispatched [0-9]+us|first wave [0-9]+ tasks|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
cat $w/summary.txt
