# run 36 (x2 warm, GPU 0): issue 16 item 2's presets whole, and the real-model grid against PyTorch
set -u
o=$OUT; mkdir -p $o
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} FLASHDMOE_CUDA_HOME=/usr/local/cuda FLASHDMOE_CACHE_DIR=/tmp/fdm-cache NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
export CUDA_VISIBLE_DEVICES=0
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv > $o/gpu.txt
timeout 300 .carry/flashdmoe bench --grid models-t4096 --backend cuda --baselines torch-single --iters 10 --warmup 3 --out $o/models > $o/models.log 2>&1; echo "models exit $?" >> $o/summary.txt
timeout 200 .carry/gpu-check --only "preset deepseek-v3,preset qwen,preset deepseek-v2-lite,preset kimi-k2" --json $o/presets.jsonl > $o/presets.log 2>&1; echo "presets exit $?" >> $o/summary.txt
grep -h -E "^\[ok\]|^\[FAIL\]|^\[skip" $o/presets.log | cut -c1-260
grep -vE ": (build|first forward|check again)" $o/models.log | grep -E "flashdmoe-cuda|graph|cublas|^[a-z]" | cut -c1-140 | tail -45
cat $o/summary.txt
