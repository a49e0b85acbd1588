#!/usr/bin/env bash
# One process per GPU over NCCL (issue 14 items 5-7), on a 2-GPU machine, in one call of about
# 3-5 minutes (every step under `timeout`; the sum of the limits stays under 10 minutes).
# Nothing here needs Rust or the network. Build and carry first, on the CPU machine:
#   cargo build --release -p flashdmoe --bin flashdmoe
#   mkdir -p .carry && cp target/release/flashdmoe .carry/ && strip .carry/flashdmoe
# then on the GPU machine (device tool, kind nvidia-h200-x2, carry [".carry"]):
#   bash scripts/gpu-multiproc.sh
# Steps:
#   0. nvidia-smi -L and topo; NCCL from PyTorch's nvidia.nccl (scripts/install-nccl.sh)
#   1. flashdmoe info (NCCL found, its version)
#   2. flashdmoe launch --nproc 2 run --backend cuda: a small layer, then the paper layer
#      (T = 4096 per GPU, E = 32, H = I = 2048, bf16), each verified against the oracle;
#      if the small one fails, once more with --visible-devices (CUDA_VISIBLE_DEVICES per
#      process), and the rest uses whichever mode worked
#   3. the same paper layer in one process over both GPUs (the latency comparison)
#   4. the dying rank: rank 1 SIGKILLs itself right after launching forward 3; rank 0 must
#      report "peer rank 1 is gone" within its kernel deadline and fail the next call at once
#   5. weight memory per GPU at P = 1 (one process, one GPU) and P = 2 (from step 2)
# Logs: $OUT/multiproc-logs.tgz (every step's log), $OUT/multiproc.log (everything), and the
# summary table last in the output and in $OUT/multiproc-summary.txt. OUT defaults to
# ./gpu-multiproc-out.
set -u -o pipefail
final=${OUT:-gpu-multiproc-out}
out=$(mktemp -d)
mkdir -p "$final"
start=$(date +%s)
summary="$out/multiproc-summary.txt"
: >"$summary"
pack() {
  tar czf "$final/multiproc-logs.tgz" -C "$out" . 2>/dev/null
  cp "$summary" "$final/" 2>/dev/null
  cat "$out"/*.log >"$final/multiproc.log" 2>/dev/null
}
trap pack EXIT

export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHDMOE_CUDA_HOME=${FLASHDMOE_CUDA_HOME:-/usr/local/cuda}
export FLASHDMOE_CACHE_DIR=${FLASHDMOE_CACHE_DIR:-/tmp/flashdmoe-cache}
export FLASHDMOE_NCCL_DIR=${FLASHDMOE_NCCL_DIR:-/tmp/flashdmoe-nccl}
# No NVLink multicast on these machines (KINDS.md); our windows never need it.
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
bin=${FLASHDMOE_BIN:-.carry/flashdmoe}
paper=(--preset paper-t4096-e32)

row() { printf '%-34s %-6s %s\n' "$1" "$2" "$3" | tee -a "$summary"; }
# Seconds left of the whole call's budget (570 s: the device tool stops a command at 600 s).
left() { echo $((570 - ($(date +%s) - start))); }
# step NAME LIMIT CMD...: runs CMD under `timeout` (at most the budget left), logs to NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local l
  l=$(left)
  [ "$l" -lt "$limit" ] && limit=$l
  if [ "$limit" -le 10 ]; then
    echo "== $name: skipped (the call's time budget is spent)" | tee "$out/$name.log"
    return 124
  fi
  echo "== $name (limit ${limit} s): $*" | tee "$out/$name.log"
  local t0 t1 rc
  t0=$(date +%s%N)
  timeout -k 5 "$limit" "$@" >>"$out/$name.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  echo "== $name: exit $rc after $(((t1 - t0) / 1000000)) ms" | tee -a "$out/$name.log"
  tail -n 25 "$out/$name.log"
  return $rc
}
verdict() { grep -h "verify:" "$out/$1.log" | sed 's/.*verify: //' | cut -c1-60 | paste -sd'|' -; }
times() { grep -h "time: " "$out/$1.log" | sed -E 's/^(\[rank [0-9]+\] )?.*slowest rank median ([0-9.]+ ms).*host call median ([0-9.]+ ms).*/\1\2 (host \3)/' | paste -sd'|' -; }

nvidia-smi -L | tee "$out/gpus.log"
nvidia-smi topo -m >>"$out/gpus.log" 2>&1
ngpu=$(nvidia-smi -L | wc -l)
if ! nccl_env=$(bash scripts/install-nccl.sh 2>"$out/install-nccl.log"); then
  cat "$out/install-nccl.log"
  row "NCCL" "FAIL" "scripts/install-nccl.sh found no libnccl.so.2 (install-nccl.log)"
  exit 1
fi
eval "$nccl_env"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$out/install-nccl.log"

step info 60 "$bin" info
row "1 flashdmoe info" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(grep -v '^==' "$out/info.log" | grep -i nccl | head -1 | cut -c1-90)"

if [ "$ngpu" -lt 2 ]; then
  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): only P = 1 can run here.
  step p1 120 "$bin" launch --nproc 1 run --backend cuda "${paper[@]}" --world 1 --iterations 5 --timeout 10
  row "5 P=1 one process (1 GPU)" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(verdict p1); $(grep -h 'memory:' "$out/p1.log" | sed 's/.*memory: //' | cut -c1-60)"
  row "2-4 (2 processes)" "skip" "needs 2 GPUs: $ngpu here; NCCL refuses two ranks on one GPU"
  exit 0
fi

mode=()
step small 150 "$bin" launch --nproc 2 --grace 20 run --backend cuda --world 2 --tokens 128 --iterations 3 --timeout 10
rc=$?
if [ $rc != 0 ]; then
  row "2a launch small" "FAIL" "exit $rc; retrying with --visible-devices"
  mode=(--visible-devices)
  step small-visible 120 "$bin" launch --nproc 2 "${mode[@]}" --grace 20 run --backend cuda --world 2 --tokens 128 --iterations 3 --timeout 10
  rc=$?
  row "2a launch small --visible-devices" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(verdict small-visible)"
  [ $rc != 0 ] && mode=()
else
  row "2a launch small (T128 E8)" "ok" "$(verdict small)"
fi

step paper2 150 "$bin" launch --nproc 2 "${mode[@]}" --grace 20 run --backend cuda "${paper[@]}" --world 2 --iterations 20 --timeout 10
row "2b launch paper P=2" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(verdict paper2)"
row "   multi-process time" "" "$(times paper2)"

step single2 120 "$bin" run --backend cuda "${paper[@]}" --world 2 --iterations 20 --timeout 10
row "3 one process, 2 GPUs, paper" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(verdict single2)"
row "   single-process time" "" "$(times single2)"

step die 100 "$bin" launch --nproc 2 "${mode[@]}" --die rank=1,forward=3 --grace 60 run --backend cuda "${paper[@]}" --world 2 --iterations 10 --timeout 5
rc=$?
gone=$(grep -h "\[rank 0\] forward .* failed after" "$out/die.log" | sed 's/.*\] //' | cut -c1-120)
fast=$(grep -h "\[rank 0\] the next forward" "$out/die.log" | sed 's/.*\] //' | cut -c1-100)
killed=$(grep -h "launch: rank 1 failed" "$out/die.log" | head -1)
ok=FAIL
if [ $rc != 0 ] && [ $rc != 124 ] && echo "$gone" | grep -q "peer rank 1 is gone" && echo "$fast" | grep -q "failed fast"; then ok=ok; fi
row "4 rank 1 killed at forward 3" "$ok" "exit $rc; ${killed:-rank 1 not reported killed}"
row "   rank 0" "" "${gone:-no failed forward reported}"
row "   rank 0 next call" "" "${fast:-no fail-fast line}"

step p1 90 "$bin" launch --nproc 1 run --backend cuda "${paper[@]}" --world 1 --iterations 5 --timeout 10
row "5 weights P=1 (1 process)" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(grep -h 'memory:' "$out/p1.log" | sed 's/.*memory: //' | cut -c1-80)"
row "5 weights P=2 (per process)" "" "$(grep -h 'memory:' "$out/paper2.log" | sed 's/.*memory: //' | cut -c1-80 | paste -sd'|' -)"
# The library-level tests of the same paths, when their binary was carried
# (cargo test --release -p flashdmoe-cuda --test gpu_multiproc --no-run; copy the binary it
# names to .carry/tests/gpu_multiproc).
if [ -x .carry/tests/gpu_multiproc ]; then
  step libtests 90 .carry/tests/gpu_multiproc --test-threads=1
  row "6 gpu_multiproc tests" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(grep -h 'test result' "$out/libtests.log" | head -1 | cut -c1-60); $(grep -c '^skipped' "$out/libtests.log") skipped"
fi
echo
echo "== summary ($(($(date +%s) - start)) s)"
cat "$summary"
