#!/usr/bin/env bash
# run 164 (session 31): experiment FDM_B_KPAIRS (tile_wgmma.cuh `produce`): the producer issues
# the B boxes of k-tiles kt and kt + 1 together (kt even), so that the two 128-byte pieces of
# each weight row two k-tiles read (DeepSeek-V3: rows 14 KiB apart, each box 256 such pieces)
# reach DRAM together rather than ~0.7 µs apart. Question (perf-notes v44 (g)): does the
# weights' access pattern (128 bytes a DRAM row at a time) cap the DRAM rate of the layers that
# stream them (DeepSeek-V3 3.35 TB/s against ~4.3 reachable)? Run 162's D = 5 prefetch sent the
# same adjacent pieces together and lost 19%, but as prefetches (which cost even where they
# hit), so it did not answer this.
# Prediction: if the pattern caps the rate, DeepSeek-V3's GEMM0 main loops -5 to -15% and the
# forward -4 to -10%, T16384 E128 -3 to -8%; if not, level to +2% (a stage freed a k-tile
# later every other step), Qwen3 level. Carry: .carry/gpu-check built with the experiment
# (`git apply docs/dev/gpu-runs/2026-12-03-run164-kpairs.patch`; removed after the run:
# perf-notes v44 (g)). ~470 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-500}; source scripts/gpu-phases.sh
kp="env FLASHDMOE_EXTRA_DEFINES=FDM_B_KPAIRS"
checks="=small column groups,=virtual P=2 column groups,=combine stream small top-8,=forced timeout + recovery virtual P=2"
ph checks 40 $kp .carry/gpu-check --quick --only "$checks"
ph dsv3-base 85 .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-kp 85 $kp .carry/gpu-check --only "=preset deepseek-v3"
ph e128-base 25 .carry/gpu-check --only "=paper-t16384-e128"
ph e128-kp 25 $kp .carry/gpu-check --only "=paper-t16384-e128"
ph qwen3-base 25 .carry/gpu-check --only "=preset qwen3-30b-a3b"
ph qwen3-kp 25 $kp .carry/gpu-check --only "=preset qwen3-30b-a3b"
ph dsv3-kp2 85 $kp .carry/gpu-check --only "=preset deepseek-v3"
ph dsv3-base2 85 .carry/gpu-check --only "=preset deepseek-v3"
tar czf $OUT/run164.tgz -C $w .
echo "== checks"; grep -E "^\[|passed|failed" $w/checks.log | cut -c1-150
for f in dsv3-base dsv3-kp dsv3-kp2 dsv3-base2 e128-base e128-kp qwen3-base qwen3-kp; do
  [ -f $w/$f.log ] || continue
  echo "== $f"; grep -o -E "output digest [0-9a-f]+|spill fallback [A-Z_,=0-9]*|in-task µs \([^)]*\): [^;]*|back to back [0-9.]+ ms" $w/$f.log | tr '\n' ' '; echo
  grep -h "^preset\|^paper" $w/$f.log
done
cat $w/summary.txt
