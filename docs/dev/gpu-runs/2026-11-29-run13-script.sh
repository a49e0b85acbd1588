#!/usr/bin/env bash
# Discriminates the mma-sync timeouts at T=128 E=8 on sm_90: the commit before the combine
# change (d00c8c6) vs the combine change (ad336dd), then the torch baselines; one tarball back.
set -u -o pipefail
out=${OUT:-/tmp/out}; w=/tmp/w; mkdir -p "$out" "$w"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHDMOE_CUDA_HOME=/usr/local/cuda FLASHDMOE_CACHE_DIR=/tmp/fdm-cache
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
timeout 60 .carry/gpu-check-prev --engine mma-sync --only paper-t128-e8 --iters 40 --json $w/prev.jsonl > $w/prev.log 2>&1; echo "prev rc=$?" | tee -a $w/summary.txt
timeout 60 .carry/gpu-check --engine mma-sync --only paper-t128-e8 --iters 40 --json $w/cur.jsonl > $w/cur.log 2>&1; echo "cur rc=$?" | tee -a $w/summary.txt
timeout 60 python3 bench/baselines/torch_single.py --variants grouped,graph,dense --iters 20 --warmup 5 \
  --preset paper-t128-e8-cf1 paper-t128-e32-cf1 paper-t128-e128-cf1 paper-t4096-e8-cf1 paper-t4096-e32-cf1 paper-t4096-e128-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e128-cf1 \
  --out $w/torch-single.jsonl > $w/torch.log 2>&1; echo "torch rc=$?" | tee -a $w/summary.txt
tar czf "$out/run2.tgz" -C $w .
for f in prev cur; do sed -n '/^check/,$p' $w/$f.log; done; tail -25 $w/torch.log
