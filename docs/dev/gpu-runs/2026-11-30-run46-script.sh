#!/usr/bin/env bash
# run 46: (1) the tile bench's epilogue split (branch tma-rows): at the steady-state shape, plain /
# no-store (main loop alone) / no-global (staged, no global rows) / streaming stores / stores +
# __threadfence, alternated twice, torch.mm in the same call; (2) the paper grid with main 1d840ec
# (.carry/base) and PyTorch's grouped graph + dense pair in the same call (every case verified).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s)
left() { echo $((560 - ($(date +%s) - start))); }
for round in 1 2; do
  for e in plain no-store no-global plain-cs plain-fenced; do
    timeout 60 .carry/tr/tile-bench --only "s3 e512 m16384 n8192 k4096 $e" --iters 20 2>&1 | grep -v '^|\|^tile-bench:\|^device' >> $w/tile.log
  done
done
python3 bench/baselines/torch_mm.py --shape 16384 8192 4096 >> $w/tile.log 2>&1
echo "tiles done left $(left)" >> $w/summary.txt
timeout $(( $(left) - 150 )) .carry/base/gpu-check --only paper-t --json $w/paper.jsonl > $w/paper.log 2>&1; echo "paper rc=$? left $(left)" >> $w/summary.txt
timeout $(( $(left) - 10 )) python3 bench/baselines/torch_single.py --variants graph,dense --iters 20 --warmup 5 \
  --preset paper-t128-e8-cf1 paper-t128-e32-cf1 paper-t128-e128-cf1 paper-t4096-e8-cf1 \
  paper-t4096-e32-cf1 paper-t4096-e128-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 \
  paper-t16384-e128-cf1 --out $w/torch-single.jsonl > $w/torch.log 2>&1; echo "torch rc=$? left $(left)" >> $w/summary.txt
tar czf $OUT/run46.tgz -C $w .
grep -E "^ok|^FAIL|torch.mm|TFLOP" $w/tile.log | cut -c1-160
grep -h -E "^paper" $w/paper.log | cut -c1-110
grep -h -E "graph|dense" $w/torch.log | cut -c1-120 | tail -20
cat $w/summary.txt
