#!/usr/bin/env bash
# run 99 (nvidia-h200): A2's tokens half by redux.sync and a token's logits loaded a token ahead
# (main e7409f4, .carry) against 75f28fd (.carry/base: A2 a warp a token, positions by every
# warp), alternated, each case verified against the oracle: the paper layer at T128 / T4096
# E128 and T16384 E8, Qwen3 / OLMoE / Qwen1.5-MoE (the shared gate's dot) and DeepSeek-V3's
# routed part; their phase A marks ("tokens" - "routed" is the changed half). Then every
# --quick check with e7409f4 (every router form against the oracle).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-480}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e128,paper-t4096-e128,paper-t16384-e8,preset qwen3-30b-a3b,preset olmoe-1b-7b,preset qwen1.5-moe-a2.7b"
ph main 60 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph base 60 .carry/base/gpu-check --only "$cases" --json $w/base.jsonl
ph main2 60 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph ds-main 80 .carry/gpu-check --only "preset deepseek-v3 routed part" --json $w/ds-main.jsonl
ph ds-base 80 .carry/base/gpu-check --only "preset deepseek-v3 routed part" --json $w/ds-base.jsonl
ph quick 150 .carry/gpu-check --quick --json $w/quick.jsonl
tar czf $OUT/run99.tgz -C $w .
for f in $w/main.log $w/base.log $w/main2.log $w/ds-main.log $w/ds-base.log; do echo "== $(basename $f .log)"; grep -E "^(preset|paper)" $f | grep -v "dropless\|tf32" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $f | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|phase A: [^;]*" | paste - - - | sed 's/last block started [0-9]*us, reset [0-9]*us, //' | cut -c1-200; done
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-400
cat $w/summary.txt
