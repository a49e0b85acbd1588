#!/usr/bin/env bash
# One device call (2026-11-29 session 4): the new upload path (parallel encode, staging) checked on
# a quick subset and the paper cases (A2 vs run 12), then the real-model grid against PyTorch.
set -u -o pipefail
out=${OUT:-/tmp/out}; w=/tmp/w; mkdir -p "$out" "$w"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHDMOE_CUDA_HOME=/usr/local/cuda FLASHDMOE_CACHE_DIR=/tmp/fdm-cache
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
start=$(date +%s); budget=${BUDGET:-440}
left() { echo $(( budget - ($(date +%s) - start) )); }
phase() { # name need_s cmd...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "SKIPPED $name: $(left)s left, needs $need" | tee -a "$w/summary.txt"; return; fi
  local t0=$(date +%s)
  timeout "$(( $(left) - 8 ))" "$@" > "$w/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$w/summary.txt"
}
pack() { tar czf "$out/run16.tgz" -C "$w" .; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$w/gpu.txt"
free -g > "$w/free.txt"
phase quick 60 .carry/gpu-check --quick --only "small Bf16,router and experts,scattered,virtual P=4 capacity" --json "$w/quick.jsonl"
phase paper 40 .carry/gpu-check --only paper-t128-e8,paper-t4096-e8,paper-t16384-e8 --json "$w/paper.jsonl"
phase models 100 .carry/flashdmoe bench --grid models-t4096 --backend cuda --baselines torch-single \
  --iters 10 --warmup 3 --out "$w/models"
for f in quick paper; do [ -f "$w/$f.log" ] && { echo "== $f"; grep -cE "^\[ok\]" "$w/$f.log"; grep -E "FAIL|panicked|Error|timeout" "$w/$f.log" | head -8; }; done
[ -f "$w/models.log" ] && grep -vE ": (build|first forward|check again)" "$w/models.log" | tail -40
cat "$w/summary.txt"
