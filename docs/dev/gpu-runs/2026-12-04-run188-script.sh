#!/usr/bin/env bash
# run 188 (written in session 36, not yet run): experiment FDM_BULK_DISPATCH (perf-notes v49
# (e)): A4's rows moved by bulk copies through shared memory, lane 0 of a warp issuing each
# row's load and store with up to 4 rows a warp in flight, instead of the whole warp's register
# copies. Correct first, on any GPU: the mma.sync engine copies every row in A4 (it reads none
# in place), so its checks exercise the path on one GPU. Then, on two GPUs only: the
# weak-scaling layer at P = 2 (T8192/GPU E32), main against the experiment with 32 (the
# default), 16 and 8 remote copiers, alternated twice, back to back and verified.
# Prediction: the checks pass with the experiment; at P = 2 the experiment with 16 or 8
# copiers at or below main's 0.574 ms (run 184) if the copies' rate holds with fewer SMs
# (the register copies keep ~4 KiB a warp in flight, the bulk form 16 KiB), -1 to -3%;
# level or worse if the rate is bound by the link under the GEMMs' traffic, not the SMs.
# Carry: .carry/gpu-check and .carry/flashdmoe built from main at or after this script's
# commit. ~150 s on one GPU, ~300 s on two, + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run188.log; BUDGET=${BUDGET:-420}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_BULK_DISPATCH"
checks="small Bf16,small F32 Relu,skewed,virtual P=2,virtual P=4,forced timeout + recovery virtual P=2,device-resident"
ph mma_bulk 120 $x .carry/gpu-check --engine mma-sync --quick --only "$checks"
ph mma_t16k_base 30 .carry/gpu-check --engine mma-sync --only "=paper-t16384-e8"
ph mma_t16k_bulk 30 $x .carry/gpu-check --engine mma-sync --only "=paper-t16384-e8"
ngpu=$(nvidia-smi -L | wc -l)
p2=".carry/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --back-to-back 50"
if [ "$ngpu" -ge 2 ]; then
  for round in 1 2; do
    ph "p2-base-$round" 15 $p2
    ph "p2-bulk32-$round" 15 $x $p2
    ph "p2-bulk16-$round" 15 $x $p2 --remote-copiers 16
    ph "p2-bulk8-$round" 15 $x $p2 --remote-copiers 8
    ph "p2-base16-$round" 15 $p2 --remote-copiers 16
  done
fi
echo "== mma_bulk"; [ -f $w/mma_bulk.log ] && grep -E "^\[FAIL|passed|failed" $w/mma_bulk.log | cut -c1-200
for f in mma_t16k_base mma_t16k_bulk; do [ -f $w/$f.log ] && echo "$f: $(grep -hE '^paper' $w/$f.log)"; done
for f in $w/p2-*.log; do [ -f "$f" ] && echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
cat $w/summary.txt
