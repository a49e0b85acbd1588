#!/usr/bin/env bash
# Installs what the PyTorch baselines' CPU tests (bench/baselines) and the Python package's tests
# (flashdmoe-py, both run by scripts/test.sh) need -- a pinned torch, pytest, numpy, maturin
# (which builds the package's wheel) and transformers (whose MoE blocks the oracle is compared
# with, bench/baselines/test_transformers.py) from PyPI -- into a virtual environment, then
# prints the export that makes scripts/test.sh use it:
#
#     eval "$(scripts/install-torch.sh)"
#
# Target directory: ${FLASHDMOE_TORCH_DIR:-/opt/flashdmoe-torch}. Idempotent: when the pinned
# versions are already there nothing is downloaded. Progress goes to stderr; stdout carries only
# the export line.
#
# PyPI's Linux torch wheel is the CUDA build (the CPU-only wheels live on PyTorch's own index,
# which CI cannot reach); it runs on CPU without a GPU, at the price of its NVIDIA library
# wheels: about 3 GB to download and 4.7 GB installed, 1.5 to 3 minutes on the 2-core machine
# CI runs on (2026-11-29).
# torch 2.11 is the version the GPU runs used (docs/benchmarks.md); its CUDA 13.0 runtime and
# NVRTC wheels are the versions scripts/install-nvrtc.sh pins.
set -euo pipefail

dir="${FLASHDMOE_TORCH_DIR:-/opt/flashdmoe-torch}"
pins=(torch==2.11.0 numpy==2.4.6 pytest==9.2.0 maturin==1.15.0 transformers==5.23.0)
stamp="$dir/flashdmoe-pins.txt"

installed() {
    [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "${pins[*]}" ]] &&
        "$dir/bin/python" -c 'import torch, numpy, pytest, maturin, transformers' 2>/dev/null
}

if installed; then
    echo "install-torch: pinned ${pins[*]} already in $dir" >&2
else
    echo "install-torch: installing ${pins[*]} into $dir (about 3 GB from PyPI)" >&2
    python3 -m venv "$dir" >&2
    "$dir/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
        "${pins[@]}" >&2
    echo "${pins[*]}" >"$stamp"
    installed || { echo "install-torch: installed, but $dir/bin/python cannot import them" >&2; exit 1; }
fi

echo "export FLASHDMOE_PYTHON=$dir/bin/python"
