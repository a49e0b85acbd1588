#!/usr/bin/env bash
# run 119 (session 22): main with the router-rows twin (MoeSpec::candidates: a Hopper image of
# 128-row router jobs that spills gives way to the same tile with 64-row jobs before mma.sync).
# Run 118 found paper T16384 E128 on mma.sync (its 128x256 wgmma image spilled 8 bytes):
# 1.712 ms back to back against 1.181 in run 98.
# Carry: .carry/gpu-check = `cargo build --release -p flashdmoe-bench --bin gpu-check`, stripped.
# Phases: the paper layer T16384 E128 and E32 (E32 keeps its 128-row image: a control), then
# DeepSeek-V3 in the default form (the streamed combine, its first GPU run there; 9 slots).
# Prediction: T16384 E128 1.71 -> ~1.15-1.20 ms on the Hopper engine (label without rr128),
# A1 two waves of router jobs (+5-10 µs to phase A); E32 level with run 118; DeepSeek-V3 8.99
# (run 116, registers) -> ~8.9 (its 256 combine tasks stream).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-520}; source scripts/gpu-phases.sh
ph paper 150 .carry/gpu-check --only "paper-t16384-e128,paper-t16384-e32" --json $w/paper.jsonl
ph ds 240 .carry/gpu-check --only "preset deepseek-v3" --json $w/ds.jsonl
tar czf $OUT/run119.tgz -C $w .
ab_lines paper ds
for f in $w/paper.log $w/ds.log; do grep -o "^\[[a-zA-Z]*\] [^(]*([0-9.]*s): \[[^]]*\]" $f; grep -o "phase A: [^;]*" $f | head -3; done
grep -E "^(paper|preset)" $w/paper.log $w/ds.log | cut -c1-120
cat $w/summary.txt
