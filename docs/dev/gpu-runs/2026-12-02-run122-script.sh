#!/usr/bin/env bash
# run 122 (written in session 22, NOT YET RUN): Kimi-K2 with the streamed combine, which compiles
# only through the Hopper variants' spill fallback (config.cuh FDM_FRESH_TID: the thread index
# read afresh at every use), against the registers' form (its image before, run 90: 10.738 ms
# back to back), in one binary.
# Carry: .carry/gpu-check = `cargo build --release -p flashdmoe-bench --bin gpu-check` of main at
# the commit that added FDM_FRESH_TID or later, stripped.
# Budget: a Kimi-K2 pass builds 34 GB of weights (~104 s in run 36) and verifies sampled rows:
# ~250 s a pass, two passes a call.
# Prediction: the same digest both ways; streamed −0.5 to −1.5% (DeepSeek-V3's 9 slots gave a
# hint of −1.4% in run 119); the fallback's fresh reads of %tid.x cost nothing measurable.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
ph cs 260 .carry/gpu-check --only "=preset kimi-k2" --json $w/cs.jsonl
ph reg 260 .carry/gpu-check --only "=preset kimi-k2" --combine registers --json $w/reg.jsonl
tar czf $OUT/run122.tgz -C $w .
ab_lines cs reg
grep -hE "^preset" $w/*.log | cut -c1-120
cat $w/summary.txt
