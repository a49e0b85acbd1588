#!/usr/bin/env bash
# Makes NCCL loadable by the flashdmoe-cuda crate (one process per GPU builds on it: issue 14,
# docs/dev/process-model.md) and prints the export that makes it visible:
#
#     eval "$(scripts/install-nccl.sh)"
#
# cudarc loads `libnccl.so`, but the nvidia-nccl-cu13 wheel (which PyTorch depends on) ships
# only `libnccl.so.2`, so this links the library as `libnccl.so` into
# ${FLASHDMOE_NCCL_DIR:-/opt/flashdmoe-nccl}/lib and prints the LD_LIBRARY_PATH export (the
# loader reads it once, at process start). Where the library comes from, first found:
#   1. $FLASHDMOE_NCCL_LIB (a path to libnccl.so.2);
#   2. the nvidia.nccl package of `python3` (PyTorch's own: the GPU machines have no network);
#   3. the pinned wheel nvidia-nccl-cu13==2.28.9 installed into the target directory (needs the
#      package registry; ~200 MB).
# Idempotent; progress goes to stderr, stdout carries only the export line.
set -euo pipefail

dir="${FLASHDMOE_NCCL_DIR:-/opt/flashdmoe-nccl}"
pinned=nvidia-nccl-cu13==2.28.9

from_python() {
    python3 - <<'PY' 2>/dev/null
import os
import nvidia.nccl
for base in nvidia.nccl.__path__:
    lib = os.path.join(base, "lib", "libnccl.so.2")
    if os.path.exists(lib):
        print(lib)
        break
PY
}

lib="${FLASHDMOE_NCCL_LIB:-}"
if [[ -n "$lib" && ! -f "$lib" ]]; then
    echo "install-nccl: FLASHDMOE_NCCL_LIB=$lib is not a file" >&2
    exit 1
fi
[[ -n "$lib" ]] || lib="$(from_python || true)"
if [[ -z "$lib" && -f "$dir/nvidia/nccl/lib/libnccl.so.2" ]]; then
    lib="$dir/nvidia/nccl/lib/libnccl.so.2"
fi
if [[ -z "$lib" ]]; then
    echo "install-nccl: no libnccl.so.2 found; installing $pinned into $dir" >&2
    mkdir -p "$dir"
    python3 -m pip install --disable-pip-version-check --root-user-action=ignore --no-input --quiet \
        --target "$dir" "$pinned" >&2
    lib="$dir/nvidia/nccl/lib/libnccl.so.2"
    [[ -f "$lib" ]] || { echo "install-nccl: $pinned installed but $lib is missing" >&2; exit 1; }
fi
mkdir -p "$dir/lib"
ln -sf "$lib" "$dir/lib/libnccl.so"
echo "install-nccl: $dir/lib/libnccl.so -> $lib" >&2
echo "export LD_LIBRARY_PATH=$dir/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
