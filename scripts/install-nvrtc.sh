#!/usr/bin/env bash
# Installs the pinned NVRTC 13.0 wheels (compiler, CUDA runtime headers, CCCL headers) so the
# CUDA kernels can be JIT-compiled without a GPU or a CUDA toolkit, then prints the exports that
# make them visible to the flashdmoe-cuda crate:
#
#     eval "$(scripts/install-nvrtc.sh)"
#
# Target directory: ${FLASHDMOE_NVRTC_DIR:-/opt/flashdmoe-nvrtc}. Idempotent: when the pinned
# versions are already there nothing is downloaded. Progress goes to stderr; stdout carries only
# the two `export` lines. The versions are pinned because the GPU machines run driver 580
# (CUDA 13.0): a newer NVRTC emits PTX that driver cannot load.
set -euo pipefail

dir="${FLASHDMOE_NVRTC_DIR:-/opt/flashdmoe-nvrtc}"
wheels=(nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
root="$dir/nvidia/cu13"

installed() {
    local w name version
    for w in "${wheels[@]}"; do
        name="${w%%==*}"
        version="${w##*==}"
        [[ -d "$dir/${name//-/_}-$version.dist-info" ]] || return 1
    done
    [[ -f "$root/lib/libnvrtc.so.13" && -f "$root/include/cuda_fp16.h" && -d "$root/include/cccl" ]]
}

if installed; then
    echo "install-nvrtc: pinned NVRTC wheels already in $dir" >&2
else
    echo "install-nvrtc: installing ${wheels[*]} into $dir" >&2
    mkdir -p "$dir"
    python3 -m pip install --disable-pip-version-check --root-user-action=ignore --no-input --quiet --upgrade \
        --target "$dir" "${wheels[@]}" >&2
    installed || { echo "install-nvrtc: wheels installed but $root is incomplete" >&2; exit 1; }
fi

echo "export FLASHDMOE_CUDA_HOME=$root"
echo "export LD_LIBRARY_PATH=$root/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
