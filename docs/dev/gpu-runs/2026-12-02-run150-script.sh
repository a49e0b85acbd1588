#!/usr/bin/env bash
# run 150 (session 28): paired GEMM0 tasks in the MoE kernel, step 2 of
# docs/dev/paired-tasks.md (`--pairs`: FDM_PAIRS, the kernel in 2-CTA clusters, the scheduler's
# handout_paired, the processors' align_for_pair). Correct first: gpu-check --pairs on the
# Hopper cases whose blocks pair (one rank, virtual P=2 and P=8; P=4's 33 blocks a rank are
# refused by design), the forced timeouts included (no hang); then the weight-streamed layers
# with and without pairs in one call: paper T16384/T4096 E128 and DeepSeek-V3 (T 4096).
# Prediction: every case verified, digests equal to the unpaired run's where both ran (pairs
# change no arithmetic); DeepSeek-V3 8.5 -> 7.3-7.8 ms (run 149: two-row-tile experts' GEMM0
# -21% in the bench, ~60% of its row tiles in pairs, GEMM1 unpaired); T16384 E128 level to -3%
# (two row tiles an expert, K 2048: the first-wave loss +~5 µs against the shared reads);
# T4096 E128 level or worse (64-row tiles, mostly one an expert).
# Carry: .carry/gpu-check, .carry/flashdmoe (release builds, stripped). ~480 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-540}; source scripts/gpu-phases.sh
checks="small Bf16 Relu,small Bf16 SiluGated bias,small F16 Gelu,small F32 Relu,small deepseek-v3 router,small qwen2-moe m4 gated shared experts,skewed dropless,small column groups,=virtual P=2,virtual P=2 skewed,=virtual P=8,virtual P=8 skewed,forced timeout + recovery single P=1,forced timeout + recovery virtual P=2,device-resident single P=1,device-resident virtual P=2,combine stream small top-8,=preset qwen3-30b-a3b,=preset mixtral-8x7b"
ph pairs-check 150 .carry/gpu-check --pairs --only "$checks"
paper="=paper-t16384-e128,=paper-t4096-e128"
ph paper-base 60 .carry/gpu-check --only "$paper"
ph paper-pairs 60 .carry/gpu-check --pairs --only "$paper"
ph dsv3-base 90 .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 20
ph dsv3-pairs 90 .carry/flashdmoe run --preset deepseek-v3 --backend cuda --back-to-back 20 --pairs
tar czf $OUT/run150.tgz -C $w .
echo "== pairs-check"; grep -E "^\[|passed|failed" $w/pairs-check.log | cut -c1-160
ab_lines paper-base paper-pairs
for f in dsv3-base dsv3-pairs; do echo "== $f"; grep -iE "kernel|verify|back to back|back-to-back|error" $w/$f.log | cut -c1-220; done
cat $w/summary.txt
