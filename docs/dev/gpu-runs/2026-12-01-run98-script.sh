#!/usr/bin/env bash
# run 98 (nvidia-h200): every --quick check with the a2-positions build (b743c78 + f9e5b9f, the fix eb0d17c cherry-picked,
# .carry/pos; its positions are checked against the oracle through every routed case) before it
# merges; then the paper layer at T 16384 with main eb0d17c (.carry), verified, for issue 13's table.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
ph quick-pos 150 .carry/pos/gpu-check --quick --json $w/quick-pos.jsonl
ph t16384 40 .carry/gpu-check --only "paper-t16384" --json $w/t16384.jsonl
tar czf $OUT/run98.tgz -C $w .
echo "quick-pos: $(grep -c '^\[ok\]' $w/quick-pos.log) ok, $(grep -c '^\[FAIL\]' $w/quick-pos.log) FAIL"; grep '^\[FAIL\]' $w/quick-pos.log | cut -c1-400
grep -E "^paper" $w/t16384.log | cut -c1-100
cat $w/summary.txt
