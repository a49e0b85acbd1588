#!/usr/bin/env bash
# run 52: dual-B tiles as one m64n256 wgmma (branch dual-n256, .carry/) against main 647fb06
# (.carry/base/): tile bench SwiGLU (MoE-like and steady state) and the plain steady state
# alternated; gated real models back to back alternated (verified against the oracle);
# gpu-check --quick with the new build.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((570 - ($(date +%s) - start))); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
for round in 1 2; do
  for side in new base; do
    d=.carry; [ $side = base ] && d=.carry/base
    for t in "m16384 n4096 k4096 swiglu" "128x128 gather s4 m8187" "s3 e512 m16384 n8192 k4096 plain" "64x128 s4 m300"; do
      timeout 60 $d/tile-bench --only "$t" --iters 20 2>&1 | grep -E '^ok|^FAIL|rror|panick' | sed "s/^/$side /" >> $w/tile.log
    done
  done
done
echo "tiles left $(left)" >> $w/summary.txt
for round in 1 2; do
  for side in new base; do
    d=.carry; [ $side = base ] && d=.carry/base
    timeout 90 $d/gpu-check --only paper-t128-e8,paper-t128-e32,paper-t128-e128 > $w/check-$side-$round.log 2>&1; echo "check $side $round rc=$? left $(left)" >> $w/summary.txt
  done
done
for round in 1 2 3; do
  ps="qwen3-30b-a3b mixtral-8x7b"; [ $round = 3 ] && ps=deepseek-v3
  for p in $ps; do
    for side in new base; do
      d=.carry; [ $side = base ] && d=.carry/base
      [ "$(left)" -lt 170 ] && break
      timeout 80 $d/flashdmoe run --preset $p --world 1 --dropless --backend cuda --back-to-back 20 > $w/$p-$side-$round.log 2>&1; echo "$p $side $round rc=$? left $(left)" >> $w/summary.txt
    done
  done
done
[ "$(left)" -gt 60 ] && { timeout $(( $(left) - 10 )) .carry/gpu-check --quick > $w/quick.log 2>&1; echo "quick rc=$? left $(left)" >> $w/summary.txt; }
tar czf $OUT/run52.tgz -C $w .
cut -c1-150 $w/tile.log
for f in $w/check-*.log; do echo "== $(basename $f)"; grep -h -E "^\[(ok|FAIL)" $f | sed -E 's/^\[([a-zA-Z]+)\] ([^ ]+).*(kernel [0-9]+us).*gemm0 n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*gemm1 n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*combine n=[0-9]+ (mean [0-9.]+us span [0-9-]+us).*back to back ([0-9.]+ ms).*/\1 \2 \3 g0 \4 g1 \5 comb \6 b2b \7/' | cut -c1-200; done
for f in $w/*-new-*.log $w/*-base-*.log; do echo "$(basename $f): $(grep -h -o 'busy [0-9.]*% of the [0-9.]* ms task phase' $f) $(grep -h -o 'back to back: [0-9.]* ms' $f) $(grep -h -o 'verify: [A-Z]*' $f)"; done
grep -E "passed|failed" $w/quick.log | tail -2; grep -h "^\[FAIL\]" $w/*.log | cut -c1-400
cat $w/summary.txt
