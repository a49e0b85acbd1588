#!/usr/bin/env bash
# run 100 (nvidia-h200): A3's loads (main c863b0e with cef1086, .carry) against e7409f4
# (.carry/base), alternated twice, each case verified against the oracle (placement included):
# the paper layer at T4096 E128 and T16384 E8, Qwen3 and OLMoE; "placed" - "top-k" is the
# changed step. Then every --quick check with main.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-450}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t16384-e8,paper-t4096-e128,preset qwen3-30b-a3b,preset olmoe-1b-7b"
ph main 45 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph base 45 .carry/base/gpu-check --only "$cases" --json $w/base.jsonl
ph main2 45 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph base2 45 .carry/base/gpu-check --only "$cases" --json $w/base2.jsonl
ph quick 170 .carry/gpu-check --quick --json $w/quick.jsonl
tar czf $OUT/run100.tgz -C $w .
for f in $w/main.log $w/base.log $w/main2.log $w/base2.log; do echo "== $(basename $f .log)"; grep -E "^(preset|paper)" $f | grep -v "dropless\|tf32" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $f | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|phase A: [^;]*" | paste - - - | sed 's/last block started [0-9]*us, reset [0-9]*us, //' | cut -c1-220; done
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-400
cat $w/summary.txt
