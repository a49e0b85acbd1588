#!/usr/bin/env bash
# run 44: first run of branch async-epilogue (aff6a69) against main (37ad4db kernel): paper T16384 E8, verified.
set -u -o pipefail
source scripts/gpu-env.sh
timeout 80 .carry/ae/gpu-check --only paper-t16384-e8 > $OUT/ae.log 2>&1; echo "ae rc=$?" >> $OUT/summary.txt
timeout 60 .carry/gpu-check --only paper-t16384-e8 > $OUT/main.log 2>&1; echo "main rc=$?" >> $OUT/summary.txt
for f in ae main; do grep -h -E "^\[" $OUT/$f.log | sed -E 's/sample seed [0-9]+, //' | cut -c1-900; grep -h -E "^paper" $OUT/$f.log; done
cat $OUT/summary.txt
