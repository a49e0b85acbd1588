#!/usr/bin/env bash
# run 137 (session 26): the clocks and power under sustained load. Run 136's per-warpgroup
# epilogues (FDM_WG_EPILOGUE) cut the gaps between GEMM tasks by 0.3-0.6 µs and lengthened
# their main loops by 0.7-1.0 µs (forwards level); ping-pong and a completer warp lost the same
# way before (v19, v21). One reading: the chip is held at its power limit while the GEMMs run,
# so a tensor pipe kept busier runs at a lower clock. nvidia-smi samples the SM clock, power
# and the clock-event reasons every 50 ms while each phase runs ~2000 forwards back to back.
# Prediction: under the MoE forward and the dense pair alike the power sits at the board's
# limit (~700 W) with the power-cap reason set and the SM clock below its 1980 MHz boost
# (~1.6-1.8 GHz); with FDM_WG_EPILOGUE the clock is lower than the default's by about the
# main loops' 3%. The per-forward spread (first/last of 2000) says how far a sustained run
# slows from the 10-forward medians the benches report.
# Carry: .carry/flashdmoe (main), .carry/flashdmoe-wg (branch wg-epilogue, fccee78),
# .carry/tile-bench; all `cargo build --release`, stripped.
# Last, the tile bench's 256x192 with A by TMA beside the 128x256 by TMA (N7680 K4096): v28 (a)
# lost 21% with A by `cp.async`; GEMM1's rows come by TMA. Prediction: 256x192 by TMA within
# -5 to +8% of the 128x256 (0.0089 against 0.0117 B/FLOP; its 3 stages and 232-register
# consumers against the 128x256's).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-140}; source scripts/gpu-phases.sh
reasons=clocks_event_reasons.active
nvidia-smi --query-gpu=$reasons --format=csv,noheader >/dev/null 2>&1 || reasons=clocks_throttle_reasons.active
nvidia-smi --query-gpu=name,power.limit,power.max_limit,clocks.max.sm,clocks.sm --format=csv > $w/gpu.txt 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,$reasons --format=csv,noheader,nounits -lms 50 > $w/smi.csv 2>&1 &
smi=$!
mark() { echo "$1 $2 $(date +%s.%N)" >> $w/marks.txt; }
mph() { local l=$1; mark $l start; ph "$@"; mark $l end; }
sleep 1
mph e8-default 40 .carry/flashdmoe run --preset paper-t16384-e8 --backend cuda --back-to-back 2000
FLASHDMOE_EXTRA_DEFINES=FDM_WG_EPILOGUE mph e8-wg 40 .carry/flashdmoe-wg run --preset paper-t16384-e8 --backend cuda --back-to-back 2000
mph dense 40 python3 bench/baselines/torch_single.py --variants dense --iters 2000 --warmup 5 --preset paper-t16384-e8-cf1 --out $w/dense.jsonl
mph tile 40 timeout 60 .carry/tile-bench --iters 2000 --only "128x256 s3 e512 m16384 n8192"
mph tile256 20 timeout 40 .carry/tile-bench --iters 30 --only "n7680 k4096"
mph qwen3 35 .carry/flashdmoe run --preset qwen3-30b-a3b --backend cuda --back-to-back 2000
kill $smi
tar czf $OUT/run137.tgz -C $w .
cat $w/gpu.txt
python3 scripts/gpu-clocks.py $w/smi.csv $w/marks.txt 300
for b in e8-default e8-wg qwen3; do echo "== $b"; grep -iE "kernel:|verif|back to back|per forward" $w/$b.log | cut -c1-220; done
echo "== dense"; grep -hE "cublas-dense|error" $w/dense.log | cut -c1-160
for b in tile tile256; do echo "== $b"; grep -hE "^\||failed" $w/$b.log | cut -c1-130; done
cat $w/summary.txt
