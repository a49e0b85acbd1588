#!/usr/bin/env bash
# run 78 (nvidia-h200): the final form of ragged tiles (the masked columns' biases read from the
# zeroed slack the host uploads after each tensor, instead of a clamped index, which spilled 8
# bytes in two TF32 images): ragged shapes with biases and the gpt-oss presets, verified.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-300}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
R=".carry/r/flashdmoe run --backend cuda --tokens 2048 --experts 16 --top-k 2 --back-to-back 20"
ph rag-swiglu-bias 40 $R --hidden 2880 --inter 2880 --activation swiglu --bias
ph rag-relu-bias 40 $R --hidden 2880 --inter 2880 --activation relu --bias
ph rag-gemm1-bias-f16 40 $R --hidden 2880 --inter 2048 --activation swiglu --bias --dtype f16
ph oss20 60 .carry/r/flashdmoe run --preset gpt-oss-20b --backend cuda --back-to-back 20
ph check 80 .carry/r/gpu-check --only "gpt-oss"
tar czf $OUT/run78.tgz -C $w .
for f in $w/rag*.log $w/oss*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(kernel: .{0,80}|verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E "^\[(ok|FAIL)|passed" $w/check.log | cut -c1-120
cat $w/summary.txt
