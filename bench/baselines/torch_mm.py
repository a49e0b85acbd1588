"""The dense GEMM ceiling of the tile engine's standalone bench: ``torch.mm(a, b.t())`` (cuBLAS)
on the shapes ``tile-bench`` runs, timed the same way (device time per call), so its table can
show the engine's TFLOP/s next to cuBLAS's from one device call (``scripts/gpu-tile-bench.sh``).

    python3 torch_mm.py --shape 16384 2048 2048 --shape 16384 8192 4096 [--iters 20 --warmup 5]

``a`` is M x K and ``b`` N x K (``nn.Linear``'s layout, as the engine's B), bf16 unless ``--dtype``
says otherwise. On a GPU the calls are replayed from a CUDA graph (cuBLAS's own launch cost
aside, as the engine's persistent kernel has none between tiles) and one result is checked
against an f32 product of sampled rows; ``--device cpu`` runs the same path without the graph,
for the tests. One line per shape: ``torch.mm M N K dtype: median ms, TFLOP/s``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", nargs=3, type=int, action="append", metavar=("M", "N", "K"), required=True,
                   help="a product of M x K by (N x K)^T; repeat for more shapes")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda")
    a = p.parse_args(argv)
    for m, n, k in a.shape:
        if min(m, n, k) <= 0:
            p.error(f"--shape {m} {n} {k}: every dimension must be positive")
    if a.iters <= 0 or a.warmup < 0:
        p.error("--iters must be positive and --warmup not negative")
    return a


def checked(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
    """The largest error of c's sampled rows against an f32 product, relative to the row's
    largest magnitude (raises if over the dtype's tolerance: never time a wrong result)."""
    rows = torch.linspace(0, a.shape[0] - 1, min(a.shape[0], 16)).long().to(a.device)
    want = a[rows].float() @ b.float().t()
    got = c[rows].float()
    err = ((got - want).abs().amax(dim=1) / want.abs().amax(dim=1).clamp_min(1e-30)).max().item()
    tol = 2.0 ** -6 if a.dtype != torch.float32 else 1e-4
    if not err <= tol:
        raise RuntimeError(f"torch.mm differs from the f32 product: {err:.3e} > {tol:.1e}")
    return err


def time_shape(m: int, n: int, k: int, args: argparse.Namespace) -> tuple[float, float]:
    dev = torch.device(args.device)
    g = torch.Generator(device="cpu").manual_seed(m * 31 + n * 7 + k)
    dtype = DTYPES[args.dtype]
    a = (torch.rand(m, k, generator=g) - 0.5).to(dtype).to(dev)
    b = (torch.rand(n, k, generator=g) - 0.5).to(dtype).to(dev)
    c = torch.empty(m, n, dtype=dtype, device=dev)

    def step() -> None:
        torch.mm(a, b.t(), out=c)

    for _ in range(max(args.warmup, 1)):
        step()
    err = checked(a, b, c)
    times = []
    if dev.type == "cuda":
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(args.iters):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        checked(a, b, c)
    else:
        for _ in range(args.iters):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), err


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("torch_mm: skipped: no GPU (torch.cuda.is_available() is false)")
        return 0
    for m, n, k in args.shape:
        ms, err = time_shape(m, n, k, args)
        tflops = 2.0 * m * n * k / (ms * 1e-3) / 1e12
        print(f"torch.mm m{m} n{n} k{k} {args.dtype}: {ms:.3f} ms  {tflops:.1f} TFLOP/s  err {err:.2e} "
              f"({args.device}, {args.iters} calls)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
