#!/usr/bin/env bash
# run 176 (session 34, right after run 175): run 175 put FDM_SCHED_EARLY at -3% on T128 E8
# (0.101/0.100 -> 0.098/0.098 ms; gaps before GEMM0 5.1 -> 2.7 us), -1.5% on T128 E32 and
# +0.9% on T16384 E128 (1.083 against 1.073 ms, inside one host-path run's spread). Before it
# becomes the default: the large shapes sustained at the power cap (2000 device-resident
# forwards, alternated) and DeepSeek-V3 once each side. Prediction: level at T16384 (the
# first wave's tasks run ~25 us there, longer than the signals' 14 us), DeepSeek-V3 level.
# Carry: .carry/gpu-check from main at 8fa82b6 (session 33's build). ~340 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$OUT/run176; mkdir -p $w; BUDGET=${BUDGET:-400}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_SCHED_EARLY"
cases="=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128"
clocks_start
mph sus-early 60 $x .carry/gpu-check --sustain 2000 --only "$cases"
mph sus-base 60 .carry/gpu-check --sustain 2000 --only "$cases"
mph sus-early2 60 $x .carry/gpu-check --sustain 2000 --only "$cases"
mph sus-base2 60 .carry/gpu-check --sustain 2000 --only "$cases"
mph dsv3-early 90 $x .carry/gpu-check --only "=preset deepseek-v3"
mph dsv3-base 90 .carry/gpu-check --only "=preset deepseek-v3"
clocks_stop > $w/clocks.txt
cat $w/clocks.txt
for f in sus-early sus-base sus-early2 sus-base2 dsv3-early dsv3-base; do
  [ -f $w/$f.log ] || continue
  echo "== $f"
  grep -h "back to back" $w/$f.log | grep -o "^\[[a-zA-Z]*\] [^(]*\|back to back [0-9.]* ms a forward over [0-9]*\|back to back [0-9.]* ms\|output digest [0-9a-f]*" | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'
  grep -hE "^(preset|paper)" $w/$f.log | cut -c1-100
done
cat $w/summary.txt
