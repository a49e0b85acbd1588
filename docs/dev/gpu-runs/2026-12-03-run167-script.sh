#!/usr/bin/env bash
# run 167 (session 32): experiment FDM_A2_AHEAD2 (topk.cuh `route_tokens`): a warp keeps two
# tokens' logits in flight ahead of the token it routes, not one. Question (perf-notes v42 (a)
# left it open): does the logits' L2 round trip bound A2's token half (`tokens` less `routed`
# in the phase marks: ~28 µs at T16384 E128, ~10 tokens a warp at ~2.7 µs each; two tokens a
# warp side by side only took it to 24)? Prediction: if the loads bound it, 28 -> 15-20 µs at
# T16384 E128 and the forward -0.5 to -1%; Qwen3 (15 µs) -3 to -5 µs; if not, level. The
# output digests must not move (the same bits). Carry: .carry/gpu-check built from main with
# the experiment listed (kernels::EXPERIMENTS). ~300 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
a2="env FLASHDMOE_EXTRA_DEFINES=FDM_A2_AHEAD2"
ph checks 40 $a2 .carry/gpu-check --quick --only "=virtual P=2 column groups,=combine stream small top-8,=forced timeout + recovery virtual P=2"
ph e128-base 30 .carry/gpu-check --only "=paper-t16384-e128"
ph e128-a2 30 $a2 .carry/gpu-check --only "=paper-t16384-e128"
ph qwen3-base 30 .carry/gpu-check --only "=preset qwen3-30b-a3b"
ph qwen3-a2 30 $a2 .carry/gpu-check --only "=preset qwen3-30b-a3b"
ph e128-a2b 30 $a2 .carry/gpu-check --only "=paper-t16384-e128"
ph e128-base2 30 .carry/gpu-check --only "=paper-t16384-e128"
ph qwen3-a2b 30 $a2 .carry/gpu-check --only "=preset qwen3-30b-a3b"
ph qwen3-base2 30 .carry/gpu-check --only "=preset qwen3-30b-a3b"
tar czf $OUT/run167.tgz -C $w .
echo "== checks"; grep -E "^\[|passed|failed|extra kernel" $w/checks.log | cut -c1-150
for f in e128-base e128-a2 e128-a2b e128-base2 qwen3-base qwen3-a2 qwen3-a2b qwen3-base2; do
  [ -f $w/$f.log ] || continue
  echo "== $f $(grep -o -E "output digest [0-9a-f]+|spill fallback [A-Z_,=0-9]*|routed [0-9]+us, tokens [0-9]+us|back to back [0-9.]+ ms" $w/$f.log | tr '\n' ' ')"
  grep -h "^paper\|^preset" $w/$f.log
done
cat $w/summary.txt
