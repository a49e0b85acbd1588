#!/usr/bin/env bash
# One process per GPU over NCCL (issue 14 items 5-7), on a 2-GPU machine, in one call of at
# most 5 minutes (every step under `timeout`, capped by what is left of a 290 s budget).
# Nothing here needs Rust or the network. Build and carry first, on the CPU machine:
#   cargo build --release -p flashdmoe --bin flashdmoe
#   mkdir -p .carry && cp target/release/flashdmoe .carry/ && strip .carry/flashdmoe
#   (optional) cargo test --release -p flashdmoe-cuda --test gpu_multiproc --no-run, and the
#   binary it names copied to .carry/tests/gpu_multiproc
# then on the GPU machine (device tool, kind nvidia-h200-x2, carry [".carry"]):
#   bash scripts/gpu-multiproc.sh
# Steps:
#   0. nvidia-smi -L and topo; NCCL from PyTorch's nvidia.nccl (scripts/install-nccl.sh)
#   1. flashdmoe info (NCCL found, its version)
#   2. flashdmoe launch --nproc 2 run --backend cuda on a small layer, verified (if it fails,
#      once more with --visible-devices, and the rest uses whichever mode worked)
#   3. flashdmoe launch --nproc 2 bench --backend cuda --preset paper-t4096-e32: the paper
#      layer (T = 4096 per GPU, E = 32, H = I = 2048, bf16) on 2 processes, verified, timed as
#      device-resident forwards back to back after a group barrier; results.jsonl (with
#      "processes": 2, "ranks_per_process": 1) copied to $OUT/bench-p2.jsonl
#   4. the latency comparison (issue 14 item 7), every one `run --back-to-back 200` after 3
#      verified host-path forwards: the slowest GPU's device time a forward of 200
#      device-resident forwards queued back to back after a barrier, last output bitwise the
#      host path's: one process per GPU at P = 2, one process driving both GPUs at P = 2, and
#      P = 1 (one process per GPU, one GPU: also its weight memory)
#   5. the dying rank: rank 1 SIGKILLs itself right after launching forward 3; rank 0 must
#      report "peer rank 1 is gone" within its kernel deadline and fail the next call at once
#      (timed in us)
#   6. weight memory per GPU at P = 1 and P = 2 (from step 4)
#   7. the gpu_multiproc library tests, when carried
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

source "$(dirname "${BASH_SOURCE[0]}")/gpu-env.sh"
bin=${FLASHDMOE_BIN:-.carry/flashdmoe}
paper=(--preset paper-t4096-e32)

row() { printf '%-34s %-6s %s\n' "$1" "$2" "$3" | tee -a "$summary"; }
# Seconds left of the whole call's budget (BUDGET, default 290 s: the call must stay under 5 minutes).
left() { echo $((${BUDGET:-290} - ($(date +%s) - start))); }
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
  tail -n 12 "$out/$name.log"
  return $rc
}
verdict() { grep -h "verify:" "$out/$1.log" | sed 's/.*verify: //' | cut -c1-60 | paste -sd'|' -; }
# The back-to-back line (rank 0's when launched: every process prints the group's).
# The last error line of a step's log, a rank's own first (what a FAIL row shows).
why() { { grep -h '\] error:' "$out/$1.log" || grep -h "error:" "$out/$1.log"; } | tail -1 | cut -c1-110; }
b2b() {
  local l
  l=$(grep -h "back to back: " "$out/$1.log" | grep -v '^\[rank [1-9]' | head -1 | sed -E 's/.*back to back: //; s/ device-resident forwards queued.*per GPU/ fwd; per GPU/; s/\); last output bitwise = the host path.s \(verified\)/), = host path/' | cut -c1-110)
  echo "${l:-$(why "$1")}"
}

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
  step p1 120 "$bin" launch --nproc 1 run --backend cuda "${paper[@]}" --world 1 --iterations 3 --back-to-back 200 --timeout 10
  row "P=1 one process (1 GPU)" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(verdict p1); $(b2b p1); $(grep -h 'memory:' "$out/p1.log" | sed 's/.*memory: //' | cut -c1-60)"
  row "2-7 (2 processes)" "skip" "needs 2 GPUs: $ngpu here; NCCL refuses two ranks on one GPU"
  exit 0
fi

mode=()
step small 90 "$bin" launch --nproc 2 --grace 20 run --backend cuda --world 2 --tokens 128 --iterations 2 --timeout 10
rc=$?
if [ $rc != 0 ]; then
  row "2 launch small" "FAIL" "exit $rc; retrying with --visible-devices; $(why small)"
  mode=(--visible-devices)
  step small-visible 60 "$bin" launch --nproc 2 "${mode[@]}" --grace 20 run --backend cuda --world 2 --tokens 128 --iterations 2 --timeout 10
  rc=$?
  row "2 launch small --visible-devices" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(verdict small-visible) $(why small-visible)"
  [ $rc != 0 ] && mode=()
else
  row "2 launch run small (T128 E8)" "ok" "$(verdict small)"
fi

step bench2 90 "$bin" launch --nproc 2 "${mode[@]}" --grace 20 bench --backend cuda "${paper[@]}" --iters 200 --warmup 10 --timeout 10 --out "$out/bench-p2"
rc=$?
cp "$out/bench-p2/results.jsonl" "$final/bench-p2.jsonl" 2>/dev/null
line=$(grep -h '^\[rank 0\] paper-t4096-e32: ' "$out/bench2.log" | sed 's/.*e32: //' | cut -c1-100)
row "3 launch bench paper P=2" "$([ $rc = 0 ] && echo ok || echo FAIL)" "${line:-$(why bench2)}"
row "   record" "" "$(grep -o '"processes":[0-9]*,"ranks_per_process":[0-9]*' "$out/bench-p2/results.jsonl" 2>/dev/null || echo 'no results.jsonl')"

step b2b-multi2 75 "$bin" launch --nproc 2 "${mode[@]}" --grace 20 run --backend cuda "${paper[@]}" --world 2 --iterations 3 --back-to-back 200 --timeout 10
row "4 P=2 one process per GPU" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(b2b b2b-multi2)"
step b2b-single2 60 "$bin" run --backend cuda "${paper[@]}" --world 2 --iterations 3 --back-to-back 200 --timeout 10
row "4 P=2 one process, both GPUs" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(b2b b2b-single2)"
step p1 60 "$bin" launch --nproc 1 run --backend cuda "${paper[@]}" --world 1 --iterations 3 --back-to-back 200 --timeout 10
row "4 P=1 (one process, 1 GPU)" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(b2b p1)"

# P = 4 when the machine has 4 GPUs (issue 14 item 7: weights and latency at P = 4).
if [ "$ngpu" -ge 4 ]; then
  step b2b-multi4 90 "$bin" launch --nproc 4 "${mode[@]}" --grace 20 run --backend cuda "${paper[@]}" --world 4 --iterations 3 --back-to-back 200 --timeout 10
  row "4 P=4 one process per GPU" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(b2b b2b-multi4)"
  step b2b-single4 75 "$bin" run --backend cuda "${paper[@]}" --world 4 --iterations 3 --back-to-back 200 --timeout 10
  row "4 P=4 one process, 4 GPUs" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(b2b b2b-single4)"
fi

step die 60 "$bin" launch --nproc 2 "${mode[@]}" --die rank=1,forward=3 --grace 30 run --backend cuda "${paper[@]}" --world 2 --iterations 5 --timeout 5
rc=$?
gone=$(grep -h "\[rank 0\] forward .* failed after" "$out/die.log" | sed 's/.*\] //' | cut -c1-100)
fast=$(grep -h "\[rank 0\] the next forward" "$out/die.log" | sed 's/.*\] //' | cut -c1-80)
killed=$(grep -h "launch: rank 1 failed" "$out/die.log" | head -1)
ok=FAIL
if [ $rc != 0 ] && [ $rc != 124 ] && echo "$gone" | grep -q "peer rank 1 is gone" && echo "$fast" | grep -q "failed fast"; then ok=ok; fi
row "5 rank 1 killed at forward 3" "$ok" "exit $rc; ${killed:-rank 1 not reported killed}"
row "   rank 0" "" "${gone:-no failed forward reported}"
row "   rank 0 next call" "" "${fast:-no fail-fast line}"

row "6 weights P=1 (1 process)" "" "$(grep -h 'memory:' "$out/p1.log" | sed 's/.*memory: //' | cut -c1-80)"
row "6 weights P=2 (per process)" "" "$(grep -h 'memory:' "$out/b2b-multi2.log" | sed 's/.*memory: //' | cut -c1-40 | paste -sd'|' -)"
if [ "$ngpu" -ge 4 ]; then
  row "6 weights P=4 (per process)" "" "$(grep -h 'memory:' "$out/b2b-multi4.log" | sed 's/.*memory: //' | cut -c1-30 | paste -sd'|' -)"
fi
if [ -x .carry/tests/gpu_multiproc ]; then
  step libtests 60 .carry/tests/gpu_multiproc --test-threads=1
  row "7 gpu_multiproc tests" "$([ $? = 0 ] && echo ok || echo FAIL)" "$(grep -h 'test result' "$out/libtests.log" | head -1 | cut -c1-60); $(grep -c '^skipped' "$out/libtests.log") skipped"
fi
echo
echo "== summary ($(($(date +%s) - start)) s)"
cat "$summary"
