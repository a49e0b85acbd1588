#!/usr/bin/env bash
# run 95 (nvidia-h200): A2 by warps (.carry/a2: a warp a token over every block, then the
# chunks' positions; perf-notes v30 (e)) against main 51efa30 (.carry/act): the paper layer at
# E 128 and the E 128 / 64 presets, timed and verified against the oracle, their phase A marks;
# then every --quick check with the new build (every router form: softmax, sigmoid, top-k
# softmax, groups, biases, shared experts, routing given, virtual ranks).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-330}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e128,paper-t4096-e128,preset qwen3-30b-a3b,preset olmoe-1b-7b"
ph a2 45 .carry/a2/gpu-check --only "$cases" --json $w/a2.jsonl
ph main 45 .carry/act/gpu-check --only "$cases" --json $w/main.jsonl
ph quick 150 .carry/a2/gpu-check --quick --json $w/quick.jsonl
tar czf $OUT/run95.tgz -C $w .
for f in $w/a2.log $w/main.log; do echo "== $(basename $f .log)"; grep -E "^(preset|paper)" $f | grep -v "dropless\|tf32" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $f | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|phase A: [^;]*" | paste - - - | cut -c1-230; done
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-400
cat $w/summary.txt
