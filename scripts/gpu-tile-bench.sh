#!/usr/bin/env bash
# Runs on the GPU machine (no Rust there): the Hopper tile engine's standalone bench, one
# process per configuration (a hang costs one configuration's timeout, not the call), plus a
# SASS check that the engine's images really issue wgmma (HGMMA). Build here first:
#   cargo build --release -p flashdmoe-cuda --example tile-bench
#   mkdir -p .carry && cp target/release/examples/tile-bench .carry/
#   .carry/tile-bench --dump-cubin .carry/cubins      # NVRTC here, no GPU needed
# then run `bash scripts/gpu-tile-bench.sh` there with `.carry` carried. Logs land in $OUT.
set -u -o pipefail
out=${OUT:-gpu-tile-bench-out}
mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu-env.sh"
bin=${TILE_BENCH_BIN:-.carry/tile-bench}
status=0
for f in .carry/cubins/*.cubin; do
  [ -f "$f" ] || continue
  printf '%-60s HGMMA %s\n' "$(basename "$f")" "$(cuobjdump --dump-sass "$f" | grep -c HGMMA)" | tee -a "$out/sass.txt"
done
"$bin" --compile-only | sed 's/^/compile: /' | tee "$out/tile-bench.log"
"$bin" --compile-only | awk '/^ok/ {sub(/^ok +/, ""); sub(/ +[0-9]+ registers.*/, ""); print}' > "$out/labels.txt"
while IFS= read -r label; do
  timeout "${TILE_TIMEOUT:-90}" "$bin" --only "$label" --iters "${ITERS:-20}" 2>&1 | grep -v '^|\|^tile-bench:\|^device' | tee -a "$out/tile-bench.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "FAIL $label: exit $rc (124 = timed out)" | tee -a "$out/tile-bench.log"; status=1; }
done < "$out/labels.txt"
# cuBLAS on the plain shapes, same call (bench/baselines/torch_mm.py): the engine's ceiling.
python3 bench/baselines/torch_mm.py --shape 16384 2048 2048 --shape 16384 8192 4096 2>&1 | tee -a "$out/tile-bench.log"
echo
grep -E '^(ok|FAIL) |^torch.mm' "$out/tile-bench.log"
exit $status
