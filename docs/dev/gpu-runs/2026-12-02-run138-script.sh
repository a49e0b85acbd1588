#!/usr/bin/env bash
# run 138 (session 26, right after run 137 on the same machine): run 137's sustained ratio
# again (ours 0.982 ms median over 2000 forwards against the dense pair's 0.853 over 2000
# iterations: 1.151x, where the 10-forward benches read 1.164x), and T16384 E32 the same way,
# with the clocks sampled (scripts/gpu-clocks.py).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-110}; source scripts/gpu-phases.sh
reasons=clocks_event_reasons.active
nvidia-smi --query-gpu=$reasons --format=csv,noheader >/dev/null 2>&1 || reasons=clocks_throttle_reasons.active
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,$reasons --format=csv,noheader,nounits -lms 50 > $w/smi.csv 2>&1 &
smi=$!
mark() { echo "$1 $2 $(date +%s.%N)" >> $w/marks.txt; }
mph() { local l=$1; mark $l start; ph "$@"; mark $l end; }
mph dense 25 python3 bench/baselines/torch_single.py --variants dense --iters 2000 --warmup 5 --preset paper-t16384-e8-cf1 paper-t16384-e32-cf1 --out $w/dense.jsonl
mph e8 25 .carry/flashdmoe run --preset paper-t16384-e8 --backend cuda --back-to-back 2000
mph e32 25 .carry/flashdmoe run --preset paper-t16384-e32 --backend cuda --back-to-back 2000
kill $smi
tar czf $OUT/run138.tgz -C $w .
python3 scripts/gpu-clocks.py $w/smi.csv $w/marks.txt 300
for b in e8 e32; do echo "== $b"; grep -iE "verif|back to back|per forward" $w/$b.log | cut -c1-200; done
echo "== dense"; grep -hE "cublas-dense|error" $w/dense.log | cut -c1-160
cat $w/summary.txt
