#!/usr/bin/env bash
# run 201 (session 39): where A2's token half waits. Run 200 found it level whether a warp or
# an 8-lane group routes a token (T16384 E128 28-29 µs both; Qwen3 / OLMoE 3-5 µs slower with
# groups): not the warp's issue, as v45 (c) had inferred, nor (v42 (a), v45 (c)) the chain's or
# the logits' latency. ncu's source counters (warp stall samples by SASS address, clocks
# untouched) on one T16384 E128 forward with the group form (main at a1b8498), and the JIT cache
# (the device NVRTC's cubin, for its line table: nvdisasm --print-line-info here) to map the
# addresses to topk.cuh's lines. The forward is checked against the oracle by gpu-check as
# usual. Carry: .carry/gpu-check (a1b8498). ~250 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run201.log; BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
ncu --version > $w/ncu-version.txt 2>&1
ph ncu 300 ncu --clock-control none -k regex:fdm_moe --launch-skip 2 --launch-count 1 --section SourceCounters --section WarpStateStats --import-source no -f -o $w/moe .carry/gpu-check --only "=paper-t16384-e128" --iters 3
if [ -f $w/moe.ncu-rep ]; then
  ncu -i $w/moe.ncu-rep --page source --csv --print-source sass > $w/moe-sass.csv 2> $w/moe-sass.err
  ncu -i $w/moe.ncu-rep --page details > $OUT/moe-details.txt 2>&1
  gzip -c $w/moe-sass.csv > $OUT/moe-sass.csv.gz
fi
tar czf $OUT/jit-cache.tgz -C $FLASHDMOE_CACHE_DIR . 2>/dev/null
ls -la $w $OUT; head -c 400 $w/moe-sass.err; head -3 $w/moe-sass.csv | cut -c1-400
grep -E "Duration|Warp Cycles Per|Issued Ipc|No Eligible|Active Warps" $OUT/moe-details.txt | head
cat $w/summary.txt
