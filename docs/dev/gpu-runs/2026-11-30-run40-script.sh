#!/usr/bin/env bash
# run 40: where the tile engine's time goes against cuBLAS (ncu, one launch each, clocks untouched),
# the MoE kernel at T16384 E8 under ncu, and traces (T4096 E32, Qwen3 T4096, T16384 E8) tarred.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); mkdir -p $w/traces
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy --section InstructionStats"
t0=$(date +%s)
timeout 120 ncu --clock-control none $S -k regex:tile --launch-skip 1 --launch-count 1 -o $w/bench .carry/tma/tile-bench --only "s3 e512 m16384 n8192 k4096 plain" --iters 2 > $w/ncu-bench.log 2>&1; echo "ncu bench rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
t0=$(date +%s)
timeout 120 ncu --clock-control none $S -k regex:'gemm|xmma|sm90|cutlass' --launch-skip 2 --launch-count 1 -o $w/torch python3 bench/baselines/torch_mm.py --shape 16384 8192 4096 > $w/ncu-torch.log 2>&1; echo "ncu torch rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
t0=$(date +%s)
timeout 150 ncu --clock-control none $S -k regex:fdm_moe --launch-skip 2 --launch-count 1 -o $w/moe .carry/gpu-check --only "paper-t16384-e8" --iters 3 > $w/ncu-moe.log 2>&1; echo "ncu moe rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
for r in bench torch moe; do [ -f $w/$r.ncu-rep ] && ncu --import $w/$r.ncu-rep --page details --print-units base > $OUT/ncu-$r.txt 2>&1; done
for p in paper-t4096-e32 paper-t16384-e8; do
  t0=$(date +%s); timeout 40 .carry/flashdmoe run --preset $p --world 1 --backend cuda --trace $w/traces/$p.json > $w/traces/$p.log 2>&1; echo "trace $p rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
done
t0=$(date +%s); timeout 90 .carry/flashdmoe run --preset qwen3-30b-a3b --tokens 4096 --world 1 --dropless --backend cuda --trace $w/traces/qwen3.json > $w/traces/qwen3.log 2>&1; echo "trace qwen3 rc=$? $(( $(date +%s)-t0 )) s" >> $w/summary.txt
tar czf $OUT/run40.tgz -C $w .
cp $w/summary.txt $OUT/
grep -h -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Registers Per|Cluster|Grid Size|Block Size|Dynamic Shared|Issue Slots Busy|No Eligible|Active Warps Per" $OUT/ncu-*.txt | head -60
grep -h -E "busy|PASS|FAIL|error" $w/traces/*.log | cut -c1-250
cat $w/summary.txt
