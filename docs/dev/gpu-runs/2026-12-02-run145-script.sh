#!/usr/bin/env bash
# run 145 (session 27): FDM_CLUSTER_PROBE, the MoE kernel in 2-CTA clusters launched
# cooperatively as always (moe.cu), against the default, alternated twice.
# Why: paired GEMM tasks that multicast an expert's weight tile to two processors (the form
# that reads DeepSeek-V3's, Kimi-K2's and T16384 E128's re-read weights once;
# docs/dev/tile-bytes-per-flop.md) need a cooperative grid of clusters at this kernel's
# footprint (one block an SM, ~227 KiB of shared memory): does the driver launch it, and what
# does the placement in pairs cost with nothing else changed?
# Prediction: it launches (132 blocks = 66 clusters; the tile bench ran 66 clusters co-resident
# in runs 139-141) and verifies with the same output digests; times level (+-1%).
# Also: the forced-timeout checks with every warp role's exit decisions warp-uniform
# (sync.cuh `warp_any`; the return subscriber's deadline one for the warp), both engines.
# Carry: .carry/gpu-check (79d35d0 + the warp-uniform exits). ~170 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-170}; source scripts/gpu-phases.sh
three="=paper-t16384-e8,=paper-t16384-e128,=preset qwen3-30b-a3b"
two="=paper-t16384-e8,=preset qwen3-30b-a3b"
ph base1 50 .carry/gpu-check --only "$three"
ph probe1 50 env FLASHDMOE_EXTRA_DEFINES=FDM_CLUSTER_PROBE .carry/gpu-check --only "$three"
ph timeouts 30 .carry/gpu-check --quick --only "forced timeout + recovery single,forced timeout + recovery virtual"
ph timeouts_mma 30 .carry/gpu-check --quick --engine mma-sync --only "=forced timeout + recovery virtual P=2,=forced timeout + recovery single P=1"
ph base2 35 .carry/gpu-check --only "$two"
ph probe2 35 env FLASHDMOE_EXTRA_DEFINES=FDM_CLUSTER_PROBE .carry/gpu-check --only "$two"
tar czf $OUT/run145.tgz -C $w .
for b in base1 probe1 timeouts timeouts_mma base2 probe2; do echo "== $b"; grep -hE "^(paper|preset)|passed|FAIL|error|extra kernel" $w/$b.log | cut -c1-120; done
ab_lines base1 probe1 base2 probe2 | grep -o "^\[[a-zA-Z]*\] [^(]*\|back to back [0-9.]* ms\|output digest [0-9a-f]*\|first task at [0-9]*us\|== .*" | paste -sd' ' | sed 's/== /\n== /g;s/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'
echo; cat $w/summary.txt
