#!/usr/bin/env bash
# run 114 (session 21): the first wave's second form (the wave's descriptors and mailbox slots
# written and released before the rest of the in-place tasks); its --quick, then fw / main on
# the paper layer and two small-expert presets, verified, digests compared.
# Carry: .carry/gpu-check = main 2433cac; .carry/fw/gpu-check = the change.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=420; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t16384-e8,preset qwen3-30b-a3b,preset olmoe-1b-7b"
ph fw-quick 170 .carry/fw/gpu-check --quick --json $w/fw-quick.jsonl
ph fw 70 .carry/fw/gpu-check --only "$cases" --json $w/fw.jsonl
ph main 70 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fw2 70 .carry/fw/gpu-check --only "$cases" --json $w/fw2.jsonl
tar czf $OUT/run114.tgz -C $w .
for b in fw main fw2; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|placed [0-9]+us|dispatched [0-9]+us|first wave [0-9]+ tasks|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
echo "fw-quick: $(grep -c '^\[ok\]' $w/fw-quick.log) ok, $(grep -c '^\[FAIL\]' $w/fw-quick.log) FAIL"; grep '^\[FAIL\]' $w/fw-quick.log | cut -c1-600
cat $w/summary.txt
