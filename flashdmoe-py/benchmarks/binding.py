"""What the Python binding costs on a GPU (issue 15 item 5): ``moe(x)`` called eagerly, back to
back on one stream, against the same forward replayed from a CUDA graph (the kernel and its
memset alone, no Python), plus the host time of one call. Verified against the float64
reference on sampled rows first. Without a GPU it prints ``skipped: no GPU`` and exits 0.

    python3 flashdmoe-py/benchmarks/binding.py --tokens 4096 --out binding.json

Overhead = eager time per call / graph time per call - 1 (the target: <= 5% at T = 4096).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from reference import assert_rows_close, moe as reference_moe, weights_of  # noqa: E402

import flashdmoe  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--inter", type=int, default=2048)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--activation", default="relu")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--verify-rows", type=int, default=64)
    p.add_argument("--out", help="write the summary as JSON here")
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("skipped: no GPU (torch.cuda.is_available() is False)")
        return 0

    layer = flashdmoe.MoE(a.hidden, a.inter, a.experts, a.top_k, activation=a.activation,
                          dtype=torch.bfloat16, max_tokens=a.tokens, seed=0)
    w = weights_of(layer)  # on the CPU, before the move
    layer = layer.cuda()
    g = torch.Generator().manual_seed(1)
    x_host = torch.randn(a.tokens, a.hidden, generator=g).to(torch.bfloat16)
    x = x_host.cuda()

    # Verified first: dropless routing is per token, so sampled rows have their own reference.
    y = layer(x)
    torch.cuda.synchronize()
    layer.status()
    rows = torch.randperm(a.tokens, generator=g)[: a.verify_rows]
    ref = reference_moe(x_host[rows], w, top_k=a.top_k, activation=a.activation)
    assert_rows_close(y.cpu()[rows], ref, layer.tolerance)

    def device_ms(fn, n: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / n

    for _ in range(a.warmup):
        layer(x)
    eager_ms = device_ms(lambda: layer(x), a.iters)
    host_us = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        layer(x)
        host_us.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    layer.status()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = layer(x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_y.view(torch.int16), y.view(torch.int16)), "graph replay differs"
    graph_ms = device_ms(graph.replay, a.iters)
    torch.cuda.synchronize()
    layer.status()

    summary = {
        "layer": f"T{a.tokens} H{a.hidden} I{a.inter} E{a.experts} k{a.top_k} {a.activation} bf16",
        "device": torch.cuda.get_device_name(),
        "verified_rows": a.verify_rows,
        "eager_ms_per_call": eager_ms,
        "graph_ms_per_replay": graph_ms,
        "overhead": eager_ms / graph_ms - 1.0,
        "host_us_per_call_median": statistics.median(host_us),
        "host_us_per_call_max": max(host_us),
        "iters": a.iters,
    }
    print(f"{summary['layer']} on {summary['device']}: eager {eager_ms:.4f} ms a call back to back, "
          f"graph {graph_ms:.4f} ms a replay, binding overhead {summary['overhead'] * 100:+.1f}% "
          f"(target <= 5%); host {summary['host_us_per_call_median']:.1f} us a call (median)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
