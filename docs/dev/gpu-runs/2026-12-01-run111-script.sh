#!/usr/bin/env bash
# run 111 (session 20): A2 a thread a token only where a warp a token would leave each warp
# at least E / 4 tokens (route.cuh lanes_route, a run-time choice; runs 109-110 measured both
# forms), the form recorded in control word kRouteThreads, and two quick cases that check the
# device-resident forward in the thread form; against main 4a6c4bb.
# Carry: .carry/gpu-check = main 4a6c4bb; .carry/lane/gpu-check = the change. Build each with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# and copy the binary (stripped) to the folder above.
# Phases: the change's --quick (51 cases: the two `thread router` ones new); main / lane on the
# paper layer E8 and E32 at T128 / 4096 / 16384 and gpt-oss-20b, verified, digests compared.
# Prediction: E8 at T >= 4096 and E32 at T16384 as run 110 (a thread a token: T16384 E8
# ~0.886-0.892 ms, E32 ~0.940); T128 E8, T128 E32, T4096 E32 and gpt-oss-20b take the warp
# form: level with main (E32 0.186 / 0.323 ms in run 110); the same output bits.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t128-e32,paper-t4096-e8,paper-t4096-e32,paper-t16384-e8,paper-t16384-e32,preset gpt-oss-20b"
ph lane-quick 170 .carry/lane/gpu-check --quick --json $w/lane-quick.jsonl
ph main 150 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph lane 150 .carry/lane/gpu-check --only "$cases" --json $w/lane.jsonl
tar czf $OUT/run111.tgz -C $w .
for b in main lane; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|routed [0-9]+us|tokens [0-9]+us( \([a-z ]*\))?|top-k [0-9]+us|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
echo "lane-quick: $(grep -c '^\[ok\]' $w/lane-quick.log) ok, $(grep -c '^\[FAIL\]' $w/lane-quick.log) FAIL"; grep '^\[FAIL\]' $w/lane-quick.log | cut -c1-600
grep "thread router" $w/lane-quick.log | grep -o "A2 a [a-z]* a token.*" | cut -c1-120
cat $w/summary.txt
