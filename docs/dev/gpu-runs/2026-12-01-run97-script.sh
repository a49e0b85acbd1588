#!/usr/bin/env bash
# run 97 (nvidia-h200): run 96's A2 comparison again after eb0d17c (the host read 16 of the 32
# control words back and panicked on the new "tokens" mark): main eb0d17c (.carry) and the
# a2-positions branch with the fix (.carry/pos), alternated, each case verified against the
# oracle: the paper layer at E 128, Qwen3 / OLMoE / DeepSeek-V3's routed part.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e128,paper-t4096-e128,preset qwen3-30b-a3b,preset olmoe-1b-7b"
ph main 110 .carry/gpu-check --only "$cases,preset deepseek-v3 routed part" --json $w/main.jsonl
ph pos 110 .carry/pos/gpu-check --only "$cases,preset deepseek-v3 routed part" --json $w/pos.jsonl
ph main2 45 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph pos2 45 .carry/pos/gpu-check --only "$cases" --json $w/pos2.jsonl
tar czf $OUT/run97.tgz -C $w .
for f in $w/main.log $w/pos.log $w/main2.log $w/pos2.log; do echo "== $(basename $f .log)"; grep -E "^(preset|paper)" $f | grep -v "dropless\|tf32" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $f | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|phase A: [^;]*" | paste - - - | cut -c1-260; done
cat $w/summary.txt
