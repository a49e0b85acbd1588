#!/usr/bin/env bash
# run 61: (1) ncu source counters (warp stalls by SASS line) on the tile bench's steady state,
# plain 128x256 and SwiGLU 128x128 gathered, one timed launch each, clocks untouched; (2) main's
# DeepSeek-V3 (routed and whole) and Kimi-K2 routed (column groups of 3) against PyTorch.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-560}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
ncu --version > $w/ncu-version.txt 2>&1
i=0
for cfg in "bf16 128x256 s3 e512 m16384 n8192 k4096" "bf16 128x128 gather s4 m16384 n4096 k4096"; do
  i=$((i+1))
  ph ncu-$i 60 ncu --clock-control none --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SourceCounters --import-source no -f -o $w/tile-$i .carry/m/tile-bench --only "$cfg" --iters 1
  ncu -i $w/tile-$i.ncu-rep --page source --csv --print-source sass > $w/tile-$i-sass.csv 2> $w/tile-$i-sass.err
  ncu -i $w/tile-$i.ncu-rep --page details > $w/tile-$i-details.txt 2>&1
  gzip -f $w/tile-$i-sass.csv
done
ph bench 200 .carry/m/flashdmoe bench --preset deepseek-v3-routed kimi-k2-routed deepseek-v3 --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $w/bench
rm -f $w/*.ncu-rep
tar czf $OUT/run61.tgz -C $w .
ls -la $w; head -c 600 $w/tile-1-sass.err
grep -E "Duration|Throughput|Warp Cycles|Issued|Stall" $w/tile-1-details.txt | head -20
grep -vE ": (build|first forward|check again)" $w/bench.log | grep -E "flashdmoe-cuda|graph|^[a-z]" | cut -c1-140 | tail -12
cat $w/summary.txt
