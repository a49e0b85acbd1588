#!/usr/bin/env bash
# Runs docs/dev/gpu-queue.md's checks in one device call, each phase under its own share of a
# time budget (BUDGET seconds, default 540), logs packed into $OUT/gpu-queue.tgz and a short
# table last. Build here first (no Rust on the GPU machine):
#   cargo build --release -p flashdmoe-bench --bin gpu-check -p flashdmoe --bin flashdmoe && mkdir -p .carry \
#     && cp target/release/gpu-check target/release/flashdmoe .carry/   # flashdmoe: the preset and nccl phases
#   python3 -m maturin build -m flashdmoe-py/Cargo.toml --profile wheel -o .carry/whl   # optional: the PyTorch package
#   cargo build --release -p flashdmoe-cuda --example tile-bench && cp target/release/examples/tile-bench .carry/   # the tiles phases
# then, with `.carry` carried: `bash scripts/gpu-queue.sh`. ONLY=a,b runs the phases whose names
# contain a or b (a2-marks, tile-check, tile-bench, ds-tile, qwen3-tile, oss-tile, resident, quick, preset, models,
# mixtral-trace, copiers, python, binding, paper, grid, torch, launch, nccl).
set -u -o pipefail
out=${OUT:-gpu-queue-out}; w=$(mktemp -d); mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu-env.sh"
start=$(date +%s); budget=${BUDGET:-540}
left() { echo $(( budget - ($(date +%s) - start) )); }
pack() { tar czf "$out/gpu-queue.tgz" -C "$w" . ; }
trap pack EXIT
wanted() { [ -z "${ONLY:-}" ] && return 0; local IFS=,; for o in $ONLY; do [[ $1 == *"$o"* ]] && return 0; done; return 1; }
phase() { # name need_s cmd...
  local name=$1 need=$2; shift 2
  wanted "$name" || return 0
  if [ "$(left)" -lt "$need" ]; then echo "$name: SKIPPED ($(left) s left, needs $need)" >> "$w/summary.txt"; return; fi
  local t0=$(date +%s)
  timeout "$(( $(left) - 5 ))" "$@" > "$w/$name.log" 2>&1; local rc=$?
  local ok fail; ok=$(grep -c '^\[ok\]' "$w/$name.log"); fail=$(grep -c '^\[FAIL\]' "$w/$name.log")
  echo "$name: rc=$rc $(( $(date +%s) - t0 )) s, $ok ok, $fail FAIL" >> "$w/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$w/gpu.txt" 2>&1
# Phase A on the E 128 / 64 / 256 layers, timed and verified: the detail lines' "tokens" mark
# splits A2 into the warps' half ("tokens" - "routed") and the chunks' ("top-k" - "tokens")
# (perf-notes v31 (b)-(f); runs 97-99).
phase a2-marks 150 .carry/gpu-check --only "paper-t128-e128,paper-t4096-e128,preset qwen3-30b-a3b,preset olmoe-1b-7b,preset deepseek-v3 routed part" --json "$w/a2-marks.jsonl"
# 256-row tiles behind a chosen tile (docs/dev/whole-expert-tiles.md; run 91 measured them 1.5-1.7x
# slower, perf-notes v30 (a): kept to re-run after a change to the producer's A loads):
# the GPU check's four tile cases against the oracle, the tile bench's one-expert shapes (128x128
# against 256x64 at 150 and 256 rows, K 7168), then DeepSeek-V3 back to back with the backend's
# tile and with 256x64, alternated, the first 256x64 run traced (each run verified).
phase tile-check 40 .carry/gpu-check --quick --only tile --json "$w/tile-check.jsonl"
[ -x .carry/tile-bench ] && phase tile-bench 60 .carry/tile-bench --only "k7168 swiglu" --iters 20
if [ -x .carry/flashdmoe ]; then
  for r in 1 2; do
    tr=(); [ "$r" = 1 ] && tr=(--trace "$w/ds-tile.json")
    phase ds-tile-base-$r 90 .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 10
    phase ds-tile-256-$r 90 .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 10 --tile 256x64 "${tr[@]}"
  done
  # Qwen3-30B-A3B (issue 16's widest gap, 2.3x its floor: small experts, I 768) traced with
  # either tile: where its task time goes (no trace of it since run 40).
  phase qwen3-tile-base 30 .carry/flashdmoe run --preset qwen3-30b-a3b --backend cuda --back-to-back 20 --trace "$w/qwen3.json"
  phase qwen3-tile-256 30 .carry/flashdmoe run --preset qwen3-30b-a3b --backend cuda --back-to-back 20 --tile 256x64 --trace "$w/qwen3-256.json"
  # gpt-oss-20b: ~512 rows an expert of 50 MB in four 128-row tiles, two 256-row ones.
  phase oss-tile-base 30 .carry/flashdmoe run --preset gpt-oss-20b --backend cuda --back-to-back 40
  phase oss-tile-256 30 .carry/flashdmoe run --preset gpt-oss-20b --backend cuda --back-to-back 40 --tile 256x64
fi
# The device-resident forward, routing given on the GPU and the kernel-side epoch first: the
# newest unverified kernel changes; then every quick check (the host path reads the epoch back).
phase resident 40 .carry/gpu-check --quick --only device-resident --json "$w/resident.jsonl"
phase quick 150 .carry/gpu-check --quick --json "$w/quick.jsonl"
# A gated preset through the CLI: its `kernel:` line must name a wgmma image (no fallback).
if [ -x .carry/flashdmoe ]; then
  phase preset 40 .carry/flashdmoe run --preset qwen3-30b-a3b --world 1 --dropless --backend cuda --back-to-back 20
fi
# GEMM0 in column groups (perf-notes v24 (e)): Mixtral (groups of 6) and Qwen3 (no groups)
# against PyTorch's grouped layer in one command, both back to back.
if [ -x .carry/flashdmoe ]; then
  phase models 150 .carry/flashdmoe bench --backend cuda --preset mixtral-8x7b qwen3-30b-a3b --baselines torch-single --iters 10 --warmup 3 --out "$w/models"
  # Its GEMM0 tasks' durations (v24: 67.6 us a task before the groups).
  phase mixtral-trace 60 .carry/flashdmoe run --preset mixtral-8x7b --world 1 --dropless --backend cuda --trace "$w/mixtral.json"
fi
# NVLink egress (issue 13 item 4, perf-notes v24): weak scaling at P = 2 with a quarter (the
# default), half and three quarters of each rank's processors copying the rows bound for the
# other GPU first. Two GPUs or more only (nvidia-h200-x2).
if [ -x .carry/flashdmoe ] && [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
  for n in 32 65 98; do
    phase copiers-$n 40 .carry/flashdmoe run --preset paper-t8192-e32 --world 2 --backend cuda --remote-copiers $n --back-to-back 20 --trace "$w/copiers-$n.json"
  done
fi
if ls .carry/whl/*.whl >/dev/null 2>&1; then
  phase python 90 bash -c 'python3 -m pip install -q --no-deps --force-reinstall .carry/whl/*.whl && python3 -m pytest -q -rs -p no:cacheprovider flashdmoe-py/tests/test_cuda.py'
  phase binding 60 python3 flashdmoe-py/benchmarks/binding.py --tokens 4096 --out "$w/binding.json"
  # PyTorch's layer of the same shape in the same call (issue 15 item 5): binding.py's layer is
  # torch_single.py's default, the paper layer at T4096 E8, dropless.
  phase binding-torch 60 python3 bench/baselines/torch_single.py --variants grouped,graph --iters 20 --warmup 5 --out "$w/binding-torch.jsonl"
fi
phase paper 60 .carry/gpu-check --only paper-t128-e8,paper-t4096-e8,paper-t16384-e8 --json "$w/paper.jsonl"
# The whole paper grid and PyTorch's on the same machine, same call (docs/benchmarks.md).
phase grid 150 .carry/gpu-check --only paper-t --json "$w/grid.jsonl"
phase torch 150 python3 bench/baselines/torch_single.py --variants grouped,graph,dense --iters 20 --warmup 5 \
  --preset paper-t128-e8-cf1 paper-t128-e32-cf1 paper-t128-e128-cf1 paper-t4096-e8-cf1 paper-t4096-e32-cf1 paper-t4096-e128-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e128-cf1 --out "$w/torch-single.jsonl"
# What a launch costs by itself (perf-notes v10), when built: cargo build --release -p
# flashdmoe-cuda --example launch-cost && cp target/release/examples/launch-cost .carry/
if [ -x .carry/launch-cost ]; then phase launch 30 .carry/launch-cost --launches 30; fi
# NCCL found through PyTorch's wheel (docs/dev/process-model.md), when the CLI is carried.
if [ -x .carry/flashdmoe ]; then phase nccl 10 bash -c 'eval "$(scripts/install-nccl.sh)" && .carry/flashdmoe info'; fi
cp "$w/summary.txt" "$out/" 2>/dev/null
for f in "$w"/*.log; do grep -E '^\[FAIL\]|FAILED|panicked' "$f" | head -5 | cut -c1-600; done
grep -h -E '^\[(ok|FAIL)\] tile' "$w"/tile-check.log 2>/dev/null | cut -c1-300
grep -h -E '^(ok|FAIL)' "$w"/tile-bench.log 2>/dev/null | cut -c1-150
for f in "$w"/ds-tile-*.log; do [ -f "$f" ] && echo "$(basename "$f" .log): $(grep -h -o -E '^(kernel: [^ ]+|verify: [A-Z]+|back to back: [0-9.]+ ms)' "$f" | tr '\n' ' ')"; done
for f in "$w"/qwen3-tile-*.log "$w"/oss-tile-*.log; do [ -f "$f" ] && echo "$(basename "$f" .log): $(grep -h -o -E '^(kernel: [^ ]+|verify: [A-Z]+|back to back: [0-9.]+ ms)' "$f" | tr '\n' ' ')"; done
grep -h -E '^(trace|task times)' "$w"/ds-tile-256-1.log "$w"/qwen3-tile-*.log 2>/dev/null | cut -c1-300
grep -h -E '^\[ok\] device-resident' "$w"/resident.log 2>/dev/null | cut -c1-1500
tail -n 2 "$w"/binding.log 2>/dev/null
grep -h -E "graph|eager" "$w"/binding-torch.log 2>/dev/null | cut -c1-110 | head -3
grep -h -i -E "nccl|error" "$w"/nccl.log 2>/dev/null | head -5
grep -h -E "^kernel:|^verify:|^back to back:" "$w"/preset.log 2>/dev/null | cut -c1-300
grep -h -E "^\[ok\] paper" "$w"/paper.log 2>/dev/null | cut -c1-400
grep -h -E "^(mixtral|qwen3)|flashdmoe-cuda|graph" "$w"/models.log 2>/dev/null | grep -v "^\[" | cut -c1-150
grep -h -E "^(kernel|task times|back to back):" "$w"/mixtral-trace.log 2>/dev/null | cut -c1-400
for f in "$w"/copiers-*.log; do [ -f "$f" ] && echo "$(basename "$f" .log): $(grep -h -o -E '^(verify: [A-Z]+|back to back: [0-9.]+ ms)' "$f" | tr '\n' ' ')"; done
sed -n '/median ms/,$p' "$w"/grid.log 2>/dev/null | head -14
grep -h -E "graph|cublas-dense" "$w"/torch.log 2>/dev/null | cut -c1-110 | head -20
cat "$w/summary.txt"
