#!/usr/bin/env bash
# run 81 (nvidia-h200): (1) the tile bench's 128x256 steady state again (target 1, after run 80
# put it at 641-660 TFLOP/s), cuBLAS in the same call; (2) ncu on 256x192 against 128x256 at
# M16384 N7680 K4096 (why 256x192 lost 21% in run 80); (3) traces of the paper layer on main
# (where the time goes now); (4) main against 880c6dc on T16384 E8, base first this time (run 80
# had main 1.5% slower with the same SASS).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); start=$(date +%s); budget=${BUDGET:-420}
left() { echo $((budget - ($(date +%s) - start))); }
ph() { local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label SKIPPED ($(left) s left)" >> $w/summary.txt; return; fi
  timeout $(( $(left) - 5 )) "$@" > $w/$label.log 2>&1; echo "$label rc=$? left $(left)" >> $w/summary.txt; }
for r in 1 2 3; do
  ph tile-n8192-$r 30 .carry/tile-bench --only "bf16 128x256 s3 e512 m16384 n8192 k4096 plain" --iters 50
  ph tile-n7680-$r 30 .carry/tile-bench --only "bf16 128x256 s3 e512 m16384 n7680 k4096 plain" --iters 50
done
ph torchmm 40 python3 bench/baselines/torch_mm.py --shape 16384 7680 4096 --shape 16384 8192 4096 --iters 50
for r in 1 2; do for side in b m; do
  ph paper-t16384-e8-$side-$r 15 .carry/$side/flashdmoe run --preset paper-t16384-e8 --backend cuda --back-to-back 100
done; done
for p in paper-t16384-e8 paper-t4096-e8 paper-t4096-e32 paper-t128-e8; do
  ph trace-$p 20 .carry/m/flashdmoe run --preset $p --backend cuda --trace $w/trace-$p.json
  gzip -f $w/trace-$p.json 2>/dev/null
done
i=0
for cfg in "bf16 256x192 s3 m16384 n7680 k4096 plain" "bf16 128x256 s3 e512 m16384 n7680 k4096 plain"; do
  i=$((i+1))
  ph ncu-$i 70 ncu --clock-control none --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section SourceCounters --import-source no -f -o $w/tile-$i .carry/tile-bench --only "$cfg" --iters 1
  ncu -i $w/tile-$i.ncu-rep --page source --csv --print-source sass 2> $w/tile-$i-sass.err | gzip > $w/tile-$i-sass.csv.gz
  ncu -i $w/tile-$i.ncu-rep --page details > $w/tile-$i-details.txt 2>&1
  rm -f $w/tile-$i.ncu-rep
done
tar czf $OUT/run81.tgz -C $w .
grep -h -E '^ok|^FAIL' $w/tile-n*.log | cut -c1-120
grep -h torch.mm $w/torchmm.log
for f in $w/paper*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
for f in $w/trace-*.log; do echo "== $(basename $f .log)"; grep -E -i 'verify|busy|utilis|median|gap' $f | head -8; done
for i in 1 2; do grep -E 'Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Warp Cycles Per Issued|Issued Ipc' $w/tile-$i-details.txt | head -9; done
tail -4 $w/summary.txt
