#!/usr/bin/env bash
# run 96 (nvidia-h200): the session-16 queue in one call (docs/dev/gpu-queue.md).
# (1) A2's step 5 on warp shared memory and the "tokens" mark (main 6216851, .carry) against
#     A2 by warps c7064de (.carry/a2) and the a2-positions branch b743c78 (.carry/pos): the
#     paper layer at E 128, Qwen3 / OLMoE / DeepSeek-V3's routed part, each verified against the
#     oracle; their phase A marks. (2) The tile bench's TMA A configurations (K 7168, SwiGLU,
#     each checked against the f64 reference). (3) every --quick check with main's build.
# Carry: .carry/{gpu-check,flashdmoe,tile-bench} built at main, .carry/a2 at c7064de,
# .carry/pos at b743c78.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e128,paper-t4096-e128,preset qwen3-30b-a3b,preset olmoe-1b-7b"
ph main 50 .carry/gpu-check --only "$cases,preset deepseek-v3 routed part" --json $w/main.jsonl
ph pos 50 .carry/pos/gpu-check --only "$cases,preset deepseek-v3 routed part" --json $w/pos.jsonl
ph a2 45 .carry/a2/gpu-check --only "$cases" --json $w/a2.jsonl
ph tile-bench 60 .carry/tile-bench --only "k7168 swiglu" --iters 20
ph quick 150 .carry/gpu-check --quick --json $w/quick.jsonl
tar czf $OUT/run96.tgz -C $w .
for f in $w/main.log $w/pos.log $w/a2.log; do echo "== $(basename $f .log)"; grep -E "^(preset|paper)" $f | grep -v "dropless\|tf32" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $f | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|phase A: [^;]*" | paste - - - | cut -c1-260; done
echo "== tile-bench"; tail -25 $w/tile-bench.log
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-400
cat $w/summary.txt
