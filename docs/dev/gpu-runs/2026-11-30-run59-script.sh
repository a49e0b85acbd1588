#!/usr/bin/env bash
# run 59: GEMM0 column groups (73845b3). Mixtral and Qwen2-57B (groups of 6), Qwen3 (no groups):
# main (.carry/m) against main before the groups (.carry/base, 795da9d), alternated, back to back
# and traced (each verified against the oracle); then --quick with main (the two column-group
# cases); then Mixtral and Qwen2-57B against PyTorch (flashdmoe bench, both back to back).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-560}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
for r in 1 2; do for side in m base; do
  ph mix-$side-$r 30 .carry/$side/flashdmoe run --preset mixtral-8x7b --world 1 --dropless --backend cuda --back-to-back 20 --trace $w/mix-$side-$r.json
done; done
for side in m base; do
  ph qwen2-$side 40 .carry/$side/flashdmoe run --preset qwen2-57b-a14b --world 1 --dropless --backend cuda --back-to-back 20 --trace $w/qwen2-$side.json
  ph qwen3-$side 30 .carry/$side/flashdmoe run --preset qwen3-30b-a3b --world 1 --dropless --backend cuda --back-to-back 20 --trace $w/qwen3-$side.json
done
ph quick 200 .carry/m/gpu-check --quick --json $w/quick.jsonl
ph bench 90 .carry/m/flashdmoe bench --preset mixtral-8x7b qwen2-57b-a14b --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/bench
gzip -f $w/*.json 2>/dev/null
tar czf $OUT/run59.tgz -C $w .
for f in $w/mix-*.log $w/qwen*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(kernel: [^ ]+|verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; grep -h '^task times' $f | cut -c1-200; done
grep -h '^\[FAIL\]' $w/quick.log | cut -c1-300; grep -c '^\[ok\]' $w/quick.log | sed 's/^/quick ok: /'
grep -vE ": (build|first forward|check again)" $w/bench.log | grep -E "flashdmoe-cuda|graph|^[a-z]" | cut -c1-140 | tail -12
cat $w/summary.txt
