#!/usr/bin/env bash
# run 130 (written in session 24, NOT YET RUN): the processor's completion count as a relaxed
# store (experiment FDM_RELAXED_COMPLETION, mailbox.cuh `mailbox_complete`), and the presets
# session 24 did not re-time, with its defaults (one fence a GEMM tile, the streamed combine's
# batched lookups and sums, consumer warp 0 publishing a tile: perf-notes v38).
# Why: after run 129, consumer warp 0 carries a GEMM task's hand-off (its fence, the row-tile
# count or the return signal, the completion count) while warpgroup 0 waits for it and
# warpgroup 1 runs ahead by at most the pipeline's free stages. The completion count's release
# store is one more MEMBAR.ALL.GPU on that path (SASS of the Qwen3 image); nothing that reads
# the count acquires anything through it (mailbox.cuh's note).
# Prediction: the gaps before GEMM tasks (measured by consumer 0, in warp 0) -0.2 to -0.5 µs;
# Qwen3 and OLMoE -0.3 to -1%, T16384 E8 level to -0.5%; the same digests as run 129
# (626998951465108a, 475c4d4a492461f3, 3e3fffeb851ccdc2, 5666d09c14b187bb).
# (A release atomic for the row-tile count, `atom.release.gpu`, was not queued: ptxas lowers it
# to the same MEMBAR.ALL.GPU + ATOM as the fence and the atomicAdd it would replace.)
# The default image changed after run 129 (consumer warp 0's test made provably warp-uniform:
# the divergent form made the paper layers' fallback images at E >= 64 spill; perf-notes v38
# (d)): the default passes time it (run 129's warp-0 passes: Qwen3 0.736-0.738, OLMoE
# 0.808-0.809, T16384 E8 0.874-0.877, T128 E8 0.102-0.103 on another machine start), and the
# `twins` phase re-times T8192 E128 and T16384 E128 (run 121: 1.161 ms).
# The presets' re-time: gpt-oss-20b (run 123: 1.639-1.643), Mixtral-8x7B, DeepSeek-V3's and
# Kimi-K2's routed parts (build time: ~55 and ~104 s each on a cold machine, gpu-queue.md):
# once each with the defaults, last, as the budget allows.
# Carry: .carry/gpu-check (`cargo build --release -p flashdmoe-bench --bin gpu-check`,
# stripped) built at the commit that made warp 0's test warp-uniform or later.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-570}; source scripts/gpu-phases.sh
check="virtual P=2,virtual P=4,small Bf16 SiluGated bias,combine stream,device-resident virtual P=2,forced timeout + recovery,skewed dropless"
cases="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e8,=paper-t128-e8"
FLASHDMOE_EXTRA_DEFINES=FDM_RELAXED_COMPLETION ph check 110 .carry/gpu-check --only "$check" --json $w/check.jsonl
ph base1 50 .carry/gpu-check --only "$cases" --json $w/base1.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_RELAXED_COMPLETION ph rc1 50 .carry/gpu-check --only "$cases" --json $w/rc1.jsonl
ph base2 35 .carry/gpu-check --only "$cases" --json $w/base2.jsonl
FLASHDMOE_EXTRA_DEFINES=FDM_RELAXED_COMPLETION ph rc2 35 .carry/gpu-check --only "$cases" --json $w/rc2.jsonl
ph twins 60 .carry/gpu-check --only "=paper-t8192-e128,=paper-t16384-e128" --json $w/twins.jsonl
ph presets 120 .carry/gpu-check --only "=preset gpt-oss-20b,=preset mixtral-8x7b,=preset deepseek-v3 routed part" --json $w/presets.jsonl
ph kimi 150 .carry/gpu-check --only "=preset kimi-k2 routed part" --json $w/kimi.jsonl
tar czf $OUT/run130.tgz -C $w .
ab_lines base1 rc1 base2 rc2 twins presets kimi
echo "check: $(grep -c '^\[ok\]' $w/check.log) ok, $(grep -c '^\[FAIL\]' $w/check.log) FAIL"; grep -h '^\[FAIL\]\|^extra kernel' $w/check.log | cut -c1-600
for b in base1 rc1 base2 rc2 twins presets kimi; do grep -hE "^(preset|paper)" $w/$b.log 2>/dev/null | sed "s/^/$b /" | cut -c1-100; done
cat $w/summary.txt
