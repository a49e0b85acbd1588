#!/usr/bin/env bash
# Runs on the GPU machine (no Rust there): the CUDA backend's correctness checks against the
# CPU oracle and the timings, in one process, plus the GPU-side unit tests when their binaries
# were carried along. Build here first:
#   cargo build --release -p flashdmoe-bench --bin gpu-check
#   mkdir -p .carry && cp target/release/gpu-check .carry/
# then run `bash scripts/gpu-check.sh [gpu-check args]` there with `.carry` carried.
# Logs and JSON are written to a work folder and packed into $OUT/gpu-check-logs.tgz (the
# device tool returns at most 8 files, and a run writes up to 12), with gpu-check.log
# beside it; OUT defaults to ./gpu-check-out.
set -u -o pipefail
final=${OUT:-gpu-check-out}
out=$(mktemp -d)
mkdir -p "$final"
pack() { tar czf "$final/gpu-check-logs.tgz" -C "$out" . && cp "$out/gpu-check.log" "$final/" 2>/dev/null; }
trap pack EXIT
source "$(dirname "${BASH_SOURCE[0]}")/gpu-env.sh"
bin=${GPU_CHECK_BIN:-.carry/gpu-check}
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/gpu.txt"
status=0
for t in .carry/tests/*; do
  [ -x "$t" ] || continue
  echo "== $(basename "$t")"
  "$t" --test-threads=1 2>&1 | tee -a "$out/gpu-tests.log" || status=1
done
"$bin" --json "$out/gpu-check.jsonl" "$@" 2>&1 | tee "$out/gpu-check.log" || status=1
# The PyTorch single-GPU baseline (router + permute + torch._grouped_mm + unpermute, eager and
# CUDA-graph replayed) on the same machine in the same run, for the ratios.
if [ "${SKIP_TORCH:-0}" != 1 ]; then
  PYTHONUNBUFFERED=1 python3 bench/baselines/torch_single.py --variants grouped,graph --iters 20 --warmup 5 \
    --preset ${TORCH_PRESETS:-paper-t128-e8-cf1 paper-t4096-e8-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1 paper-t16384-e8-dropless mixtral-8x7b} \
    --out "$out/torch-single.jsonl" 2>&1 | tail -n 30 | tee "$out/torch-single.log" || status=1
  ngpu=$(nvidia-smi -L | wc -l)
  # Expert-parallel PyTorch over NCCL on 2, 4 and 8 GPUs (as many as there are): the
  # weak-scaling and multi-GPU paper-grid comparisons.
  grid="paper-t8192-e32-cf1 paper-t128-e8-cf1 paper-t4096-e8-cf1 paper-t4096-e32-cf1 paper-t16384-e8-cf1 paper-t16384-e32-cf1"
  for world in 2 4 8; do
    [ "$ngpu" -ge "$world" ] || continue
    case $world in
      2) presets=${EP_PRESETS:-$grid} ;;
      4) presets=${EP4_PRESETS:-paper-t8192-e32-cf1} ;;
      8) presets=${EP8_PRESETS:-$grid} ;;
    esac
    PYTHONUNBUFFERED=1 python3 bench/baselines/torch_ep.py --world "$world" --iters 20 --warmup 5 \
      --preset $presets --out "$out/torch-ep$world.jsonl" 2>&1 | tail -n 40 | tee "$out/torch-ep$world.log" || status=1
  done
fi
exit $status
