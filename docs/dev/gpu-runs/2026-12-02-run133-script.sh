#!/usr/bin/env bash
# run 133 (session 25): why run 131's ping-pong lost, and the model presets beside PyTorch in
# one call (issue 16's table).
# (1) Tile bench at N 8192 K 4096: the cooperative 128x256 (s3 e512, s4 e256), ping-pong
#     128x128, the cooperative 128x128 (two 64x128 warpgroups: ping-pong's bytes a FLOP
#     without the turn-taking) and ping-pong with A by TMA (one box a k-tile, the producer's
#     cp.async out of the way). Prediction: the cooperative 128x128 near ping-pong's 369
#     (then the tile's bytes a FLOP are the cause, not the turn-taking); TMA A within 5% of
#     ping-pong's cp.async A. Then ncu of the three 128x128 forms (tensor pipe, L2, stalls).
# (2) Presets (the defaults of 1a464f8, run 132) and torch_single.py's grouped graph for the
#     same layers: Kimi-K2's and DeepSeek-V3's routed parts, gpt-oss-20b, Mixtral-8x7B.
# Carry: .carry/gpu-check, .carry/tile-bench (this commit, stripped).
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-560}; source scripts/gpu-phases.sh
ph tile 60 timeout 100 .carry/tile-bench --iters 20 --only "n8192 k4096"
for v in "128x128 s6 pp m16384 n8192:pp" "128x128 tma-a s6 pp m16384 n8192:pptma" "128x128 s4 m16384 n8192:coop128"; do
  sel=${v%%:*}; name=${v##*:}
  ph ncu-$name 45 ncu --clock-control none -k regex:fdm_tile_bench --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section ComputeWorkloadAnalysis \
    --section SchedulerStats -o $w/$name .carry/tile-bench --iters 2 --only "$sel"
  [ -f $w/$name.ncu-rep ] && ncu -i $w/$name.ncu-rep --page details > $w/$name-details.txt 2>&1
done
ph presets 130 .carry/gpu-check --only "=preset gpt-oss-20b,=preset mixtral-8x7b,=preset deepseek-v3 routed part" --json $w/presets.jsonl
ph kimi 150 .carry/gpu-check --only "=preset kimi-k2 routed part" --json $w/kimi.jsonl
ph torch 100 python3 bench/baselines/torch_single.py --variants graph,dense --iters 10 --warmup 3 \
  --preset gpt-oss-20b mixtral-8x7b deepseek-v3-routed kimi-k2-routed --out $w/torch.jsonl
tar czf $OUT/run133.tgz -C $w .
grep -hE "^ok|^FAIL|^\|" $w/tile.log | cut -c1-130
for n in pp pptma coop128; do echo "== $n"; grep -E "Duration|L2 Cache Throughput|Compute \(SM\) Throughput|Executed Ipc Active|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Tensor is|highest-utilized" $w/$n-details.txt 2>/dev/null | head -12; done
for b in presets kimi; do grep -hE "^(preset|paper)" $w/$b.log 2>/dev/null | sed "s/^/$b /" | cut -c1-100; done
grep -hE "graph|cublas-dense" $w/torch.log | cut -c1-120
ab_lines presets kimi
cat $w/summary.txt
