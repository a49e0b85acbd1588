#!/usr/bin/env bash
# run 103 (nvidia-h200; written in session 18, run in session 19 as run 103 with fch 4d6d20c,
# which faulted, and as run 104 with fch e56cd73; logs 2026-12-01-run10[34]-logs.txt): the fused combine's sums by the
# producer warpgroup's idle warps. Carry: .carry/gpu-check = main (9a36cd6 or later: it prints
# output digests); .carry/fch = branch fused-combine-helpers (4d6d20c: it also counts the GEMM1 tiles summed inline); .carry/fc4 = branch
# fused-combine-arrive (40b8f0a: the consumers sum inline). Build each with
#   cargo build --release -p flashdmoe-bench --bin gpu-check
# in a worktree of that commit and copy the binary (stripped) to the folder above.
# Phases: fch's --quick (every form against the oracle), then main / fch / fc4 / fch on the
# paper layer and Qwen3 (each case verified; GEMM1 task means and the forwards), then fch's
# mma.sync engine on small cases. Last, each case's output digest in the three builds: equal
# digests mean bitwise-equal outputs (the fused sums claim the old combine's bits).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e8,paper-t4096-e8,paper-t16384-e8,preset qwen3-30b-a3b"
ph fch-quick 170 .carry/fch/gpu-check --quick --json $w/fch-quick.jsonl
ph main 60 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fch 60 .carry/fch/gpu-check --only "$cases" --json $w/fch.jsonl
ph fc4 60 .carry/fc4/gpu-check --only "$cases" --json $w/fc4.jsonl
ph fch2 60 .carry/fch/gpu-check --only "$cases" --json $w/fch2.jsonl
ph mma 40 .carry/fch/gpu-check --engine mma-sync --only "small Bf16 Relu,virtual P=4 skewed,paper-t128-e8" --json $w/mma.jsonl
tar czf $OUT/run103.tgz -C $w .
for f in main fch fc4 fch2; do echo "== $f"; grep -E "^(preset|paper)" $w/$f.log | grep -v "dropless\|tf32\|Gelu\|Silu" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $w/$f.log | grep -v "Gelu\|Silu" | grep -o -E "^\[[a-zA-Z]+\] [^(]*|busy [0-9]+%|gemm1 n=[^;]*|combine n=[^;]*|all tasks done [0-9]+us|summed inline [0-9]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-220; done
for n in fch-quick mma; do echo "$n: $(grep -c '^\[ok\]' $w/$n.log) ok, $(grep -c '^\[FAIL\]' $w/$n.log) FAIL"; grep '^\[FAIL\]' $w/$n.log | cut -c1-400; done
echo "== output digests (case: main fch fc4)"; for c in $(echo "$cases" | tr ',' '\n' | tr ' ' '_'); do n=$(echo "$c" | tr '_' ' '); d() { grep -E "^\[(ok|FAIL)\] $n \(" $w/$1.log | head -1 | grep -o "output digest [0-9a-f]*" | cut -d' ' -f3; }; echo "$n: $(d main) $(d fch) $(d fc4)"; done
cat $w/summary.txt
