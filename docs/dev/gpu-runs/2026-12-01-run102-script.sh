#!/usr/bin/env bash
# run 102 (nvidia-h200): the fused combine's sums made latency-tolerant. .carry = main c863b0e;
# .carry/fc3 = branch fused-combine-arrive with several rows' loads in flight, the slot words
# kept in shared memory, the token loaded before the main loop; .carry/fc4 = fc3 + A3's unkept
# pass only in chunks with a drop + arrivals by atom.add.acq_rel. Phases: fc4's --quick (every
# form against the oracle), then main / fc3 / fc4 / main / fc4 on the paper layer and Qwen3
# (each case verified), then fc4's mma.sync engine on small cases.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e8,paper-t4096-e8,paper-t16384-e8,preset qwen3-30b-a3b"
ph fc4-quick 170 .carry/fc4/gpu-check --quick --json $w/fc4-quick.jsonl
ph main 60 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fc3 60 .carry/fc3/gpu-check --only "$cases" --json $w/fc3.jsonl
ph fc4 60 .carry/fc4/gpu-check --only "$cases" --json $w/fc4.jsonl
ph main2 60 .carry/gpu-check --only "$cases" --json $w/main2.jsonl
ph fc4b 60 .carry/fc4/gpu-check --only "$cases" --json $w/fc4b.jsonl
ph mma 40 .carry/fc4/gpu-check --engine mma-sync --only "small Bf16 Relu,virtual P=4 skewed,paper-t128-e8" --json $w/mma.jsonl
tar czf $OUT/run102.tgz -C $w .
for f in main fc3 fc4 main2 fc4b; do echo "== $f"; grep -E "^(preset|paper)" $w/$f.log | grep -v "dropless\|tf32\|Gelu\|Silu" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $w/$f.log | grep -v "Gelu\|Silu" | grep -o -E "^\[[a-zA-Z]+\] [^(]*|busy [0-9]+%|gemm1 n=[^;]*|combine n=[^;]*|placed [0-9]+us|all tasks done [0-9]+us" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-220; done
for n in fc4-quick mma; do echo "$n: $(grep -c '^\[ok\]' $w/$n.log) ok, $(grep -c '^\[FAIL\]' $w/$n.log) FAIL"; grep '^\[FAIL\]' $w/$n.log | cut -c1-400; done
cat $w/summary.txt
