#!/usr/bin/env bash
# run 205 (written in session 40, not yet run): experiment FDM_ROUTER_WGMMA (perf-notes v53
# (d), docs/dev/router-wgmma.md): A1's router tile of 64 or 128 columns on the first two
# warpgroups' wgmmas, from the mma.sync tile's own cp.async stages (the 128-byte swizzle both
# use). The paper T16384 E128 image spills 28 bytes with it and builds through its FDM_FRESH_TID
# fallback, so that layer is also timed against main built with FDM_FRESH_TID ("fresh"): the
# router's change alone is rw against fresh there.
# Cases: the paper grid's E128 layers, Qwen3 (E128), OLMoE (E64); E8 / E32 keep the mma.sync
# router (32 columns), so they are left out. Every forward is verified against the oracle in
# its own phase; the digests differ from main's (the k16 products accumulate in another order).
# Prediction: the `router jobs` mark T16384 E128 32 -> ~23 µs, T4096 E128 13 -> ~9, Qwen3 and
# OLMoE -2 to -4 µs; the forwards -0.8% (T16384 E128), -1% (T4096 E128), -0.5% (Qwen3).
# Carry: .carry/gpu-check from main at or after this script's commit. ~330 s + start.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); keep=$OUT/run205.log; BUDGET=${BUDGET:-360}; source scripts/gpu-phases.sh
x="env FLASHDMOE_EXTRA_DEFINES=FDM_ROUTER_WGMMA"
f="env FLASHDMOE_EXTRA_DEFINES=FDM_FRESH_TID"
cases="=paper-t4096-e128,=paper-t16384-e128,=preset qwen3-30b-a3b,=preset olmoe-1b-7b"
ph base 70 .carry/gpu-check --only "$cases"
ph rw 60 $x .carry/gpu-check --only "$cases"
ph fresh 60 $f .carry/gpu-check --only "=paper-t16384-e128"
ph base2 50 .carry/gpu-check --only "$cases"
ph rw2 50 $x .carry/gpu-check --only "$cases"
ph fresh2 40 $f .carry/gpu-check --only "=paper-t16384-e128"
L="base rw fresh base2 rw2 fresh2"
ab_lines $L
for p in $L; do [ -f $w/$p.log ] && { echo "== $p router jobs"; grep -ho "^\[[a-zA-Z]*\] [^ ]*\|router jobs [0-9]*us" $w/$p.log | paste -sd' ' | sed 's/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'; }; done
for p in $L; do [ -f $w/$p.log ] && { echo "== $p"; grep -hE "^(paper|preset)" $w/$p.log; }; done
cat $w/summary.txt
