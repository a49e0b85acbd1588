#!/usr/bin/env bash
# run 143 (session 27): `WgmmaTile::deepest` now prefers pipeline depth to staging width (the
# paper layers' 128x256 tiles 3 stages with 512-byte staging -> 4 with 256; their 64x256 tiles
# 4 -> 5 stages with 256-byte staging). Run 142 measured the 128x256 change at T16384
# sustained (E128 -2.5%, E32 -1.3%, E8 -0.2%); this A/B covers the other paper images that
# change: T128 E128 and T4096 E128 (64x256), T4096 E8 and E32 (128x256), gpu-check at 37014c4
# (`gpu-check-old`) against the new default, alternated, both verified; then the changed f16
# and tf32 images once (correctness).
# Prediction: T4096 E8/E32 -0 to -2%, T4096 E128 and T128 E128 (64x256, weights streamed) -1
# to -4%; every case verified, the same output digest old and new (the pipeline depth does
# not change the math).
# Carry: .carry/gpu-check (new), .carry/gpu-check-old (37014c4). ~250 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$(mktemp -d); BUDGET=${BUDGET:-300}; source scripts/gpu-phases.sh
cases="=paper-t128-e128,=paper-t4096-e8,=paper-t4096-e32,=paper-t4096-e128"
ph old1 50 .carry/gpu-check-old --only "$cases"
ph new1 50 .carry/gpu-check --only "$cases"
ph old2 50 .carry/gpu-check-old --only "$cases"
ph new2 50 .carry/gpu-check --only "$cases"
ph dtypes 40 .carry/gpu-check --only "=paper-t4096-e32 F16,=paper-t16384-e32 tf32,=paper-t4096-e8 Gelu"
tar czf $OUT/run143.tgz -C $w .
for b in old1 new1 old2 new2 dtypes; do echo "== $b"; grep -hE "^(paper|preset)|passed|FAIL" $w/$b.log | cut -c1-100; done
ab_lines old1 new1 old2 new2 dtypes | grep -o "^\[[a-zA-Z]*\] [^ ]* [^ ]*\|back to back [0-9.]* ms\|output digest [0-9a-f]*\|== .*" | paste -sd' ' | sed 's/== /\n== /g;s/\[ok\]/\n[ok]/g;s/\[FAIL\]/\n[FAIL]/g'
echo; cat $w/summary.txt
