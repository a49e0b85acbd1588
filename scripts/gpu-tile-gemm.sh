#!/usr/bin/env bash
# Build and run the tile GEMM correctness + speed test on a GPU machine (CUDA 13 toolkit).
#
#   scripts/gpu-tile-gemm.sh [--no-perf | --no-check]
#
# Env: NVCC (default /usr/local/cuda/bin/nvcc), ARCH (default 90), OUT (logs; default
# /tmp/tile-gemm-out). Writes $OUT/ptxas.log (per-kernel registers/spills) and $OUT/run.log;
# prints the test's summary table last. Exit status is the test's (0 = all checks passed).
# Only queries the GPU (nvidia-smi --query); never changes clocks or resets anything.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
ARCH=${ARCH:-90}
OUT=${OUT:-/tmp/tile-gemm-out}
BUILD=$(mktemp -d /tmp/tile-gemm-build.XXXXXX)
mkdir -p "$OUT"

echo "== build ($NVCC, sm_$ARCH)"
"$NVCC" --version | tail -2
t0=$(date +%s)
"$NVCC" -std=c++17 -O3 -gencode=arch=compute_${ARCH},code=sm_${ARCH} -Xptxas -v \
  -I flashdmoe-cuda/kernels flashdmoe-cuda/kernels/nvcc_tests/tile_gemm_test.cu \
  -o "$BUILD/tile_gemm_test" 2> "$OUT/ptxas.log" || { tail -50 "$OUT/ptxas.log"; exit 2; }
echo "built in $(( $(date +%s) - t0 )) s"
spills=$(grep -c "bytes spill stores" "$OUT/ptxas.log" || true)
nonzero=$(grep "bytes spill" "$OUT/ptxas.log" | grep -vc " 0 bytes spill stores, 0 bytes spill loads" || true)
echo "ptxas: $spills kernel reports, $nonzero with spills"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
  --format=csv > "$OUT/smi.txt" 2>&1 || true
cat "$OUT/smi.txt" || true

echo "== run"
set +e
"$BUILD/tile_gemm_test" "$@" > "$OUT/run.log" 2>&1
rc=$?
set -e
# Per-case lines first, the summary table last.
sed -n '1,/==== tile_gemm summary/p' "$OUT/run.log" | grep -v "==== tile_gemm summary"
sed -n '/==== tile_gemm summary/,$p' "$OUT/run.log"
[ "$nonzero" = "0" ] || { echo "ptxas reported register spills"; rc=1; }
exit $rc
