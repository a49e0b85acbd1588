#!/usr/bin/env bash
# A/B of a kernel change on one GPU, in one device call: the same gpu-check cases and tile-bench
# configurations with the binaries of the commit before (.carry/base/) and after (.carry/),
# alternated (base, new, base, new) so that clock or thermal drift shows as a spread rather than
# as a difference; then the new binary's --quick correctness checks. Every timed case is
# verified against the oracle by gpu-check itself. Build here first (no Rust on the GPU machine):
#   git stash; cargo build --release -p flashdmoe-bench --bin gpu-check -p flashdmoe-cuda --example tile-bench
#   mkdir -p .carry/base && cp target/release/gpu-check target/release/examples/tile-bench .carry/base/
#   git stash pop; (the same build) && cp target/release/gpu-check target/release/examples/tile-bench .carry/
# Knobs: CASES (gpu-check --only, default the paper layer at T 128/4096/16384, E 8), TILES
# (tile-bench --only substrings, comma-separated; TILES= runs none), ROUNDS (default 2), QUICK=0 skips --quick, TORCH=0
# skips the PyTorch rows,
# BUDGET seconds (default 540). Logs under $OUT (default ./gpu-ab-out); a table last.
set -u -o pipefail
out=${OUT:-gpu-ab-out}; mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu-env.sh"
cases=${CASES:-paper-t128-e8,paper-t4096-e8,paper-t16384-e8}
tiles=${TILES-bf16 128x256 s3 e512 m16384,bf16 128x256 gather s4 m16347}
start=$(date +%s); budget=${BUDGET:-540}
left() { echo $((budget - ($(date +%s) - start))); }
run() { # label seconds cmd...: logged to $out/label.log, skipped when the budget is spent
  local label=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "$label: SKIPPED ($(left) s left)" | tee -a "$out/summary.txt"; return; fi
  timeout "$(($(left) - 5))" "$@" >>"$out/$label.log" 2>&1
  echo "$label: exit $? ($(left) s left)" >>"$out/summary.txt"
}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv >"$out/gpu.txt" 2>&1
for round in $(seq "${ROUNDS:-2}"); do
  for side in base new; do
    dir=.carry; [ "$side" = base ] && dir=.carry/base
    run "check-$side" 120 "$dir/gpu-check" --only "$cases" --json "$out/check-$side-$round.jsonl"
    tl=(); [ -n "$tiles" ] && IFS=, read -r -a tl <<<"$tiles"
    for t in "${tl[@]}"; do run "tile-$side" 60 "$dir/tile-bench" --only "$t" --iters 20; done
  done
done
[ "${QUICK:-1}" = 1 ] && run quick 150 .carry/gpu-check --quick --json "$out/quick.jsonl"
# PyTorch's layer and the dense cuBLAS pair of the same FLOPs, same call (TORCH=0 skips).
[ "${TORCH:-1}" = 1 ] && run torch 60 python3 bench/baselines/torch_single.py --variants graph,dense --iters 20 \
  --warmup 5 --preset paper-t16384-e8-cf1 paper-t4096-e8-cf1 --out "$out/torch.jsonl"
# The table: per case and side, each round's median and the trace's task means.
for side in base new; do
  grep -h '^\[ok\]\|^\[FAIL\]' "$out/check-$side.log" 2>/dev/null | sed -E "s/^(\[[A-Z]+\]) ([^ ]+).*kernel ([0-9]+us).*busy ([0-9]+%).*gemm0 n=[0-9]+ mean ([0-9.]+us).*gemm1 n=[0-9]+ mean ([0-9.]+us).*back to back ([0-9.]+ ms).*/$side \1 \2 kernel \3 busy \4 gemm0 \5 gemm1 \6 b2b \7/" | cut -c1-160
  grep -h -E '^paper|^check' "$out/check-$side.log" 2>/dev/null | grep -E ' ok | FAIL |median' | sed "s/^/$side /" | cut -c1-110
  grep -h -E '^ok|TFLOP' "$out/tile-$side.log" 2>/dev/null | sed "s/^/$side tile: /" | cut -c1-160
done
grep -h -E '^\[FAIL\]' "$out"/quick.log 2>/dev/null | cut -c1-400
grep -h -E "graph|cublas-dense" "$out"/torch.log 2>/dev/null | cut -c1-110
grep -c '^\[ok\]' "$out"/quick.log 2>/dev/null | sed 's/^/quick ok: /'
cat "$out/summary.txt"
