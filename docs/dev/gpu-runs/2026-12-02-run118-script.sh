#!/usr/bin/env bash
# run 118 (session 22): main ae83616, the streamed combine the default where it applies.
# Carry: .carry/gpu-check = `cargo build --release -p flashdmoe-bench --bin gpu-check`, stripped.
# Phases: --quick (its `combine stream small top-8` case fell back in run 117: the producer's 96
# registers at 64 accumulators must now build it streamed; `combine registers small top-8`
# checks the registers' form where the default streams), then one pass of Qwen3, OLMoE, the
# paper layer T16384 E8 and E128 in the default form, with the new `row fill` line: the GEMM
# tasks' mean times by how full their row tile is (perf-notes lever 6c: what a part-empty last
# row tile costs against a full one).
# Expected digests (run 117): qwen3-30b-a3b aa59fd8070a5586f, olmoe-1b-7b 085f46a51ea4e7e1,
# paper-t16384-e8 3e3fffeb851ccdc2 (dropless b44e9876f6d3945b); times as run 117's `cs` phases
# (Qwen3 0.790-0.793, OLMoE 0.867-0.868, T16384 E8 0.882).
# Prediction for the row fill (6c): Qwen3's <=half GEMM0 tasks at 70-90% of a full one's time
# (B is read whole, one warpgroup issues the wgmmas); the paper layer's the same ratio.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-500}; source scripts/gpu-phases.sh
ph quick 200 .carry/gpu-check --quick --json $w/quick.jsonl
ph def 120 .carry/gpu-check --only "preset qwen3-30b-a3b,preset olmoe-1b-7b,paper-t16384-e128,paper-t16384-e8" --json $w/def.jsonl
tar czf $OUT/run118.tgz -C $w .
ab_lines def
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-600
grep "^\[[a-zA-Z]*\] combine " $w/quick.log | cut -c1-200
cat $w/summary.txt
