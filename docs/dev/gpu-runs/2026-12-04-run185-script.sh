#!/usr/bin/env bash
# run 185 (session 36, nvidia-h200-x2): main with the third wave as the default (perf-notes
# v49 (a)): the quick set, the T128 grid (E8 and E16 take it: "third wave 32" / "16" in the
# phase-A line; E32 and E128 do not), then the weak-scaling layer (T8192/GPU E32): a traced
# P = 1 run beside run 184's traced P = 2, and A4's remote copiers at P = 2 swept (16, 24,
# 32 = the default quarter, 48; alternated twice; run 62 last swept them, on the v25 kernel:
# 32 best of 32 / 65 / 98). Prediction: the quick set passes; T128 E8 ~0.087 ms, E16 ~0.119
# (run 184's experiment), E32 / E128 level with run 183; the copiers level within 1%.
# Carry: .carry/gpu-check and .carry/flashdmoe built from main at or after this script's
# commit. ~360 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run185.log; BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
ph t128 40 .carry/gpu-check --only "=paper-t128-e8,=paper-t128-e16,=paper-t128-e32,=paper-t128-e128"
ph p1trace 30 .carry/flashdmoe run --preset paper-t8192-e32 --world 1 --backend cuda --back-to-back 50 --trace $w/p1.json
# The sweep needs two GPUs (the copiers exist only where a layer spans GPUs); on a one-GPU
# machine (the x2 kind was withdrawn before the call in session 36) it is skipped.
ngpu=$(nvidia-smi -L | wc -l)
[ "$ngpu" -ge 2 ] && for round in 1 2; do
  for n in 32 16 24 48; do
    ph "copiers$n-$round" 15 .carry/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --back-to-back 50 --remote-copiers $n
  done
done
ph quick 270 .carry/gpu-check --quick
ab_lines t128
grep -hE "^paper" $w/t128.log
grep -ho "third wave [0-9]*\|second wave [0-9]*" $w/t128.log | paste -sd' '
echo "== p1trace"; grep -h -E "^(trace|task times|verify|back to back)" $w/p1trace.log | cut -c1-300
for round in 1 2; do for n in 32 16 24 48; do
  f=$w/copiers$n-$round.log; [ -f $f ] && echo "copiers $n round $round: $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"
done; done
echo "== quick"; [ -f $w/quick.log ] && grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-200
cat $w/summary.txt
