#!/usr/bin/env bash
# run 108 (written in session 19, NOT YET RUN): the inline fused combine on today's main.
# Carry: .carry/gpu-check = main (ca9ed7c or later); .carry/fci = branch fused-combine-inline
# (fused-combine-arrive merged onto main: GEMM1's A by TMA, the consumers' inline sums, and
# arrive's slot words loaded before the arrival add). Build each with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# in a worktree of that commit and copy the binary (stripped) to the folder above.
# Phases: fci's --quick (every form against the oracle: the branch's first full check since
# the merge); main / fci / main / fci on the paper layer and Qwen3 (verified; GEMM1 means, the
# forwards, digests). Prediction: GEMM1 +4.6 -> ~+3.9 us over main (one L2 round trip off the
# arrival chain); T128 E8 ~-10%, T16384 E8 +3% -> ~+2% (still a loss there: perf-notes v33 (f)).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t4096-e8,paper-t16384-e8,preset qwen3-30b-a3b"
ph fci-quick 170 .carry/fci/gpu-check --quick --json $w/fci-quick.jsonl
ph main 45 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fci 45 .carry/fci/gpu-check --only "$cases" --json $w/fci.jsonl
ph main2 45 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph fci2 45 .carry/fci/gpu-check --only "$cases" --json $w/fci2.jsonl
tar czf $OUT/run108.tgz -C $w .
for b in main fci main2 fci2; do echo "== $b"; grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|gemm1 n=[^;]*|combine n=[^;]*|all tasks done [0-9]+us|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260; done
echo "fci-quick: $(grep -c '^\[ok\]' $w/fci-quick.log) ok, $(grep -c '^\[FAIL\]' $w/fci-quick.log) FAIL"; grep '^\[FAIL\]' $w/fci-quick.log | cut -c1-300
cat $w/summary.txt
