#!/usr/bin/env bash
# run 127 (written in session 23, NOT YET RUN): the GEMM tasks' publication fences, two
# experiments in one binary through FLASHDMOE_EXTRA_DEFINES (jit.rs `JitConfig::extra_defines`):
#   FDM_FENCE_ACQ_REL  sync.cuh `fence_for`: fence.acq_rel.gpu instead of __threadfence()'s
#                      fence.sc.gpu (MEMBAR.SC.GPU) on this GPU;
#   FDM_LEADER_FENCE   processor_wgmma.cuh: no fence a consumer thread after a GEMM tile's
#                      stores; after the barrier consumer 0 alone fences before the row-tile
#                      count (GEMM0) or releases the return signal (GEMM1): CUTLASS's semaphore;
#   FDM_SLOT_LOOKUPS_AT_ONCE  combine_stream.cuh: a streamed combine's slot table built with
#                      every lookup's loads issued first (one round trip a consumer thread
#                      instead of ~4-5 in turn);
#   FDM_COMBINE_SUMS_UNROLLED combine_stream.cuh: a row's slots read from the stage at once,
#                      then summed in slot order (the same bits).
# The two combine experiments run together ("combine" passes): the streamed combine's marks
# separate them (the table's time, then the rest).
# And FDM_FRESH_TID (config.cuh: the thread index read afresh at every use), the spill fallback
# that every streamed gated image but Kimi-K2's compiled through until the producer derived its
# tensor map's rank index afresh (processor_wgmma.cuh `local_rank_index`): the "fresh" passes
# build the default images that way, so default against fresh is what the fallback cost runs
# 123-126 (prediction: level to +1% for the fallback).
# Carry: .carry/gpu-check = `cargo build --release -p flashdmoe-bench --bin gpu-check` of main at
# the commit that added `local_rank_index` or later, stripped.
# Why (perf-notes v37 (c)): a GEMM task's fences take 1.1-1.4 µs since the epilogue got fast, and
# run 126 showed they cost that much even after the stores have drained (held to the next
# pause: 1.3 µs moved into the next task's epilogue): the fences themselves, 8 warps' SC fences
# each an L2 round trip with the producer's loads in flight, not the stores they wait for.
# Prediction: the fences+publication field 1.2-1.4 -> 0.3-0.6 µs with either; Qwen3 and OLMoE
# -2 to -4% (4438 / 4640 tasks x ~0.8 µs over 131 processors), T16384 E8 -1%, T128 E8 level.
# (Both fences together are not run here: next, if each wins alone.)
# The streamed combines' new marks (slot table / first fill / the rest) say where their ~22 µs
# go; prediction for the combine pair: the table 3-5 -> ~1 µs, the rest -10 to -30%, Qwen3 and
# OLMoE -0.5 to -1.5% (two waves of combines in the tail), the paper layer (2 slots: never
# streams) unchanged.
# The same digests as run 126 (626998951465108a, 475c4d4a492461f3, 3e3fffeb851ccdc2,
# 5666d09c14b187bb): fences, lookups and the sums' order move no value.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-570}; source scripts/gpu-phases.sh
check="virtual P=2,virtual P=4,small Bf16 SiluGated bias,combine stream,device-resident virtual P=2,forced timeout + recovery virtual P=2,skewed dropless"
cases="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e8,=paper-t128-e8"
both=FDM_LEADER_FENCE,FDM_FENCE_ACQ_REL
combine=FDM_SLOT_LOOKUPS_AT_ONCE,FDM_COMBINE_SUMS_UNROLLED
FLASHDMOE_EXTRA_DEFINES=$both,$combine ph check 100 .carry/gpu-check --only "$check" --json $w/check.jsonl
ph base1 45 .carry/gpu-check --only "$cases" --json $w/base1.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_FENCE_ACQ_REL ph acqrel1 45 .carry/gpu-check --only "$cases" --json $w/acqrel1.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_LEADER_FENCE ph leader1 45 .carry/gpu-check --only "$cases" --json $w/leader1.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_FRESH_TID ph fresh1 45 .carry/gpu-check --only "$cases" --json $w/fresh1.jsonl
FLASHDMOE_EXTRA_DEFINES=$combine ph combine1 45 .carry/gpu-check --only "$cases" --json $w/combine1.jsonl
ph base2 45 .carry/gpu-check --only "$cases" --json $w/base2.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_FENCE_ACQ_REL ph acqrel2 45 .carry/gpu-check --only "$cases" --json $w/acqrel2.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_LEADER_FENCE ph leader2 45 .carry/gpu-check --only "$cases" --json $w/leader2.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_FRESH_TID ph fresh2 45 .carry/gpu-check --only "$cases" --json $w/fresh2.jsonl
FLASHDMOE_EXTRA_DEFINES=$combine ph combine2 45 .carry/gpu-check --only "$cases" --json $w/combine2.jsonl
tar czf $OUT/run127.tgz -C $w .
ab_lines base1 acqrel1 leader1 fresh1 combine1 base2 acqrel2 leader2 fresh2 combine2
echo "check: $(grep -c '^\[ok\]' $w/check.log) ok, $(grep -c '^\[FAIL\]' $w/check.log) FAIL"; grep '^\[FAIL\]\|^extra kernel' $w/check.log | cut -c1-600
for b in base1 acqrel1 leader1 fresh1 combine1 base2 acqrel2 leader2 fresh2 combine2; do grep -hE "^(preset|paper)" $w/$b.log | sed "s/^/$b /" | cut -c1-100; done
cat $w/summary.txt
