#!/usr/bin/env bash
# run 94 (nvidia-h200): the SwiGLU epilogue's fast division (.carry/act, perf-notes v30 (d))
# against main af6e87a (.carry), alternated twice on the gated presets gpu-check times
# (Qwen3-30B-A3B, OLMoE, gpt-oss-20b: verified against the oracle, back-to-back medians and
# traces' task means); then the gated small cases with the new build and the tile bench's
# SwiGLU tile (its check against the f64 reference).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-330}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="preset qwen3-30b-a3b,preset olmoe-1b-7b,preset gpt-oss-20b"
for r in 1 2; do for side in base act; do
  d=.carry; [ $side = act ] && d=.carry/act
  ph $side-$r 50 $d/gpu-check --only "$cases" --json $w/$side-$r.jsonl
done; done
ph gated 40 .carry/act/gpu-check --only "SiluGated,column groups,shared experts,gpt-oss,deepseek-v3 router" --json $w/gated.jsonl
ph bench 30 .carry/act/tile-bench --only "bf16 128x128 gather s4 m128 n32768 k7168 swiglu" --iters 10
tar czf $OUT/run94.tgz -C $w .
for f in $w/base-*.log $w/act-*.log; do echo "== $(basename $f .log)"; grep -E "^preset" $f | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $f | grep -o -E "^\[[a-zA-Z]+\] [^(]*|gemm0 n=[0-9]+ mean [0-9.]+us|gemm1 n=[0-9]+ mean [0-9.]+us" | paste - - - ; done
echo "gated: $(grep -c '^\[ok\]' $w/gated.log) ok, $(grep -c '^\[FAIL\]' $w/gated.log) FAIL"; grep '^\[FAIL\]' $w/gated.log | cut -c1-300
grep -E "^(ok|FAIL) " $w/bench.log
cat $w/summary.txt
