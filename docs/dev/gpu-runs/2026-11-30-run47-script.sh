#!/usr/bin/env bash
# run 47: the epilogue's staging by stmatrix (tile_wgmma.cuh stage_chunk) against main 1d840ec
# (.carry/base; tile bench: branch tma-rows' build, the same engine before the change):
# tile bench steady state and MoE-like shapes alternated; paper T16384/T4096 E8 (gpu-check:
# verified, traced, back to back) alternated; real models back to back; --quick with the new build.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((560 - ($(date +%s) - start))); }
for round in 1 2; do
  for side in new base; do
    tb=.carry/tile-bench; [ $side = base ] && tb=.carry/tr/tile-bench
    for t in "s3 e512 m16384 n8192 k4096 plain" "128x256 s3 e512 m16384 n2048" "128x128 gather s4 m8187"; do
      timeout 60 $tb --only "$t" --iters 20 2>&1 | grep -E '^ok|^FAIL' | sed "s/^/$side /" >> $w/tile.log
    done
  done
done
echo "tiles left $(left)" >> $w/summary.txt
for round in 1 2; do
  for side in new base; do
    d=.carry; [ $side = base ] && d=.carry/base
    timeout 100 $d/gpu-check --only paper-t16384-e8,paper-t4096-e8 > $w/check-$side-$round.log 2>&1; echo "check $side $round rc=$? left $(left)" >> $w/summary.txt
  done
done
for p in qwen3-30b-a3b mixtral-8x7b; do
  for side in new base; do
    d=.carry; [ $side = base ] && d=.carry/base
    [ "$(left)" -lt 150 ] && break
    timeout 60 $d/flashdmoe run --preset $p --world 1 --dropless --backend cuda --back-to-back 30 > $w/$p-$side.log 2>&1; echo "$p $side rc=$? left $(left)" >> $w/summary.txt
  done
done
[ "$(left)" -gt 100 ] && { timeout $(( $(left) - 10 )) .carry/gpu-check --quick > $w/quick.log 2>&1; echo "quick rc=$? left $(left)" >> $w/summary.txt; }
tar czf $OUT/run47.tgz -C $w .
cut -c1-150 $w/tile.log
for f in $w/check-*.log; do echo "== $(basename $f)"; grep -h -E "^\[(ok|FAIL)" $f | sed -E 's/.*\] (PASS|FAIL).*(kernel [0-9]+us).*(busy [0-9]+%).*gemm0 n=[0-9]+ (mean [0-9.]+us).*gemm1 n=[0-9]+ (mean [0-9.]+us).*combine n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*back to back ([0-9.]+ ms).*/\1 \2 \3 g0 \4 g1 \5 comb \6 b2b \7/' | cut -c1-200; done
for f in $w/*-new.log $w/*-base.log; do echo "$(basename $f): $(grep -h -o 'busy [0-9.]*% of the [0-9.]* ms task phase' $f) $(grep -h -o 'back to back: [0-9.]* ms' $f) $(grep -h -o 'verify: [A-Z]*' $f)"; done
grep -E "passed|failed" $w/quick.log | tail -2; grep -h "^\[FAIL\]" $w/*.log | cut -c1-400
cat $w/summary.txt
