#!/usr/bin/env bash
# run 105 (nvidia-h200, session 19): why the fused combine's helpers made GEMM1 slower (run 104:
# GEMM1 45.6 us a 128x256 task against 28.3 with the consumers' inline sums, 24.1 on main).
# Carry: .carry/gpu-check = main (ff4f55f); .carry/fch = fused-combine-helpers e56cd73;
# .carry/v2 = e56cd73 with the consumers never posting (post = false in combine.cuh `arrive`:
# the helpers stay idle, warp 0 still loads GEMM1's A alone); .carry/v3 = e56cd73 with the
# helpers sleeping 256 ns after a look that found nothing (`__nanosleep` in the idle loop);
# .carry/fc4 = fused-combine-arrive 40b8f0a. v2 and v3 are throwaway builds (not committed).
# Each case verified against the oracle; GEMM1 task means from the traced forward.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-400}; source scripts/gpu-phases.sh
cases="paper-t128-e8,paper-t16384-e8"
for b in main fch v2 v3 fc4; do
  bin=.carry/$b/gpu-check; [ "$b" = main ] && bin=.carry/gpu-check
  ph $b 45 $bin --only "$cases" --json $w/$b.jsonl
done
tar czf $OUT/run105.tgz -C $w .
for b in main fch v2 v3 fc4; do echo "== $b"; grep -E "^\[(ok|FAIL)\]" $w/$b.log | grep -o -E "^\[[a-zA-Z]+\] [^(]*|gemm0 n=[^;]*|gemm1 n=[^;]*|all tasks done [0-9]+us|summed inline [0-9]+|back to back [0-9.]+ ms" | paste -s -d' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g' | cut -c1-250; done
cat $w/summary.txt
