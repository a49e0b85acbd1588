#!/usr/bin/env bash
# run 90 (session 15): Kimi-K2 at T 4096 with 128-row tiles on the Hopper engine (.carry/k: spec
# `sized` takes 64-row tiles only where the average packet fits one; ~95 rows an expert here,
# so every expert's rows used to span two 64-row tiles that each read its weights) against
# cd1610a's 64x128 image (.carry/), back to back, verified; the new one traced.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-400}; source scripts/gpu-phases.sh
ph kimi-base 150 .carry/flashdmoe run --preset kimi-k2 --backend cuda --back-to-back 10
ph kimi-new 150 .carry/k/flashdmoe run --preset kimi-k2 --backend cuda --back-to-back 10 --trace $w/trace-kimi.json
gzip -f $w/*.json 2>/dev/null
tar czf $OUT/run90.tgz -C $w .
for f in $w/kimi-*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(kernel: [^ ]+|verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -h -E '^(trace|task times)' $w/kimi-new.log | cut -c1-300
cat $w/summary.txt
