#!/usr/bin/env bash
# run 136 (session 26): per-warpgroup epilogues (experiment FDM_WG_EPILOGUE: tile_wgmma.cuh
# kOwnEpilogue, processor_wgmma.cuh tile_arrival; perf-notes v40 (b)).
# Why: both consumer warpgroups run a GEMM tile's epilogue (~2.8 µs of a 22.7 µs task at
# T16384 E8; a third of Qwen3's GEMM1 task) at the same time, behind a 256-thread barrier a
# chunk, and the tensor pipe idles for all of it. With each warpgroup's own rows, barrier and
# copy-out, the warpgroup that publishes (the later one, warp 0's hand-off ~1-1.5 µs) lags, the
# other runs ahead by up to the pipeline's free stages, and one warpgroup's epilogue runs while
# the other's wgmmas still do.
# Prediction: T16384 E8 -2 to -4% (0.851 -> 0.82-0.83 ms), Qwen3 and OLMoE -3 to -6%, T4096 E8
# -2 to -4%, T128 E8 level to -2%; the same digests as the default (the epilogue's values do
# not change, only who stores them). The check phase runs the experiment over small shapes
# (few k-tiles: a warpgroup a task ahead), virtual ranks (held remote tiles), streamed
# combines (the staging buffer reused), device-resident forwards and a forced timeout.
# Then the tile bench's ping-pong against the cooperative tile with A by TMA, as the MoE
# kernel's GEMM1 loads it (run 135 measured both with cp.async A at K 768: ping-pong -7%; at
# K 4096 ping-pong by TMA 603 against the cooperative's 644 by cp.async). Prediction: ping-pong
# within -3 to +3% of the cooperative tile at K 768 by TMA (the epilogue hidden, paid for in
# bytes), -5 to -8% at K 4096.
# Carry: .carry/gpu-check (`cargo build --release -p flashdmoe-bench --bin gpu-check`, stripped),
# .carry/tile-bench (`cargo build --release -p flashdmoe-cuda --example tile-bench`, stripped).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
check="small Bf16,small F16,small deepseek-v3,small gpt-oss,small qwen2-moe,virtual P=2,virtual P=4,combine stream,device-resident single,skewed dropless,small column groups,forced timeout + recovery single"
cases="=preset qwen3-30b-a3b,=preset olmoe-1b-7b,=paper-t16384-e8,=paper-t4096-e8,=paper-t128-e8"
X=FDM_WG_EPILOGUE
FLASHDMOE_EXTRA_DEFINES=$X ph check 150 timeout 170 .carry/gpu-check --only "$check" --json $w/check.jsonl
ph base1 60 .carry/gpu-check --only "$cases" --json $w/base1.jsonl
FLASHDMOE_EXTRA_DEFINES=$X ph wg1 60 .carry/gpu-check --only "$cases" --json $w/wg1.jsonl
ph base2 45 .carry/gpu-check --only "$cases" --json $w/base2.jsonl
FLASHDMOE_EXTRA_DEFINES=$X ph wg2 45 .carry/gpu-check --only "$cases" --json $w/wg2.jsonl
ph tile-k768 40 timeout 90 .carry/tile-bench --iters 30 --only "n2048 k768"
ph tile-k4096 30 timeout 60 .carry/tile-bench --iters 20 --only "tma-a s3 e512 m16384"
FLASHDMOE_EXTRA_DEFINES=$X ph wgx 60 .carry/gpu-check --only "=paper-t16384-e32,=paper-t16384-e128,=preset gpt-oss-20b" --json $w/wgx.jsonl
ph basex 60 .carry/gpu-check --only "=paper-t16384-e32,=paper-t16384-e128,=preset gpt-oss-20b" --json $w/basex.jsonl
tar czf $OUT/run136.tgz -C $w .
ab_lines base1 wg1 base2 wg2 basex wgx
echo "check: $(grep -c '^\[ok\]' $w/check.log) ok, $(grep -c '^\[FAIL\]' $w/check.log) FAIL"; grep -h '^\[FAIL\]\|^extra kernel' $w/check.log | cut -c1-600
for b in base1 wg1 base2 wg2 basex wgx; do grep -hE "^(preset|paper)" $w/$b.log 2>/dev/null | sed "s/^/$b /" | cut -c1-100; done
for b in tile-k768 tile-k4096; do echo "== $b"; grep -hE "^\||^FAIL|failed" $w/$b.log | cut -c1-130; done
cat $w/summary.txt
