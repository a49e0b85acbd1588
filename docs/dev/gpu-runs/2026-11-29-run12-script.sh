#!/usr/bin/env bash
# One device call (2026-11-29 session 2): new combine verified + timed, torch baselines with the
# cublas-dense ceiling, and before (d1f64f1, mma.sync) vs after (--engine mma-sync) medians.
set -u -o pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHDMOE_CUDA_HOME=/usr/local/cuda FLASHDMOE_CACHE_DIR=/tmp/fdm-cache
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
start=$(date +%s); budget=${BUDGET:-540}
left() { echo $(( budget - ($(date +%s) - start) )); }
phase() { # name need_s cmd...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "SKIPPED $name: $(left)s left, needs $need" | tee -a "$out/summary.txt"; return; fi
  local t0=$(date +%s)
  timeout "$(( $(left) - 5 ))" "$@" > "$out/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$out/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$out/gpu.txt"
phase quick 120 .carry/gpu-check --quick --json "$out/quick.jsonl"
phase paper 200 .carry/gpu-check --only paper-t --json "$out/paper.jsonl"
phase torch 60 python3 bench/baselines/torch_single.py --variants grouped,graph,dense --iters 20 --warmup 5 \
  --preset paper-t128-e8-cf1 paper-t128-e32-cf1 paper-t128-e128-cf1 paper-t4096-e8-cf1 paper-t4096-e32-cf1 paper-t4096-e128-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e128-cf1 \
  --out "$out/torch-single.jsonl"
sub=paper-t128-e8,paper-t4096-e128,paper-t16384-e128
phase before 40 .carry/gpu-check-before --only $sub --json "$out/before.jsonl"
phase after-mma 40 .carry/gpu-check --engine mma-sync --only $sub --json "$out/after-mma.jsonl"
cd "$out" && for f in *.log; do echo "== $f"; grep -E "^\[(FAIL|ok)\]|PASS|FAIL|Error|error" "$f" | grep -c "^\[ok\]"; grep -E "^\[FAIL|panicked|Error" "$f" | head -5; done
cat summary.txt
