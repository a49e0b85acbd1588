#!/usr/bin/env bash
# run 179 (session 34, last call): the session's final build verified (FDM_TWO_WAVES removed,
# the posting mark now control word 22, gpu-check timing T128 at every E), then what run 178
# could not time: T128 E16, whose tile the new rule takes from 64x64 to 64x256 (the model's
# bytes -15%; prediction -5 to -10%), alternated with the old tile forced; seven protocol
# checks; PyTorch's grouped graph at T128 in the same call (ratios from one run); the quick
# set last if time is left. Carry: .carry/gpu-check built from this commit. ~330 s.
set -u -o pipefail
source scripts/gpu-env.sh
w=$OUT/run179; mkdir -p $w; BUDGET=${BUDGET:-330}; source scripts/gpu-phases.sh
ph t128 20 .carry/gpu-check --only "=paper-t128-e8,=paper-t128-e16,=paper-t128-e32,=paper-t128-e64,=paper-t128-e128"
ph e16-old 10 .carry/gpu-check --tile 64x64s8 --only "=paper-t128-e16"
ph e16-new 10 .carry/gpu-check --only "=paper-t128-e16"
ph e16-old2 10 .carry/gpu-check --tile 64x64s8 --only "=paper-t128-e16"
ph e16-new2 10 .carry/gpu-check --only "=paper-t128-e16"
checks="=small column groups,=virtual P=2 column groups,=virtual P=8 skewed,=forced timeout + recovery virtual P=2,=device-resident virtual P=2,=skewed dropless,=virtual P=4 deepseek-v3 router and experts"
ph checks 60 .carry/gpu-check --quick --only "$checks"
ph torch 60 python3 bench/baselines/torch_single.py --variants graph --iters 100 --warmup 10 \
  --preset paper-t128-e8-cf1 paper-t128-e16-cf1 paper-t128-e32-cf1 paper-t128-e64-cf1 paper-t128-e128-cf1 \
  --out $w/torch.jsonl
ph quick 150 .carry/gpu-check --quick
echo "== t128"; grep -hE "^paper" $w/t128.log; grep -ho "\[bf16[^]]*\]\|first task at [0-9]*us\|placed [0-9]*us\|posted [0-9]*us\|back to back [0-9.]* ms" $w/t128.log | paste -sd' ' | sed 's/ \[bf16/\n[bf16/g'
for f in e16-old e16-new e16-old2 e16-new2; do
  [ -f $w/$f.log ] && echo "== $f $(grep -ho '\[bf16[^]]*\]' $w/$f.log | head -1) $(grep -hE '^paper' $w/$f.log)"
done
echo "== checks"; grep -E "^\[FAIL|passed|failed" $w/checks.log | cut -c1-160
echo "== torch"; grep -vE "^\s*$" $w/torch.log | tail -25 | cut -c1-140
echo "== quick"; [ -f $w/quick.log ] && grep -E "^\[FAIL|passed|failed" $w/quick.log | cut -c1-160
cat $w/summary.txt
