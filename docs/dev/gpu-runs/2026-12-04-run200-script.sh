#!/usr/bin/env bash
# run 200 (session 39): A2's token half a lane group a token (topk.cuh kRouteLanes: 8 lanes a
# token for routers of 64-128 experts with one K part, 16 / 32 where a lane's logits would pass
# 16 registers; grouped and shared-gate routers stay a warp a token) against main's warp a
# token (.carry/gpu-check-base, built from 9784407, reduce experiments off). A2's token half
# was bound by the warp's issue (~1000 instructions a token: perf-notes v42 (a), v45 (c)); a
# quarter warp a token shares lane 0's serial softmax sum and every warp instruction among four
# tokens. First the checks with the new binary (the small layers, skewed routing, virtual
# P = 2 / 4, the device-resident cases), then base / new / base / new on the E128 grid, E8,
# Qwen3 and OLMoE. Prediction: the same digests; the token half (tokens - routed marks) at
# T16384 E128 28 -> 8-12 µs, the forward -1.5%; T4096 E128 11 -> 4-6; Qwen3 16 -> 6-9, OLMoE
# 11 -> 4-6 (-1%); T16384 E8 (a thread a token) and T128 level.
# Carry: .carry/gpu-check (this commit), .carry/gpu-check-base (9784407). ~520 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run200.log; BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
checks="small,skewed,virtual P=2,virtual P=4,device-resident"
cases="=paper-t128-e128,=paper-t4096-e128,=paper-t16384-e128,=paper-t16384-e8,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
ph checks 150 .carry/gpu-check --quick --only "$checks"
ph base 110 .carry/gpu-check-base --only "$cases"
ph new 80 .carry/gpu-check --only "$cases"
ph base2 80 .carry/gpu-check-base --only "$cases"
ph new2 80 .carry/gpu-check --only "$cases"
L="base new base2 new2"
ab_lines $L
for f in $L; do [ -f $w/$f.log ] && { echo "== $f"; grep -hE "^(paper|preset)" $w/$f.log; grep -ho "^\[ok\] [^ ]* [^ ]*\|output digest [0-9a-f]*\|routed [0-9]*us, tokens [0-9]*us ([^)]*)" $w/$f.log | paste -d' ' - - - ; }; done
echo "== checks"; [ -f $w/checks.log ] && grep -E "^\[FAIL|passed|failed" $w/checks.log | cut -c1-200
cat $w/summary.txt
