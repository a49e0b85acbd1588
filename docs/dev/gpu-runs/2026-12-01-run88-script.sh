#!/usr/bin/env bash
# run 88 (session 15): a consumer warpgroup whose 64 rows all lie past a task's valid rows issues
# no wgmma (tile_wgmma.cuh consume(); an expert's last 128-row tile holding <= 64 rows: about a
# third of DeepSeek-V3's row tiles at T 4096). New build in .carry/, main dd8f9ce in .carry/base/.
# (1) the new build's gpu-check --quick (every image against the oracle) and the tile bench's
# f16 tile with a 3-row last tile; (2) DeepSeek-V3 back to back, base then new (verified), the
# new one traced; (3) Qwen3-30B-A3B, OLMoE, gpt-oss-20b alternated twice.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-580}; source scripts/gpu-phases.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > $w/gpu.txt 2>&1
ph quick 200 .carry/gpu-check --quick --json $w/quick.jsonl
ph tile 30 .carry/tile-bench --only "f16 128x256 gather s4 m4099,bf16 128x128 gather s4 m8187" --iters 10
ph ds-base 100 .carry/base/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 20
ph ds-new 100 .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 20 --trace $w/trace-ds.json
gzip -f $w/trace-ds.json 2>/dev/null
for r in 1 2; do for side in base new; do for p in qwen3-30b-a3b olmoe-1b-7b gpt-oss-20b; do
  d=.carry; [ $side = base ] && d=.carry/base
  ph $p-$side-$r 25 $d/flashdmoe run --preset $p --backend cuda --back-to-back 30
done; done; done
tar czf $OUT/run88.tgz -C $w .
grep -h -E "^\[FAIL" $w/quick.log | cut -c1-300; grep -c "^\[ok\]" $w/quick.log | sed 's/^/quick ok: /'
grep -h -E "^ok|FAIL|error" $w/tile.log | cut -c1-150
for f in $w/ds-*.log $w/*-base-*.log $w/*-new-*.log; do echo "$(basename $f .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' $f | tr '\n' ' ')"; done
grep -E '^(trace|task times)' $w/ds-new.log | cut -c1-300
cat $w/summary.txt
