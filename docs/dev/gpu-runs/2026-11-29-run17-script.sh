#!/usr/bin/env bash
# One short device call (2026-11-29 session 4, ~150 s of budget left): the kernel-side epoch
# and the device-resident forward (abcc262..): a few host-path cases and the resident checks.
set -u -o pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHDMOE_CUDA_HOME=/usr/local/cuda FLASHDMOE_CACHE_DIR=/tmp/fdm-cache
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
timeout 100 .carry/gpu-check --quick --only "device-resident,small Bf16 SiluGated,virtual P=2,forced timeout + recovery single" \
  --json "$out/run17.jsonl" > "$out/run17.log" 2>&1; echo "rc=$?" >> "$out/run17.log"
grep -E "^\[(ok|FAIL|skip)|rc=" "$out/run17.log" | cut -c1-900
