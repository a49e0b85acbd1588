# run 35 (x2): issue 15's torchrun difference, issue 16 item 2's shared experts
set -u
o=$OUT; mkdir -p $o
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} FLASHDMOE_CUDA_HOME=/usr/local/cuda FLASHDMOE_CACHE_DIR=/tmp/fdm-cache NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
BUDGET=120 OUT=$o/tr bash scripts/gpu-torchrun.sh > $o/torchrun-stdout.txt 2>&1
eval "$(scripts/install-nccl.sh)" >/dev/null 2>&1
for m in "" "--dropless"; do
  echo "== b2b paper-t4096-e32 $m" >> $o/b2b.log
  timeout 90 .carry/flashdmoe launch --nproc 2 --grace 20 run --backend cuda --preset paper-t4096-e32 $m --world 2 --iterations 3 --back-to-back 200 --timeout 10 >> $o/b2b.log 2>&1
  echo "== exit $?" >> $o/b2b.log
done
timeout 150 .carry/gpu-check --quick --only "shared experts" --json $o/shared.jsonl > $o/shared.log 2>&1; echo "shared exit $?" >> $o/summary.txt
timeout 120 .carry/gpu-check --engine mma-sync --quick --only "shared experts" > $o/shared-mma.log 2>&1; echo "shared-mma exit $?" >> $o/summary.txt
timeout 90 .carry/tests/backend_stats > $o/backend_stats.log 2>&1; echo "backend_stats exit $?" >> $o/summary.txt
grep -h "verdict\|ms a call" $o/torchrun-stdout.txt | cut -c1-330 | tail -4
grep -h -E "^==|back to back|forward|PASS|FAIL|verify" $o/b2b.log | cut -c1-200 | head -20
grep -h -E "^\[ok\]|^\[FAIL\]" $o/shared.log $o/shared-mma.log | cut -c1-330
grep -h -E "test result|skipped|panicked" $o/backend_stats.log | head -5
cat $o/summary.txt
