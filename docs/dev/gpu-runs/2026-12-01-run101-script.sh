#!/usr/bin/env bash
# run 101 (nvidia-h200): the fused combine's first GPU run. .carry/fc = branch fused-combine-arrive
# (the switch: no combine tasks, the last arriving GEMM1 row of a (token, column tile) sums the
# token into y); .carry = main c863b0e; .carry/beside = the branch's earlier commit (fused sums
# into the heap's output rows beside the combine tasks; the host fails a forward whose fused
# rows differ bitwise from y). Phases: the switch's --quick (every form against the oracle),
# its mma.sync engine on small cases, the switch against main alternated on the paper layer and
# two presets (verified), then the beside build's bitwise check on a subset.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
cases="paper-t128-e8,paper-t4096-e8,paper-t16384-e8,preset qwen3-30b-a3b,preset olmoe-1b-7b"
ph fc-quick 170 .carry/fc/gpu-check --quick --json $w/fc-quick.jsonl
ph fc 70 .carry/fc/gpu-check --only "$cases" --json $w/fc.jsonl
ph main 70 .carry/gpu-check --only "$cases" --json $w/main.jsonl
ph fc2 70 .carry/fc/gpu-check --only "$cases" --json $w/fc2.jsonl
ph mma 40 .carry/fc/gpu-check --engine mma-sync --only "small Bf16 Relu,virtual P=4 skewed,paper-t128-e8" --json $w/mma.jsonl
ph beside 60 .carry/beside/gpu-check --quick --only "small,skewed,virtual P=8,device-resident" --json $w/beside.jsonl
tar czf $OUT/run101.tgz -C $w .
for f in $w/fc.log $w/main.log $w/fc2.log; do echo "== $(basename $f .log)"; grep -E "^(preset|paper)" $f | grep -v "dropless\|tf32" | cut -c1-90
  grep -E "^\[(ok|FAIL)\]" $f | grep -o -E "^\[[a-zA-Z]+\] [^(]*|busy [0-9]+%|gemm1 n=[^;]*|combine n=[^;]*|all tasks done [0-9]+us" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-220; done
for n in fc-quick mma beside; do echo "$n: $(grep -c '^\[ok\]' $w/$n.log) ok, $(grep -c '^\[FAIL\]' $w/$n.log) FAIL"; grep '^\[FAIL\]' $w/$n.log | cut -c1-400; done
cat $w/summary.txt
