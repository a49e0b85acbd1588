"""Single-GPU PyTorch MoE layer forward: the baselines FlashDMoE's single-GPU targets compare to.

Variants (``--variants``, default all four), each timed and verified in the same run:

``loop`` -> impl ``torch-loop-eager``
    Router, capacity mask, then a Python loop over experts (the Hugging Face Mixtral pattern):
    gather the expert's kept tokens (``nonzero``: a host sync per expert), up (+gate) GEMM,
    activation, down GEMM, weighted ``index_add_`` into an f32 accumulator.
``grouped`` -> impl ``torch-grouped-eager``
    Router, stable argsort of the slots by expert (static shapes, see ``common.plan_dispatch``),
    gather, ``torch._grouped_mm`` for gate+up (one GEMM over the concatenated weights),
    activation, ``torch._grouped_mm`` for down, gather back and one batched weighted combine.
    No host sync anywhere.
``graph`` -> impl ``torch-grouped-graph``
    The grouped forward captured once in a CUDA graph and replayed. Because the grouped forward
    has static shapes and the per-expert row counts stay on the device (the ``offs`` of
    ``_grouped_mm``), the captured graph is valid for *any* routing: it does not freeze the
    timed input's routing (checked: the graph is replayed on a second input and compared with
    the eager result). Only bf16 on sm90+ has a sync-free ``_grouped_mm`` kernel; other dtypes
    fall back to a per-group loop that reads ``offs`` on the host and cannot be captured, so
    the variant is skipped there with a note.

``dense`` -> impl ``cublas-dense``
    The practical ceiling, not an MoE layer: the same expert GEMM FLOPs as one dense cuBLAS
    pair (``act([T*k, H] x [H, I]) x [I, H]``, ``torch.mm``, graph-replayed), so a table shows
    ours, PyTorch's MoE and what plain GEMMs of that work cost side by side. It is checked
    against a float64 computation of its own pair on sampled rows and noted as a ceiling.

Every MoE variant's output is checked against a float64 reference on ``--verify-rows`` token rows
sampled fresh each run, and against the ``grouped`` variant's full output; ``verified`` in the
result requires both (and a consistent routing/capacity plan).

Example::

    python3 torch_single.py --preset paper-t16384-e32-dropless --out single.jsonl
    python3 torch_single.py --grid paper --iters 50 --out grid.jsonl
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable

import torch

import common as C

VARIANTS = ("loop", "grouped", "graph", "dense")
IMPL = {"loop": "torch-loop-eager", "grouped": "torch-grouped-eager", "graph": "torch-grouped-graph",
        "dense": "cublas-dense"}
#: The ceiling's note in its records: it is not an MoE layer.
DENSE_NOTE = ("ceiling: the layer's GEMM FLOPs as one dense cuBLAS pair (torch.mm, graph), not an MoE layer; "
              "its floor reads one weight set")


class Unsupported(Exception):
    """A variant that cannot run for this config/device (reported, not fatal)."""


def forward_loop(x: torch.Tensor, layer: C.LayerWeights, gw: C.GroupedWeights, cfg: C.MoeConfig) -> torch.Tensor:
    """Per-expert loop forward (``loop`` variant), plus the shared experts (``common.shared_ffn``)."""
    r = C.route_layer(x, layer, cfg)
    keep = C.capacity_keep(r.experts, cfg.experts, cfg.capacity_rows())
    out = torch.zeros(x.shape[0], cfg.hidden, dtype=torch.float32, device=x.device)
    for e in range(cfg.experts):
        tok, slot = ((r.experts == e) & keep).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        h = x.index_select(0, tok) @ gw.w1t[e]
        if gw.b1 is not None:
            h = h + gw.b1[e]
        y = C.activate(h, cfg.activation, cfg.inter, cfg.swiglu_limit, cfg.swiglu_alpha) @ gw.w2t[e]
        if gw.b2 is not None:
            y = y + gw.b2[e]
        out.index_add_(0, tok, y.float() * r.weights[tok, slot, None])
    shared = C.shared_ffn(x, layer, cfg)
    if shared is not None:
        out = out + shared
    return out.to(x.dtype)


def forward_grouped(x: torch.Tensor, layer: C.LayerWeights, gw: C.GroupedWeights, cfg: C.MoeConfig) -> torch.Tensor:
    """Router + permute + grouped GEMMs + unpermute + combine (``grouped`` variant), plus the
    shared experts (``common.shared_ffn``)."""
    r = C.route_layer(x, layer, cfg)
    plan = C.plan_dispatch(r.experts, cfg.experts, cfg.capacity_rows())
    y = C.grouped_ffn(x.index_select(0, plan.src_token), plan.offs, plan.row_expert, gw, cfg)
    out = C.combine(y, plan, r.weights)
    shared = C.shared_ffn(x, layer, cfg)
    return out if shared is None else (out.float() + shared).to(x.dtype)


def capture_graph(x: torch.Tensor, layer: C.LayerWeights, gw: C.GroupedWeights,
                  cfg: C.MoeConfig) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
    """The grouped forward captured in a CUDA graph: ``(replay, static_input)``; ``replay()``
    runs the graph on the current contents of ``static_input`` and returns the static output."""
    if x.device.type != "cuda":
        raise Unsupported("CUDA graphs need a CUDA device")
    if cfg.dtype != "bf16" or torch.cuda.get_device_capability(x.device) < (9, 0):
        raise Unsupported("torch._grouped_mm is capturable only for bf16 on sm90+ "
                          "(its other paths read the group offsets on the host)")
    static_x = x.clone()
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(3):  # allocator pools, cuBLAS/CUTLASS workspaces, lazy init
            forward_grouped(static_x, layer, gw, cfg)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_out = forward_grouped(static_x, layer, gw, cfg)
    except RuntimeError as e:
        raise Unsupported(f"graph capture failed: {e}".splitlines()[0]) from None

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return replay, static_x


def dense_pair(cfg: C.MoeConfig, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``act(x w1^T) w2^T``; SwiGLU: ``w1`` stacks gate over up (``[2I, H]``)."""
    h = x @ w1.t()
    if cfg.gated:
        gate, up = h[:, : cfg.inter], h[:, cfg.inter:]
        h = torch.nn.functional.silu(gate) * up
    elif cfg.activation == "gelu":
        h = torch.nn.functional.gelu(h)
    else:
        h = torch.relu(h)
    return h @ w2.t()


def dense_ceiling(cfg: C.MoeConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """The practical ceiling (``dense`` variant): the layer's expert GEMM FLOPs as one dense
    pair, ``act([T*k, H] x [H, I]) x [I, H]`` (SwiGLU: ``[H, 2I]`` then ``silu(gate) * up``),
    through cuBLAS (``torch.mm``), graph-replayed. Not an MoE layer: its record is verified
    against a float64 computation of the same pair on sampled rows, and noted as a ceiling.
    Its floor is its own: one weight set, not E (a ceiling for compute-bound layers only; where
    the layer is weight-read bound -- small T, large E -- the layer's floor is the bound)."""
    if device.type != "cuda":
        raise Unsupported("the ceiling is a GPU measurement")
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    dt = cfg.torch_dtype
    rows = cfg.tokens * cfg.top_k
    width = 2 * cfg.inter if cfg.gated else cfg.inter
    a = (torch.rand(rows, cfg.hidden, generator=g) * 2 - 1).to(device, dt)
    w1 = ((torch.rand(width, cfg.hidden, generator=g) * 2 - 1) / math.sqrt(cfg.hidden)).to(device, dt)
    w2 = ((torch.rand(cfg.hidden, cfg.inter, generator=g) * 2 - 1) / math.sqrt(cfg.inter)).to(device, dt)

    pair = functools.partial(dense_pair, cfg)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        pair(a, w1, w2)  # warm-up outside the capture (cuBLAS workspace)
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        out = pair(a, w1, w2)
    graph.replay()
    sample = C.sample_rows(rows, args.verify_rows, device)
    want = pair(a.index_select(0, sample).double(), w1.double(), w2.double())
    err = C.rel_diff(out.index_select(0, sample), want)
    ok = err <= C.TOLERANCE[cfg.dtype]
    times = C.time_fn(graph.replay, args.iters, args.warmup, device)
    notes = DENSE_NOTE if ok else f"{DENSE_NOTE}; GEMM pair differs from float64 by {err:.2e}"
    return C.make_record(IMPL["dense"], device, 1, cfg, times, ok, err, args.seed, 1, notes)


def run_config(cfg: C.MoeConfig, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Generates the layer, runs, verifies and times each requested variant of ``cfg``."""
    C.configure_torch(cfg)
    layer = C.generate_layer(cfg, args.seed, device)
    gw = C.GroupedWeights.of(layer)
    x = C.generate_input(cfg, 0, args.seed, device)
    cap = cfg.capacity_rows()

    # The routing every variant computes (deterministic), its two capacity masks, the sample.
    r = C.route_layer(x, layer, cfg)
    plan = C.plan_dispatch(r.experts, cfg.experts, cap)
    plan_ok = torch.equal(plan.keep, C.capacity_keep(r.experts, cfg.experts, cap))
    touched = int((plan.counts > 0).sum())
    rows = C.sample_rows(cfg.tokens, args.verify_rows, device)
    tol = C.TOLERANCE[cfg.dtype]

    def verify(out: torch.Tensor) -> tuple[bool, float, list[str]]:
        ok, err, msg = C.check_rows(cfg, x.index_select(0, rows), layer.router, r.experts.index_select(0, rows),
                                    plan.keep.index_select(0, rows), out.index_select(0, rows), layer.expert,
                                    extras=layer)
        notes = [msg] if msg else []
        if not plan_ok:
            ok = False
            notes.append("sort-based and count-based capacity masks differ")
        return ok, err, notes

    records, reference, reference_name = [], None, ""
    for name in args.variants:
        notes: list[str] = []
        if name == "dense":
            try:
                rec = dense_ceiling(cfg, args, device)
            except Unsupported as e:
                print(f"  skip {IMPL[name]}: {e}", flush=True)
                continue
            C.print_table([rec])
            records.append(rec)
            continue
        try:
            if name == "graph":
                replay, static_x = capture_graph(x, layer, gw, cfg)
                # Routing-independence: replay on another input, compare with eager.
                other = C.generate_input(cfg, 1, args.seed, device)
                static_x.copy_(other)
                d = C.rel_diff(replay(), forward_grouped(other, layer, gw, cfg))
                static_x.copy_(x)
                fn: Callable[[], torch.Tensor] = replay
                if d > tol:
                    notes.append(f"graph replay on a second input differs from eager by {d:.2e}")
            elif name == "loop":
                fn = functools.partial(forward_loop, x, layer, gw, cfg)
            else:
                fn = functools.partial(forward_grouped, x, layer, gw, cfg)
            out = fn().clone()
        except Unsupported as e:
            print(f"  skip {IMPL[name]}: {e}", flush=True)
            continue
        ok, err, more = verify(out)
        notes += more
        if reference is None:
            reference, reference_name = out, IMPL[name]
        else:
            d = C.rel_diff(out, reference)
            if d > tol:
                notes.append(f"differs from {reference_name} by {d:.2e}")
        ok = ok and not notes
        times = C.time_fn(fn, args.iters, args.warmup, device)
        rec = C.make_record(IMPL[name], device, 1, cfg, times, ok, err, args.seed, touched, "; ".join(notes))
        C.print_table([rec])
        records.append(rec)
        del fn
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_config_args(p)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)} (the first is the cross-check reference)")
    args = p.parse_args(argv)
    configs = C.parse_variants_and_configs(p, args, VARIANTS)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device visible (use --device cpu for a functional check)")
    device = torch.device(args.device)
    C.self_check_generator(args.seed, configs[0].dtype, device)

    records = []
    for cfg in configs:
        print(f"== {cfg.label()}", flush=True)
        recs = run_config(cfg, args, device)
        C.write_jsonl(args.out, recs)
        records += recs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if len(configs) > 1:
        print()
        C.print_table(records)
    return 0 if all(r["verified"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
