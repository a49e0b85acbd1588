#!/usr/bin/env bash
# flashdmoe.MoE(..., group=WORLD) under torchrun, one process per GPU (issue 15 item 2), on a
# 2-GPU machine in one call of at most 3 minutes (every step under `timeout`). Nothing here needs
# Rust or the network. Build and carry first, on the CPU machine:
#   maturin build --release -m flashdmoe-py/Cargo.toml -o .carry/whl
# then on the GPU machine (device tool, kind nvidia-h200-x2, carry [".carry"]):
#   bash scripts/gpu-torchrun.sh
# Steps:
#   0. nvidia-smi -L; NCCL from PyTorch's nvidia.nccl (scripts/install-nccl.sh)
#   1. the wheel installed (pip --no-deps); flashdmoe._native.probe() (NCCL loadable)
#   2. torchrun_check.py --same-gpu over a gloo group: both ranks on cuda:0 must get the
#      ValueError naming them (no kernel built: a few seconds)
#   3. torchrun --standalone --nproc-per-node 2 flashdmoe-py/tests/torchrun_check.py: a small
#      and the paper layer (T = 4096 a rank, E = 32, H = I = 2048, bf16, dropless), each rank
#      against a float64 reference of its tokens, then timed back to back
# Logs: $OUT/torchrun.log (everything) and the summary last, also in $OUT/torchrun-summary.txt.
# OUT defaults to ./gpu-torchrun-out.
set -u -o pipefail
final=${OUT:-gpu-torchrun-out}
out=$(mktemp -d)
mkdir -p "$final"
start=$(date +%s)
summary="$out/torchrun-summary.txt"
: >"$summary"
pack() {
  cat "$out"/*.log >"$final/torchrun.log" 2>/dev/null
  cp "$summary" "$final/" 2>/dev/null
}
trap pack EXIT

source "$(dirname "${BASH_SOURCE[0]}")/gpu-env.sh"
export PYTHONUNBUFFERED=1

row() { printf '%-26s %-6s %s\n' "$1" "$2" "$3" | tee -a "$summary"; }
# Seconds left of the call's budget (BUDGET, default 175 s).
left() { echo $((${BUDGET:-175} - ($(date +%s) - start))); }
# step NAME LIMIT CMD...: CMD under `timeout` (at most the budget left), logged to NAME.log.
step() {
  local name=$1 limit=$2 l rc t0
  shift 2
  l=$(left)
  [ "$l" -lt "$limit" ] && limit=$l
  if [ "$limit" -le 5 ]; then
    echo "== $name: skipped (the call's time budget is spent)" | tee "$out/$name.log"
    return 124
  fi
  echo "== $name (limit ${limit} s): $*" | tee "$out/$name.log"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$out/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$out/$name.log"
  tail -n 30 "$out/$name.log"
  return $rc
}

nvidia-smi -L | tee "$out/gpus.log"
ngpu=$(nvidia-smi -L | wc -l)
if ! nccl_env=$(bash scripts/install-nccl.sh 2>"$out/install-nccl.log"); then
  cat "$out/install-nccl.log"
  row "NCCL" "FAIL" "scripts/install-nccl.sh found no libnccl.so.2"
  exit 1
fi
eval "$nccl_env"

if step install 30 python3 -m pip install -q --no-deps --force-reinstall .carry/whl/*.whl; then
  row "wheel installed" "ok" "$(ls .carry/whl/*.whl | xargs -n1 basename | paste -sd' ' -)"
else
  row "wheel installed" "FAIL" "install.log"
  exit 1
fi
if step probe 20 python3 -c 'import flashdmoe, torch; from flashdmoe import _native; print("probe:", _native.probe()); print("torch", torch.__version__, "gpus", torch.cuda.device_count())'; then
  row "NCCL probe" "ok" "$(grep -h '^probe:' "$out/probe.log")"
else
  row "NCCL probe" "FAIL" "probe.log"
fi
status=0
if [ "$ngpu" -lt 2 ]; then
  row "torchrun 2 ranks" "SKIP" "needs 2 GPUs, found $ngpu"
  exit 1
fi
run=(python3 -m torch.distributed.run --standalone --nproc-per-node 2 flashdmoe-py/tests/torchrun_check.py)
step same-gpu 30 "${run[@]}" --same-gpu --backend gloo
rc=$?
[ $rc -eq 0 ] || status=1
row "two ranks on one GPU" "$([ $rc -eq 0 ] && echo ok || echo "FAIL($rc)")" \
  "$(grep -h '^\[rank 0\] same GPU' "$out/same-gpu.log" | cut -c1-140)"
step check 150 "${run[@]}"
rc=$?
[ $rc -eq 0 ] || status=1
row "torchrun small+paper" "$([ $rc -eq 0 ] && echo ok || echo "FAIL($rc)")" \
  "$(grep -h '^verdict:' "$out/check.log" | head -1)"
grep -h '^\[rank' "$out/check.log" | sed -E 's/ I=[0-9]+ bf16//' | cut -c1-200 | tee -a "$summary"
# PyTorch's expert-parallel layer of the same shape in the same call (issue 15 item 5):
# torch_ep.py's default layer is the paper one at T4096 per rank, dropless; E = 32 as the check's.
step torch-ep 90 python3 bench/baselines/torch_ep.py --world 2 --experts 32 --iters 50 --warmup 5
row "torch_ep.py P=2 (same shape)" "$([ $? -eq 0 ] && echo ok || echo FAIL)" \
  "$(grep -h -E 'torch-ep-a2a-(eager|graph)' "$out/torch-ep.log" | tr -s ' ' | cut -c1-120 | head -2 | paste -sd'|' -)"
# Four ranks when the machine has 4 GPUs (issue 15 item 5: torchrun --nproc-per-node 4).
if [ "$ngpu" -ge 4 ]; then
  step check4 150 python3 -m torch.distributed.run --standalone --nproc-per-node 4 flashdmoe-py/tests/torchrun_check.py
  rc=$?
  [ $rc -eq 0 ] || status=1
  row "torchrun 4 ranks" "$([ $rc -eq 0 ] && echo ok || echo "FAIL($rc)")" \
    "$(grep -h '^verdict:' "$out/check4.log" | head -1)"
  grep -h '^\[rank' "$out/check4.log" | sed -E 's/ I=[0-9]+ bf16//' | cut -c1-200 | tee -a "$summary"
fi
echo "== summary ($(($(date +%s) - start)) s)"
cat "$summary"
exit $status
