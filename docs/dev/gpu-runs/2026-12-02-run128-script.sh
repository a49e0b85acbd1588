#!/usr/bin/env bash
# run 128 (session 24): run 127's winners as the defaults, and one new experiment.
# Defaults since run 127 (perf-notes v38 (a)): a GEMM tile's stores fenced once by consumer 0
# after the barrier (was FDM_LEADER_FENCE), a streamed combine's slot-table loads issued at once
# and its row sums read before they add (were FDM_SLOT_LOOKUPS_AT_ONCE,
# FDM_COMBINE_SUMS_UNROLLED). The same digests as run 127 (626998951465108a, 475c4d4a492461f3,
# 3e3fffeb851ccdc2, 5666d09c14b187bb); back to back at run 127's leader/combine levels.
# Experiment FDM_PREFETCH_WEIGHTS=MiB (processor_wgmma.cuh `prefetch_gemm0_weights`): at the
# kernel's start the first MiB of this GPU's GEMM0 weights, in the first wave's order, asked
# into L2 by bulk prefetches while phase A leaves HBM idle. Prediction: T128 E8 (GEMM0 23-49 µs
# at ~2.5 TB/s, phase A 23 µs) -6 to -10 µs with 24 MiB, a little more with 40; T128 E32 / E128
# -2 to -3% (weight-read bound: 0.5 / 2 GB); T16384 E8 and Qwen3 level or slightly worse (the
# router's x reads share HBM with the prefetch; their first wave reads L2-resident weights
# anyway).
# New in every traced case: `gaps before` (trace::gap_times): the idle processor time before
# each kind of task, to size the scheduling and dependency gaps (Qwen3 runs its GEMMs at 87%
# busy between 50 and 686 µs: ~2.5 µs a task unaccounted for).
# Carry: .carry/gpu-check built at this commit.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
check="virtual P=2,virtual P=4,small Bf16 SiluGated bias,combine stream,device-resident virtual P=2,forced timeout + recovery virtual P=2,skewed dropless"
cases="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e8,=paper-t128-e8,=paper-t128-e32,=paper-t128-e128"
ph check 90 .carry/gpu-check --only "$check" --json $w/check.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_PREFETCH_WEIGHTS=24 ph checkpf 60 .carry/gpu-check --only "skewed dropless,virtual P=4 capacity,device-resident virtual P=2" --json $w/checkpf.jsonl
ph base1 70 .carry/gpu-check --only "$cases" --json $w/base1.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_PREFETCH_WEIGHTS=24 ph pf24a 70 .carry/gpu-check --only "$cases" --json $w/pf24a.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_PREFETCH_WEIGHTS=40 ph pf40a 70 .carry/gpu-check --only "$cases" --json $w/pf40a.jsonl
ph base2 45 .carry/gpu-check --only "$cases" --json $w/base2.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_PREFETCH_WEIGHTS=24 ph pf24b 45 .carry/gpu-check --only "$cases" --json $w/pf24b.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_PREFETCH_WEIGHTS=40 ph pf40b 45 .carry/gpu-check --only "$cases" --json $w/pf40b.jsonl
ph more 60 .carry/gpu-check --only "=preset gpt-oss-20b,=paper-t4096-e8,=paper-t4096-e128" --json $w/more.jsonl
tar czf $OUT/run128.tgz -C $w .
ab_lines base1 pf24a pf40a base2 pf24b pf40b more
echo "check: $(cat $w/check.log $w/checkpf.log | grep -c '^\[ok\]') ok, $(cat $w/check.log $w/checkpf.log | grep -c '^\[FAIL\]') FAIL"; grep -h '^\[FAIL\]\|^extra kernel' $w/check.log $w/checkpf.log | cut -c1-600
for b in base1 pf24a pf40a base2 pf24b pf40b more; do grep -hE "^(preset|paper)" $w/$b.log | sed "s/^/$b /" | cut -c1-100; done
cat $w/summary.txt
