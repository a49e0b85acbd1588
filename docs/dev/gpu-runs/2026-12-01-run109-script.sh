#!/usr/bin/env bash
# run 109 (session 20): A2 a thread a token for routers of at most 32 experts (route.cuh
# kLaneRouter), against main 4a6c4bb.
# Carry: .carry/gpu-check = main 4a6c4bb; .carry/lane/gpu-check = the change. Build each with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# and copy the binary (stripped) to the folder above.
# Phases: the change's --quick (every router form and engine against the oracle, given routing
# and virtual ranks included); main / lane / main / lane on the layers whose router takes the
# new form (paper E8 and E32 at T128 / 4096 / 16384, Mixtral, gpt-oss-20b) and Qwen3 (E128:
# the warp form, a control), verified, digests compared.
# Prediction: the `tokens` mark (A2's first half) 16 -> ~3 us after `routed` at T16384 E8 (7 ->
# ~2 at T4096, 5 -> ~2 at T128) and no separate chunk half (its grid barrier gone): the first
# task 4-14 us earlier, forwards -1.5% (T16384 E8), -2% (T4096 E8), -5% (T128 E8); Qwen3
# level; the same output bits (digests equal to main's).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t128-e32,paper-t4096-e8,paper-t4096-e32,paper-t16384-e8,preset mixtral-8x7b,preset gpt-oss-20b,preset qwen3-30b-a3b"
ph lane-quick 170 .carry/lane/gpu-check --quick --json $w/lane-quick.jsonl
ph main 95 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph lane 95 .carry/lane/gpu-check --only "$cases" --json $w/lane.jsonl
ph main2 95 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph lane2 95 .carry/lane/gpu-check --only "$cases" --json $w/lane2.jsonl
tar czf $OUT/run109.tgz -C $w .
for b in main lane main2 lane2; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|routed [0-9]+us|tokens [0-9]+us|top-k [0-9]+us|placed [0-9]+us|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
echo "lane-quick: $(grep -c '^\[ok\]' $w/lane-quick.log) ok, $(grep -c '^\[FAIL\]' $w/lane-quick.log) FAIL"; grep '^\[FAIL\]' $w/lane-quick.log | cut -c1-400
cat $w/summary.txt
