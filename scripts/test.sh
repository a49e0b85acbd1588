#!/usr/bin/env bash
# The project's one test command (README "Test"; .ci/run runs exactly this).
#
#   1. cargo fmt --check                      formatting
#   2. cargo clippy --workspace --all-targets lints, warnings are errors
#   3. flashdmoe-proto without default features (no_std + alloc)
#   4. cargo test --workspace                 unit, property, integration and CLI tests, and the
#                                             CUDA kernels' NVRTC compile checks when NVRTC is
#                                             found (scripts/install-nvrtc.sh)
#   5. pytest bench/baselines                 the PyTorch baselines' CPU tests, held to the
#                                             Rust fixture (skipped when torch or pytest cannot
#                                             be imported; scripts/install-torch.sh installs them)
#   6. the Python package (flashdmoe-py)      its wheel built by maturin (profile `wheel`),
#                                             installed into the torch environment, and
#                                             pytest flashdmoe-py/tests (skipped like step 5)
#   7. the loom model-checking suites         core and sim under --cfg flashdmoe_loom, in their
#                                             own target dir so the main build is not redone
#
# Step 4 uses the `test` profile (opt-level 1, dependencies at 3; see Cargo.toml): fast enough
# for the property tests while keeping overflow checks and debug assertions on, which is what
# makes "arbitrary input never panics" a real check.
#
# Set FLASHDMOE_REQUIRE_NVRTC=1 to fail instead of skipping when NVRTC is not found, and
# FLASHDMOE_REQUIRE_TORCH=1 to fail instead of skipping steps 5 and 6 when torch (or, for step
# 6, maturin) is not importable (CI sets both). FLASHDMOE_PYTHON is the interpreter of steps 5
# and 6 (default python3; scripts/install-torch.sh prints the export of its own).
# Ends with one summary line: "summary: N passed, N failed, N skipped", where skipped counts
# #[ignore]d tests, pytest's skips, and tests or steps that printed a "skipped: <why>" line (no
# GPU here, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

step() {
    echo
    echo "==> $*"
}

nvrtc_found() {
    local home="${FLASHDMOE_CUDA_HOME:-/usr/local/cuda}" d
    [[ -f "$home/include/cuda_fp16.h" ]] || return 1
    local IFS=:
    for d in ${LD_LIBRARY_PATH:-} /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
        [[ -n "$d" && -e "$d/libnvrtc.so.13" ]] && return 0
    done
    return 1
}

if nvrtc_found; then
    nvrtc="NVRTC found (FLASHDMOE_CUDA_HOME=${FLASHDMOE_CUDA_HOME:-/usr/local/cuda}): kernel compile checks run"
elif [[ "${FLASHDMOE_REQUIRE_NVRTC:-0}" == 1 ]]; then
    echo "test.sh: NVRTC required but not found: run 'eval \"\$(scripts/install-nvrtc.sh)\"'" >&2
    exit 1
else
    nvrtc="NVRTC not found: kernel compile checks are skipped (see scripts/install-nvrtc.sh)"
fi
echo "test.sh: $nvrtc"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build -p flashdmoe-proto --no-default-features (no_std + alloc)"
cargo build -p flashdmoe-proto --no-default-features

step "cargo test --workspace"
# --show-output prints what passing tests printed: tests that cannot run here (no GPU, no
# NVRTC, no C++ compiler) pass with a "skipped: ..." line, counted below.
cargo test --workspace -- --show-output 2>&1 | tee -a "$log"
if [[ "${FLASHDMOE_REQUIRE_NVRTC:-0}" == 1 ]] && grep -q '^skipped: NVRTC' "$log"; then
    echo "test.sh: NVRTC is required but a kernel compile check was skipped" >&2
    exit 1
fi

python="${FLASHDMOE_PYTHON:-python3}"

# Whether $python can import the modules $1 lists; when it cannot and FLASHDMOE_REQUIRE_TORCH=1,
# fails the whole run naming them.
importable() {
    "$python" -c "import $1" >/dev/null 2>&1 && return 0
    if [[ "${FLASHDMOE_REQUIRE_TORCH:-0}" == 1 ]]; then
        echo "test.sh: $python cannot import $1, which are required here: run" \
            "'eval \"\$(scripts/install-torch.sh)\"'" >&2
        exit 1
    fi
    return 1
}

# Runs "$@" when $python can import the modules $1 lists (importable); otherwise prints a
# "skipped: <what>" line ($2).
python_step() {
    local modules="$1" what="$2"
    shift 2
    if importable "$modules"; then
        "$@"
    else
        echo "skipped: $what: $python cannot import $modules" \
            "(eval \"\$(scripts/install-torch.sh)\" installs them)" | tee -a "$log"
    fi
}

run_pytest() {
    PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee -a "$log"
}

baselines() {
    local start=$SECONDS
    # The comparison with transformers' MoE blocks skips without transformers (conftest.py says
    # so); CI must run it.
    importable transformers || true
    run_pytest bench/baselines
    echo "test.sh: the baselines' tests took $((SECONDS - start)) s"
}

python_package() {
    local start=$SECONDS wheels
    wheels="$(mktemp -d)"
    "$python" -m maturin build --quiet -m flashdmoe-py/Cargo.toml --profile wheel -i "$python" \
        -o "$wheels"
    "$python" -m pip install --disable-pip-version-check --no-input --quiet --force-reinstall \
        --no-deps "$wheels"/flashdmoe-*.whl
    rm -rf "$wheels"
    run_pytest flashdmoe-py/tests
    echo "test.sh: the Python package took $((SECONDS - start)) s (wheel build, install, tests)"
}

step "pytest bench/baselines (the PyTorch baselines' CPU tests)"
python_step "torch, pytest" "pytest bench/baselines" baselines

step "the Python package: maturin build, pip install, pytest flashdmoe-py/tests"
python_step "torch, pytest, maturin" "pytest flashdmoe-py/tests" python_package

step "loom: cargo test -p flashdmoe-core -p flashdmoe-sim --release loom (--cfg flashdmoe_loom)"
RUSTFLAGS="--cfg flashdmoe_loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
    cargo test -p flashdmoe-core -p flashdmoe-sim --release loom 2>&1 | tee -a "$log"

# Sum the counts of every "test result:" line of the cargo runs and pytest's closing line
# ("28 passed, 2 skipped in 24.1s"); a test that printed "skipped:" counts as skipped, not
# passed. A skipped pytest step counts as one skipped test too (its line is not a passed test,
# hence the p += 1 that undoes its subtraction).
read -r passed failed skipped < <(awk '
    /^test result:/ || /^(=+ )?[0-9]+ (passed|failed|skipped).* in [0-9.]+s/ {
        for (i = 1; i < NF; i++) {
            if ($(i + 1) ~ /^passed/) p += $i
            if ($(i + 1) ~ /^failed/) f += $i
            if ($(i + 1) ~ /^(ignored|skipped)/) g += $i
        }
    }
    /^skipped:/ { s += 1 }
    /^skipped: pytest / { p += 1 }
    END { print p - s, f + 0, g + s }' "$log")
if grep -q '^skipped:' "$log"; then
    echo
    echo "test.sh: tests that passed without running their check here:"
    grep '^skipped:' "$log" | sort | uniq -c
fi
echo
echo "test.sh: fmt, clippy, no_std build, tests, the baselines' and the Python package's tests and" \
    "loom suites all passed; $nvrtc"
echo "summary: $passed passed, $failed failed, $skipped skipped"
