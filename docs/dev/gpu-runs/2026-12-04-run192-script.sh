#!/usr/bin/env bash
# run 192 (session 38, nvidia-h200-x2): the two queued two-GPU experiments in one call, on
# the weak-scaling layer (T8192/GPU E32), every forward verified: the P = 1 baseline, main at
# P = 2 with A4's remote copiers swept (32 = the default quarter, 16, 24, 48; run 185's
# sweep), and FDM_BULK_DISPATCH at P = 2 with 32, 16 and 8 copiers (run 188's P = 2 half),
# alternated over two rounds. Predictions: main's copiers level within 1% (run 62 found 32
# best of 32 / 65 / 98, never fewer tried); the bulk form with 16 or 8 copiers -1 to -3%
# below main's 32 if the SMs bound the copy, level or worse if the link under the GEMMs'
# traffic does. Carry: .carry/gpu-check and .carry/flashdmoe from main. ~330 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run192.log; BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
ngpu=$(nvidia-smi -L | wc -l)
[ "$ngpu" -ge 2 ] || { echo "run 192 needs two GPUs; this machine has $ngpu"; exit 1; }
x="env FLASHDMOE_EXTRA_DEFINES=FDM_BULK_DISPATCH"
l=".carry/flashdmoe run --preset paper-t8192-e32 --backend cuda --back-to-back 50"
# Warm both define sets' NVRTC caches first, so no timed phase pays a compile.
ph warm-main 120 $l --world 2
ph warm-bulk 120 $x $l --world 2
for round in 1 2; do
  ph "p1-$round" 15 $l --world 1
  for n in 32 16 24 48; do ph "main$n-$round" 15 $l --world 2 --remote-copiers $n; done
  for n in 32 16 8; do ph "bulk$n-$round" 15 $x $l --world 2 --remote-copiers $n; done
done
ph p2trace 30 $l --world 2 --back-to-back 20 --trace $w/p2.json
echo "== p2trace"; grep -h -E "^(trace|task times|verify|back to back)" $w/p2trace.log | cut -c1-300
for f in $w/p1-*.log $w/main*.log $w/bulk*.log; do
  [ -f "$f" ] && echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"
done
cat $w/summary.txt
