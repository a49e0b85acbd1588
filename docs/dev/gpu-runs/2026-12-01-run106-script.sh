#!/usr/bin/env bash
# run 106 (nvidia-h200, session 19): GEMM1's A through the TMA. Carry: .carry/gpu-check = main
# ff4f55f; .carry/tma = branch gemm1-tma-a a990bc7 (GEMM1's A one TMA box a k-tile, the 128
# producer threads' cp.async before); .carry/fct = branch fused-combine-tma 18a5744 (the fused
# combine's helpers, GEMM1's A by TMA instead of warp 0's cp.async: run 105 put warp 0's copies
# at +18 us a 128x256 GEMM1). Each: cargo build --release -p flashdmoe-bench --bin gpu-check in
# a worktree of the commit, stripped copy under .carry/.
# Phases: tma's --quick (every form against the oracle); main / tma / fct / tma / fct on the
# paper layer and Qwen3 (verified; GEMM1 means, forwards, output digests); fct on a subset of
# the quick cases (virtual ranks, drops, dropless, 256-row tiles, f32).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e8,paper-t4096-e8,paper-t16384-e8,preset qwen3-30b-a3b"
ph tma-quick 170 .carry/tma/gpu-check --quick --json $w/tma-quick.jsonl
ph main 45 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph tma 45 .carry/tma/gpu-check --only "$cases" --json $w/tma.jsonl
ph fct 45 .carry/fct/gpu-check --only "$cases" --json $w/fct.jsonl
ph tma2 45 .carry/tma/gpu-check --only "$cases" --json $w/tma2.jsonl
ph fct2 45 .carry/fct/gpu-check --only "$cases" --json $w/fct2.jsonl
ph fct-sub 40 .carry/fct/gpu-check --quick --only "virtual P=4,capacity-1.0,dropless,tile 256x64,small F32,device-resident" --json $w/fct-sub.jsonl
tar czf $OUT/run106.tgz -C $w .
for b in main tma fct tma2 fct2; do echo "== $b"; grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|gemm1 n=[^;]*|combine n=[^;]*|all tasks done [0-9]+us|summed inline [0-9]+|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-260; done
for n in tma-quick fct-sub; do echo "$n: $(grep -c '^\[ok\]' $w/$n.log) ok, $(grep -c '^\[FAIL\]' $w/$n.log) FAIL"; grep '^\[FAIL\]' $w/$n.log | cut -c1-300; done
cat $w/summary.txt
