#!/usr/bin/env bash
# run 93 (nvidia-h200, main af6e87a): where A2 (the per-token router math) and the combine spend
# their time on the real models: (1) gpu-check's timed preset cases (verified against the oracle)
# for their phase A marks at E 128 / 64 / 256; (2) ncu on one Qwen3-30B-A3B forward with source
# counters (warp stall samples per source line: route.cuh, combine.cuh).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-400}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
ph presets 200 .carry/gpu-check --only "preset qwen3-30b-a3b,preset olmoe-1b-7b,preset deepseek-v3 routed part" --json $w/presets.jsonl
ph ncu-qwen3 150 ncu --clock-control none -k regex:fdm_moe --launch-skip 1 --launch-count 1 --section SpeedOfLight \
  --section WarpStateStats --section SourceCounters --import-source yes \
  -f -o $w/qwen3 .carry/flashdmoe run --preset qwen3-30b-a3b --backend cuda --back-to-back 2
if [ -f $w/qwen3.ncu-rep ]; then
  ncu -i $w/qwen3.ncu-rep --page source --csv --print-source cuda,sass 2> $w/qwen3-src.err | gzip > $w/qwen3-cuda-sass.csv.gz
  ncu -i $w/qwen3.ncu-rep --page source --csv --print-source sass 2>> $w/qwen3-src.err | gzip > $w/qwen3-sass.csv.gz
  ncu -i $w/qwen3.ncu-rep --page details > $w/qwen3-details.txt 2>&1
  rm -f $w/qwen3.ncu-rep
fi
tar czf $OUT/run93.tgz -C $w .
grep -E "^\[(ok|FAIL)\]" $w/presets.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|kernel [0-9]+us, first task at [0-9]+us|phase A: [^;]*" | paste - - -
grep -E "^preset" $w/presets.log | cut -c1-100
grep -E "Duration|Compute \(SM\) Throughput|Warp Cycles Per Issued" $w/qwen3-details.txt | head -5
ls -la $w; cat $w/qwen3-src.err | head -5; cat $w/summary.txt
