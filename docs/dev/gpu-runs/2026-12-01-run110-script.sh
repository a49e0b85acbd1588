#!/usr/bin/env bash
# run 110 (session 20): A2 a thread a token for routers of at most 32 experts (route.cuh
# kLaneRouter) with the chunk's logits staged in shared memory by the whole block (run 109:
# each thread loading its own row lost at E32: T128 E32 0.188 -> 0.211 ms), against main 4a6c4bb.
# Carry: .carry/gpu-check = main 4a6c4bb; .carry/lane/gpu-check = the change. Build each with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# and copy the binary (stripped) to the folder above.
# Phases: the change's --quick (every router form and engine against the oracle, given routing
# and virtual ranks included); main / lane / main / lane on the layers whose router takes the
# new form (paper E8 and E32 at T128 / 4096 / 16384, gpt-oss-20b), verified, digests compared.
# Prediction: E8 as run 109 or better (T16384 E8 first task 57 -> 45 us, 0.907 -> 0.892 ms);
# E32's `tokens` mark 4 us after `routed` at T128 (29 in run 109, 4 with main) and ~4-5 at
# T4096 (17 in run 109, 7 with main): E32 level with main or better; the same output bits.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t128-e32,paper-t4096-e8,paper-t4096-e32,paper-t16384-e8,paper-t16384-e32,preset gpt-oss-20b"
ph lane-quick 170 .carry/lane/gpu-check --quick --json $w/lane-quick.jsonl
ph main 95 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph lane 95 .carry/lane/gpu-check --only "$cases" --json $w/lane.jsonl
ph main2 95 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph lane2 95 .carry/lane/gpu-check --only "$cases" --json $w/lane2.jsonl
tar czf $OUT/run110.tgz -C $w .
for b in main lane main2 lane2; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|routed [0-9]+us|tokens [0-9]+us|top-k [0-9]+us|placed [0-9]+us|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
echo "lane-quick: $(grep -c '^\[ok\]' $w/lane-quick.log) ok, $(grep -c '^\[FAIL\]' $w/lane-quick.log) FAIL"; grep '^\[FAIL\]' $w/lane-quick.log | cut -c1-400
cat $w/summary.txt
