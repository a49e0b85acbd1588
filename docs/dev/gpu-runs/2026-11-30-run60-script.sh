#!/usr/bin/env bash
# run 60: batched publish (branch batched-publish, .carry/b) against main (.carry/m), the paper
# layer at T128 E8/E32, T4096 E8, T16384 E8 alternated twice (gpu-check: verified, traced, back
# to back); --quick with b; then gpt-oss-20b/120b (column groups of 17 on main) against PyTorch.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-560}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
for r in 1 2; do for side in b m; do
  ph check-$side-$r 60 .carry/$side/gpu-check --only paper-t16384-e8,paper-t4096-e8,paper-t128-e8,paper-t128-e32
done; done
ph quick 170 .carry/b/gpu-check --quick --json $w/quick.jsonl
ph bench 60 .carry/m/flashdmoe bench --preset gpt-oss-20b gpt-oss-120b --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/bench
tar czf $OUT/run60.tgz -C $w .
for f in $w/check-*.log; do echo "== $(basename $f)"; grep -h -E "^\[(ok|FAIL)" $f | sed -E 's/^\[([a-zA-Z]+)\] ([^ ]+( dropless)?) .*(kernel [0-9]+us).*gemm0 n=[0-9]+ (mean [0-9.]+us).*gemm1 n=[0-9]+ (mean [0-9.]+us).*combine n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*back to back ([0-9.]+ ms).*/\1 \2 \4 g0 \5 g1 \6 comb \7 b2b \8/' | cut -c1-160; done
grep -h '^\[FAIL\]' $w/quick.log | cut -c1-300; grep -c '^\[ok\]' $w/quick.log | sed 's/^/quick ok: /'
grep -vE ": (build|first forward|check again)" $w/bench.log | grep -E "flashdmoe-cuda|graph|^[a-z]" | cut -c1-140 | tail -8
cat $w/summary.txt
