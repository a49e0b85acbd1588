#!/usr/bin/env bash
# NOTE: the knob this script runs (`--gemm0-round`) was removed after this run (it lost 6-7%:
# perf-notes v36); the commit that had it is named in the run 120 logs.
# run 120 (session 22): the in-place GEMM0 tasks in rounds of row tiles (`--gemm0-round N`,
# kernels/subscriber.cuh kGemm0Round, label suffix -grN; opt-in). With packet after packet the
# paper layer's combines at T16384 E8 all wait for the last expert's GEMM1 row tiles (run 118:
# GEMM1 423-823 µs, combines 808-883, a ~50 µs tail past the last GEMM1). In rounds of 8 row
# tiles of every packet, the first token tiles' GEMM1 tasks come first and their combines (ready
# combines go first, scheduler.cuh) run beside the later rounds.
# Carry: .carry/gpu-check = `cargo build --release -p flashdmoe-bench --bin gpu-check`, stripped.
# Phases (alternated): T16384 E8 packet after packet, then rounds of 8; E32 rounds of 4, then
# packet after packet. The outputs must be bitwise the same (digests equal: only the order of the
# tasks changes).
# Prediction: E8 combines start ~550 µs instead of ~800, the forward 0.882 -> ~0.855 ms (-3%)
# if two packets' weights in flight keep their L2 hits (GEMM0 task times within +3%); E32
# (8-9 row tiles a packet: 3 rounds of 4) -1 to -2%.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
ph e8 50 .carry/gpu-check --only "paper-t16384-e8" --json $w/e8.jsonl
ph e8gr8 50 .carry/gpu-check --only "paper-t16384-e8" --gemm0-round 8 --json $w/e8gr8.jsonl
ph e32gr4 70 .carry/gpu-check --only "paper-t16384-e32" --gemm0-round 4 --json $w/e32gr4.jsonl
ph e32 70 .carry/gpu-check --only "paper-t16384-e32" --json $w/e32.jsonl
tar czf $OUT/run120.tgz -C $w .
ab_lines e8 e8gr8 e32gr4 e32
for f in e8 e8gr8 e32gr4 e32; do [ -f $w/$f.log ] && grep -o "^\[[a-zA-Z]*\] [^(]*([0-9.]*s): \[[^]]*\]\|gemm0 n=[^;]*\|gemm1 n=[^;]*" $w/$f.log | paste -s -d' ' | cut -c1-700; done
grep -hE "^paper" $w/*.log | cut -c1-120
cat $w/summary.txt
