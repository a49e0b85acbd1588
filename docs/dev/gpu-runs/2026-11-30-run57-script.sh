#!/usr/bin/env bash
# run 57: main a4c0af7 + the device-resident benchmark timing (.carry/m/): (1) the paper grid,
# timed device-resident back to back (the new record times; host-path medians beside), with
# PyTorch's grouped graph + dense pair in the same call; one `flashdmoe bench` case through the
# harness's new path; (2) the tile bench's 128x256 configs (new: s4 e256 at the steady state);
# (3) gpu-check --quick on both engines (the merge gate for weights-in-GEMM1 + the window).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((565 - ($(date +%s) - start))); }
timeout 150 .carry/m/gpu-check --only paper-t --json $w/paper.jsonl > $w/paper.log 2>&1; echo "paper rc=$? left $(left)" >> $w/summary.txt
timeout 120 python3 bench/baselines/torch_single.py --variants graph,dense --iters 20 --warmup 5 \
  --preset paper-t128-e8-cf1 paper-t128-e32-cf1 paper-t128-e128-cf1 paper-t4096-e8-cf1 \
  paper-t4096-e32-cf1 paper-t4096-e128-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 \
  paper-t16384-e128-cf1 --out $w/torch-single.jsonl > $w/torch.log 2>&1; echo "torch rc=$? left $(left)" >> $w/summary.txt
timeout 40 .carry/m/flashdmoe bench --backend cuda --preset paper-t4096-e8 --iters 20 --out $w/bench-out > $w/bench.log 2>&1; echo "bench rc=$? left $(left)" >> $w/summary.txt
timeout 70 .carry/m/tile-bench --only "128x256 s" --iters 20 > $w/tile.log 2>&1; echo "tile rc=$? left $(left)" >> $w/summary.txt
[ "$(left)" -gt 40 ] && { timeout $(( $(left) - 10 < 170 ? $(left) - 10 : 170 )) .carry/m/gpu-check --quick > $w/quick.log 2>&1; echo "quick rc=$? left $(left)" >> $w/summary.txt; }
[ "$(left)" -gt 30 ] && { timeout $(( $(left) - 8 )) .carry/m/gpu-check --engine mma-sync --quick > $w/quick-mma.log 2>&1; echo "quick mma rc=$? left $(left)" >> $w/summary.txt; }
tar czf $OUT/run57.tgz -C $w .
grep -h -E "^paper" $w/paper.log | cut -c1-110
grep -h -o "device-resident back to back [0-9.]* ms a forward ([a-z =]*), host path median [0-9.]* ms" $w/paper.log
grep -h -E "graph|dense" $w/torch.log | cut -c1-120 | tail -20
tail -6 $w/bench.log | cut -c1-200
grep -E "^ok|^FAIL" $w/tile.log | cut -c1-120
for q in quick quick-mma; do echo "$q: $(grep -c '^\[ok\]' $w/$q.log) ok; $(grep -E 'passed|failed' $w/$q.log | tail -1)"; done
grep -h "^\[FAIL\]" $w/*.log | cut -c1-400
cat $w/summary.txt
