#!/usr/bin/env bash
# One device call (2026-11-29 session 4): the real-model grid against PyTorch in one run (run 14's
# attempt checked all 4096 rows of DeepSeek-V3's layer on the host and timed out; the oracle now
# samples layers over 2^37 multiply-adds), then the routed-part/gpt-oss presets if time is left.
set -u -o pipefail
out=${OUT:-/tmp/out}; w=/tmp/w; mkdir -p "$out" "$w"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHDMOE_CUDA_HOME=/usr/local/cuda FLASHDMOE_CACHE_DIR=/tmp/fdm-cache
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
start=$(date +%s); budget=${BUDGET:-560}
left() { echo $(( budget - ($(date +%s) - start) )); }
phase() { # name need_s cmd...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "SKIPPED $name: $(left)s left, needs $need" | tee -a "$w/summary.txt"; return; fi
  local t0=$(date +%s)
  timeout "$(( $(left) - 8 ))" "$@" > "$w/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$w/summary.txt"
}
pack() { tar czf "$out/run15.tgz" -C "$w" .; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$w/gpu.txt"
free -g > "$w/free.txt"
phase models 200 .carry/flashdmoe bench --grid models-t4096 --backend cuda --baselines torch-single \
  --iters 20 --warmup 5 --out "$w/models"
phase full-models 60 .carry/gpu-check --only "routed part,preset gpt-oss" --json "$w/full-models.jsonl"
phase paper 40 .carry/gpu-check --only paper-t128-e8,paper-t4096-e8,paper-t16384-e8 --json "$w/paper.jsonl"
for f in full-models paper; do [ -f "$w/$f.log" ] && { echo "== $f"; grep -cE "^\[ok\]" "$w/$f.log"; grep -E "FAIL|panicked|Error|timeout" "$w/$f.log" | head -8; }; done
[ -f "$w/models.log" ] && grep -vE ": (build|first forward|check again)" "$w/models.log" | tail -40
cat "$w/summary.txt"
