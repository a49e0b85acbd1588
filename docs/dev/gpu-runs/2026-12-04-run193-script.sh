#!/usr/bin/env bash
# run 193 (session 38, nvidia-h200-x2, right after run 192): run 192 found FDM_BULK_DISPATCH
# with 8 remote copiers 0.7% below main's 32 at P = 2 (0.568 against 0.572 ms), main level
# from 16 to 32 copiers. Fewer copiers pushed further: the bulk form with 4, 8 and 12 and
# main with 8, against main's 32, three rounds alternated, beside P = 1; then one traced
# forward each of main 32 and bulk 8 at P = 2 (the copiers' end, the first remote GEMM0).
# Prediction: bulk 4 level with bulk 8 or worse (4 SMs' bulk copies, 64 KiB in flight, near
# a link's rate); main 8 worse than main 32 (register copies bound by the SMs).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run193.log; BUDGET=${BUDGET:-400}; source scripts/gpu-phases.sh
ngpu=$(nvidia-smi -L | wc -l)
[ "$ngpu" -ge 2 ] || { echo "run 193 needs two GPUs; this machine has $ngpu"; exit 1; }
x="env FLASHDMOE_EXTRA_DEFINES=FDM_BULK_DISPATCH"
l=".carry/flashdmoe run --preset paper-t8192-e32 --backend cuda"
ph warm-main 120 $l --world 2 --back-to-back 5
ph warm-bulk 120 $x $l --world 2 --back-to-back 5
for round in 1 2 3; do
  ph "p1-$round" 15 $l --world 1 --back-to-back 50
  ph "main32-$round" 15 $l --world 2 --back-to-back 50 --remote-copiers 32
  ph "main8-$round" 15 $l --world 2 --back-to-back 50 --remote-copiers 8
  for n in 4 8 12; do ph "bulk$n-$round" 15 $x $l --world 2 --back-to-back 50 --remote-copiers $n; done
done
ph trace-main32 30 $l --world 2 --back-to-back 20 --trace $w/main32.json
ph trace-bulk8 30 $x $l --world 2 --back-to-back 20 --remote-copiers 8 --trace $w/bulk8.json
for f in trace-main32 trace-bulk8; do echo "== $f"; grep -h -E "^(trace|task times|phase|verify|back to back)" $w/$f.log | cut -c1-400; done
for f in $w/p1-*.log $w/main*.log $w/bulk*.log; do
  [ -f "$f" ] && echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"
done
cat $w/summary.txt
