#!/usr/bin/env bash
# run 144 (session 27): (1) issue 13's and 16's rows with the new default (the paper layers'
# 128x256 tiles on 4 stages, be6ac9a) beside PyTorch's grouped graph and the dense pair, every
# side sustained (2000 forwards or iterations), clocks sampled: the same-run table run 140 gave
# for 3 stages. (2) The mma.sync engine's open combine timeout (docs/dev/gpu-queue.md): the
# T128 E8 case on the mma.sync engine in a loop with FDM_DEBUG_COMBINE_TIMEOUT (a timeout names
# the (group, column) combine counter off its count), then the forced-timeout recovery case.
# Prediction (1): T16384 E8 0.96-0.98x run 140's 0.965 ms, E32 0.98x, E128 0.975x; T4096 E32
# -4%; PyTorch and the dense pair as in run 140 (+-2%). (2) 0-2 failures in ~25 loops (1 in 4
# in run 84's case; rarer at T128 E8).
# Then compute-sanitizer's racecheck on the T128 E8 case on the mma.sync engine (at most 65 s).
# Carry: .carry/gpu-check (c332cde: be6ac9a + the diagnostic). ~450 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-450}; source scripts/gpu-phases.sh
cases="=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128,=paper-t16384-e8,=paper-t16384-e32,=paper-t16384-e128,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
clocks_start
mph ours 200 .carry/gpu-check --sustain 2000 --only "$cases" --json $w/ours.jsonl
mph torch 80 python3 bench/baselines/torch_single.py --variants graph,dense --iters 2000 --warmup 20 \
  --preset paper-t4096-e8-cf1 paper-t4096-e32-cf1 paper-t4096-e128-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e128-cf1 qwen3-30b-a3b olmoe-1b-7b \
  --out $w/torch.jsonl
clocks_stop > $w/clocks.txt
export FLASHDMOE_EXTRA_DEFINES=FDM_DEBUG_COMBINE_TIMEOUT
for i in $(seq 1 40); do
  [ "$(left)" -lt 110 ] && break
  ph "mma_t128_$i" 30 .carry/gpu-check --engine mma-sync --only "=paper-t128-e8"
  [ $((i % 4)) -eq 0 ] && ph "mma_rec_$i" 30 .carry/gpu-check --quick --engine mma-sync --only "=forced timeout + recovery virtual P=2"
done
unset FLASHDMOE_EXTRA_DEFINES
# Shared-memory hazards of the mma.sync processor, if any (a spin-waiting persistent kernel may
# run very slowly under the tool: the phase's timeout bounds it).
ph racecheck 70 timeout 65 compute-sanitizer --tool racecheck --racecheck-report hazard .carry/gpu-check --engine mma-sync --only "=paper-t128-e8" --iters 1
tar czf $OUT/run144.tgz -C $w .
cat $w/clocks.txt
grep -hE "^(preset|paper)" $w/ours.log | cut -c1-100
grep -hE "graph|cublas-dense" $w/torch.log | grep -v note | cut -c1-110
echo "mma loops: $(ls $w/mma_*.log | wc -l) runs; ok $(cat $w/mma_*.log | grep -c '^\[ok\]'), FAIL $(cat $w/mma_*.log | grep -c '^\[FAIL\]')"
grep -h -A3 "^\[FAIL\]" $w/mma_*.log | cut -c1-600 | head -40
grep -hiE "timed out|timeout|seen" $w/mma_*.log | grep -v "^\[ok\]" | sort | uniq -c | head -20
echo "== racecheck"; grep -E "RACECHECK|hazard|ERROR|error|\[ok\]|\[FAIL\]" $w/racecheck.log | cut -c1-300 | head -20
tail -4 $w/summary.txt
