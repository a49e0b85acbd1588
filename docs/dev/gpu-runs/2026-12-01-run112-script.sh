#!/usr/bin/env bash
# run 112 (session 21): the first wave. The OS block enqueues the GEMM0 tasks of the packets
# read in place itself, right after A3's grid barrier (all its threads: one claim, one fence),
# and hands the first of them to processors 0..n-1 without the scheduler (control word
# kFirstWave); the dispatch subscriber's signal/claim/release hop and the scheduler's first
# round and mailbox hop leave the path from placement to the first task.
# Carry: .carry/gpu-check = main 2433cac; .carry/fw/gpu-check = the change (this run: its first
# form, every in-place task written before the wave was released; run 114 on). Build each with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# and copy the binary (stripped) to the folder above.
# Phases: the change's --quick (every form against the oracle; the device-resident cases now
# fail where the Hopper engine hands out no first wave); main / fw on the paper layer and
# Qwen3, verified, digests compared.
# Prediction (perf-notes v35): the first task 7-10 µs after placement today -> ~3-4 µs: T16384
# E8 first task 46 -> ~40 µs, the forward -0.5%; T128 E8 0.106 -> ~0.100 ms; Qwen3 -0.5%; the
# same output bits.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t128-e32,paper-t4096-e8,paper-t16384-e8,paper-t16384-e32,preset qwen3-30b-a3b"
ph fw-quick 170 .carry/fw/gpu-check --quick --json $w/fw-quick.jsonl
ph main 140 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fw 140 .carry/fw/gpu-check --only "$cases" --json $w/fw.jsonl
tar czf $OUT/run112.tgz -C $w .
for b in main fw; do
  [ -f $w/$b.log ] || continue
  echo "== $b"
  grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|first task at [0-9]+us|placed [0-9]+us|first wave [0-9]+ tasks|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260
done
echo "fw-quick: $(grep -c '^\[ok\]' $w/fw-quick.log) ok, $(grep -c '^\[FAIL\]' $w/fw-quick.log) FAIL"; grep '^\[FAIL\]' $w/fw-quick.log | cut -c1-600
grep "device-resident" $w/fw-quick.log | grep -o "first wave \[[0-9, ]*\].*" | cut -c1-80
cat $w/summary.txt
