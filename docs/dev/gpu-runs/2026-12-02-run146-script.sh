#!/usr/bin/env bash
# run 146 (written in session 27, NOT YET RUN): FDM_A2_PAIRS (topk_pairs.cuh: A2 routes two
# tokens a warp at once where a warp routes a token, routers without grouped top-k) against
# the default, alternated twice, gpu-check's 20-forward medians and phase marks.
# Why: run 144's phase marks put A2's token half at 28 µs at T16384 E128 (routed 35 -> tokens
# 63 µs: ~10 tokens a warp at ~2.7 µs each, a chain of dependent steps: lane 0's serial
# softmax sum, K picks' warp reductions) and ~15 µs on Qwen3; two tokens' chains side by side
# should nearly halve it.
# Prediction: the same output digests (each token's bits unchanged); the `tokens` mark minus
# `routed` 28 -> 15-18 µs at T16384 E128 (the forward -0.8 to -1%), Qwen3 15 -> 9-11 µs (-0.5 to
# -0.8%), OLMoE alike; T128 E128 and gpt-oss level (at most one token a warp / little A2 time).
# Carry: .carry/gpu-check (`cargo build --release -p flashdmoe-bench --bin gpu-check` at the
# commit that adds FDM_A2_PAIRS or later, stripped). ~200 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-230}; source scripts/gpu-phases.sh
cases="=paper-t16384-e128,=paper-t4096-e128,=paper-t128-e128,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
ph base1 45 .carry/gpu-check --only "$cases"
ph pairs1 45 env FLASHDMOE_EXTRA_DEFINES=FDM_A2_PAIRS .carry/gpu-check --only "$cases"
ph base2 45 .carry/gpu-check --only "$cases"
ph pairs2 45 env FLASHDMOE_EXTRA_DEFINES=FDM_A2_PAIRS .carry/gpu-check --only "$cases"
tar czf $OUT/run146.tgz -C $w .
for b in base1 pairs1 base2 pairs2; do echo "== $b"; grep -hE "^(paper|preset)|passed|FAIL|error|extra kernel" $w/$b.log | cut -c1-120; done
for b in base1 pairs1 base2 pairs2; do echo "== $b"; grep -hE "^\[(ok|FAIL)\]" $w/$b.log | grep -o "^\[[a-zA-Z]*\] [^(]*\|routed [0-9]*us, tokens [0-9]*us\|output digest [0-9a-f]*\|back to back [0-9.]* ms" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'; done
echo; cat $w/summary.txt
