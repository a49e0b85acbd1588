#!/usr/bin/env bash
# run 107 (nvidia-h200, session 19; the session's last 311 s of device time): the inline fused
# combine on TMA A. Carry: .carry/tma = main's kernel (a990bc7 / c66764f: GEMM1's A by TMA);
# .carry/fc4t = branch fused-combine-tma 18a5744 built with kHelperSums = false (throwaway:
# the consumers sum inline as on fused-combine-arrive, GEMM1's A by TMA: fc4 on today's main).
# Alternated on the paper layer and Qwen3 (verified, digests), then a few fc4t checks.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-230}; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t4096-e8,paper-t16384-e8,preset qwen3-30b-a3b"
ph tma 40 .carry/tma/gpu-check --only "$cases" --json $w/tma.jsonl
ph fc4t 40 .carry/fc4t/gpu-check --only "$cases" --json $w/fc4t.jsonl
ph tma2 40 .carry/tma/gpu-check --only "$cases" --json $w/tma2.jsonl
ph fc4t2 40 .carry/fc4t/gpu-check --only "$cases" --json $w/fc4t2.jsonl
ph fc4t-sub 15 .carry/fc4t/gpu-check --quick --only "virtual P=4 skewed,skewed dropless,device-resident single P=1" --json $w/fc4t-sub.jsonl
tar czf $OUT/run107.tgz -C $w .
for b in tma fc4t tma2 fc4t2 fc4t-sub; do echo "== $b"; grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|\[[a-z0-9-]*-(wgmma|rs)[^]]*\]|gemm1 n=[^;]*|all tasks done [0-9]+us|back to back [0-9.]+ ms|output digest [0-9a-f]+" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-300; done
cat $w/summary.txt
