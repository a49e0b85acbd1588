#!/usr/bin/env bash
# run 117 (written in session 21, NOT YET RUN): the streamed combine (kernels/combine_stream.cuh,
# CombineForm::Streamed, opt-in): one binary, the default form and `--combine stream`
# alternated. Carry: .carry/gpu-check = main (the commit that landed combine_stream.cuh or
# later), built with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# and copied (stripped) to .carry/.
# Phases: --quick (its four `combine stream` cases check the streamed form against the oracle,
# on one rank and two virtual ranks, and fail where the build fell back: they come last, so a
# hang there costs only the phase's budget); then registers / stream / registers / stream on
# Qwen3 (k 8), OLMoE (k 8) and the paper layer T16384 E8 (k 2: the registers' form either way,
# a control), verified, digests compared (equal = the same bits).
# Prediction (perf-notes "Next levers" 1, v35): Qwen3's combine tasks 28.4 -> ~15-18 µs, its
# tail (716-787 µs in run 114) ~70 -> ~45 µs: 0.798 -> ~0.775 ms (-3%); OLMoE -1 to -2%; the
# paper layer level; the same digests.
# Digests to expect in every phase (run 114, the first wave on 8c8ab6b; the 32-bit descriptors
# (1c91e79) and the remote copiers' wave (b776fd1) since must not change them): qwen3-30b-a3b
# aa59fd8070a5586f, olmoe-1b-7b 085f46a51ea4e7e1, paper-t16384-e8 3e3fffeb851ccdc2 (dropless
# b44e9876f6d3945b). The default phases' first task at T16384 E8 against run 114's 42 µs is
# the 32-bit descriptors' hint (another machine start: not a ratio).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
cases="preset qwen3-30b-a3b,preset olmoe-1b-7b,paper-t16384-e8"
ph quick 200 .carry/gpu-check --quick --json $w/quick.jsonl
ph reg 80 .carry/gpu-check --only "$cases" --json $w/reg.jsonl
ph cs 80 .carry/gpu-check --only "$cases" --combine stream --json $w/cs.jsonl
ph reg2 80 .carry/gpu-check --only "$cases" --json $w/reg2.jsonl
ph cs2 80 .carry/gpu-check --only "$cases" --combine stream --json $w/cs2.jsonl
tar czf $OUT/run117.tgz -C $w .
ab_lines reg cs reg2 cs2
echo "quick: $(grep -c '^\[ok\]' $w/quick.log) ok, $(grep -c '^\[FAIL\]' $w/quick.log) FAIL"; grep '^\[FAIL\]' $w/quick.log | cut -c1-600
grep "^\[[a-zA-Z]*\] combine stream" $w/quick.log | cut -c1-200
cat $w/summary.txt
