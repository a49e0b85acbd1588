#!/usr/bin/env python3
"""Clocks and power a phase of a device call ran at (run 137 on): reads the samples of
`nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,<reasons> --format=csv,
noheader,nounits -lms 50` (SMI) and the phase marks a script wrote (MARKS: `LABEL start|end
EPOCH_SECONDS` lines), and prints a line a phase over its busy samples (power above BUSY_W):
the samples' count, the SM clock's median and 10th percentile, the power's median and max, the
temperature's max, and the most frequent clock-event reason mask.

usage: gpu-clocks.py SMI MARKS [BUSY_W]"""
import statistics
import sys
from datetime import datetime


def samples(path):
    for line in open(path):
        f = [x.strip() for x in line.split(",")]
        if len(f) < 5:
            continue
        try:
            t = datetime.strptime(f[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            yield t, float(f[1]), float(f[2]), float(f[3]), f[4]
        except ValueError:
            continue


def phases(path):
    start = {}
    for line in open(path):
        label, what, t = line.split()
        if what == "start":
            start[label] = float(t)
        elif label in start:
            yield label, start.pop(label), float(t)


def main():
    smi, marks = sys.argv[1], sys.argv[2]
    busy_w = float(sys.argv[3]) if len(sys.argv) > 3 else 300.0
    rows = list(samples(smi))
    print(f"{'phase':<16} {'n':>4} {'sm MHz med':>10} {'p10':>6} {'W med':>7} {'W max':>7} {'C max':>5}  reasons")
    for label, t0, t1 in phases(marks):
        busy = [r for r in rows if t0 <= r[0] <= t1 and r[2] >= busy_w]
        if not busy:
            print(f"{label:<16} {0:>4}  (no sample above {busy_w:.0f} W)")
            continue
        clk = sorted(r[1] for r in busy)
        pw = [r[2] for r in busy]
        reasons = statistics.mode(r[4] for r in busy)
        print(
            f"{label:<16} {len(busy):>4} {statistics.median(clk):>10.0f} {clk[len(clk) // 10]:>6.0f} "
            f"{statistics.median(pw):>7.1f} {max(pw):>7.1f} {max(r[3] for r in busy):>5.0f}  {reasons}"
        )


if __name__ == "__main__":
    main()
