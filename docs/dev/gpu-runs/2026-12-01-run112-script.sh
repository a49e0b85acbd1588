#!/usr/bin/env bash
# run 112 (written in session 20, NOT YET RUN): the combine task streamed through the Hopper
# engine's pipeline (branch combine-stream; tasks of 4+ slots a token): the consumers look the
# slots up into a table in the staging buffer, the producer bulk-copies each slot's returned
# row segment into the stages, the consumers sum them from shared memory (run_combine's adds
# in its order: the same bits).
# Carry: .carry/gpu-check = main at the branch's base (7746375); .carry/cs/gpu-check = branch combine-stream
# (546378e or later; session 20 left that build in .carry/cs). Build each with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# and copy the binary (stripped) to the folder above.
# Phases: the branch's --quick (every form against the oracle; digests to compare with main's
# where both ran); main / cs / main / cs on Qwen3 (k 8), the paper layer T4096 / T16384 E8 (k
# 2) and OLMoE (k 8), verified, digests compared.
# Prediction (perf-notes lever 1): Qwen3's combine tasks 29-30 -> ~18-20 us (19 -> ~30 GB/s an
# SM: the HBM's rate with every processor combining), its tail ~66 -> ~45 us, the forward
# -2 to -3%; the paper layer at T16384 E8 level (its combines already move ~4 TB/s together);
# the same output bits everywhere.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
cases="preset qwen3-30b-a3b,preset olmoe-1b-7b,paper-t4096-e8,paper-t16384-e8"
ph cs-quick 170 .carry/cs/gpu-check --quick --json $w/cs-quick.jsonl
ph main 80 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph cs 80 .carry/cs/gpu-check --only "$cases" --json $w/cs.jsonl
ph main2 80 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph cs2 80 .carry/cs/gpu-check --only "$cases" --json $w/cs2.jsonl
tar czf $OUT/run112.tgz -C $w .
for b in main cs main2 cs2; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|combine n=[^;]*|gemm1 n=[^;]*|all tasks done [0-9]+us|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
echo "cs-quick: $(grep -c '^\[ok\]' $w/cs-quick.log) ok, $(grep -c '^\[FAIL\]' $w/cs-quick.log) FAIL"; grep '^\[FAIL\]' $w/cs-quick.log | cut -c1-600
cat $w/summary.txt
