"""Expert-parallel PyTorch MoE layer over NCCL all-to-all: the multi-GPU baseline.

One process per rank (``torch.multiprocessing`` spawn, no torchrun), world size = visible GPUs
or ``--world`` (at most the visible GPUs: NCCL refuses two ranks on one GPU); rank ``r`` uses
GPU ``r``. Experts are placed contiguously:
``ceil(E / P)`` per rank, rank ``r`` owning ``[r * c, min((r + 1) * c, E))`` (flashdmoe-core's
``Placement::Contiguous``). Every rank routes its own ``T`` tokens (input tensor id
``1000 + r``) and holds only its own experts' weights. One forward:

1. router and capacity plan (``common.route``, ``common.plan_dispatch``): the kept slots
   sorted by expert, hence by destination rank;
2. count exchange: ``all_to_all_single`` of the per-expert row counts;
3. the split sizes go to the host (one device-to-host sync: ``all_to_all_single`` takes them as
   Python lists), then the token rows travel by ``all_to_all_single`` with those splits;
4. received rows regrouped from [source][local expert] to [local expert][source] order, the
   local experts run as two ``torch._grouped_mm`` (``common.grouped_ffn``), rows put back;
5. the reverse ``all_to_all_single`` returns them, then the weighted combine.

Variants: ``eager`` -> impl ``torch-ep-a2a-eager`` (all of the above, every iteration);
``graph`` -> impl ``torch-ep-a2a-graph``: the forward captured in a CUDA graph with NCCL
collectives inside. A graph cannot take host split sizes from the device, so the capture
freezes the splits of the timed input's routing: this favours the baseline (it skips step 3's
sync, and it would be wrong for another input). If capture fails the graph variant is dropped
and the eager record's ``notes`` say why.

NVLink multicast stays off: ``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` and
``NVSHMEM_DISABLE_NVLS=1`` are forced in this process and so in every rank it spawns.

Timing: each iteration starts after a barrier and is timed with CUDA events on every rank; the
reported time of an iteration is the slowest rank's. Verification: every rank checks
``--verify-rows`` of its token rows against the float64 reference (weights of experts it does
not own are regenerated from the seed), and the graph output is compared with the eager one.

Example::

    python3 torch_ep.py --preset paper-t8192-e32-dropless --out ep.jsonl
    python3 torch_ep.py --world 2 --device cpu --tokens 256 --hidden 128 --inter 256 (gloo)
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

# Multicast off before torch or NCCL read the environment (see the module doc).
for _name, _value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                      ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ[_name] = _value

import torch  # noqa: E402 - after the environment is set
import torch.distributed as dist  # noqa: E402 - after the environment is set
import torch.multiprocessing as mp  # noqa: E402 - after the environment is set

import common as C  # noqa: E402 - after the environment is set

VARIANTS = ("eager", "graph")
IMPL = {"eager": "torch-ep-a2a-eager", "graph": "torch-ep-a2a-graph"}


@dataclass
class Rank:
    """This rank's place in the world and its share of the layer."""

    rank: int
    world: int
    device: torch.device
    per_rank: int  # c = ceil(E / P)
    first: int  # first owned expert
    owned: int  # owned experts (<= c; 0 for trailing ranks when E < P * c leaves none)

    @staticmethod
    def of(rank: int, world: int, device: torch.device, experts: int) -> Rank:
        c = math.ceil(experts / world)
        first = min(rank * c, experts)
        return Rank(rank, world, device, c, first, min(c, experts - first))


def forward_ep(x: torch.Tensor, layer: C.LayerWeights, gw: C.GroupedWeights, cfg: C.MoeConfig,
               me: Rank, splits: tuple[list[int], list[int]] | None = None) -> torch.Tensor:
    """One expert-parallel forward of this rank's tokens (module doc). ``splits`` = frozen
    ``(send, recv)`` row counts per rank (graph capture); ``None`` reads them from the count
    exchange (a host sync)."""
    if cfg.features:
        raise ValueError("torch_ep computes the paper's layer only: shared experts and other routers are "
                         "common.py's and torch_single's (issue 16)")
    p, c = me.world, me.per_rank
    r = C.route(x, layer.router, cfg.top_k)
    plan = C.plan_dispatch(r.experts, cfg.experts, cfg.capacity_rows())
    send_counts = torch.zeros(p * c, dtype=torch.int64, device=x.device)
    send_counts[: cfg.experts] = plan.counts
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts)
    cnt = recv_counts.view(p, c)  # [source][local expert]
    if splits is None:
        send_split, recv_split = send_counts.view(p, c).sum(1).tolist(), cnt.sum(1).tolist()
    else:
        send_split, recv_split = splits
    n_send, n_recv = sum(send_split), sum(recv_split)

    recv = x.new_empty(n_recv, cfg.hidden)
    dist.all_to_all_single(recv, x.index_select(0, plan.src_token[:n_send]), recv_split, send_split)

    # Row i of `recv` belongs to block (source s, local expert l) = blocks[i]; `to_local[i]` is
    # its row in [local expert][source] order.
    flat = cnt.reshape(-1)
    blocks = torch.repeat_interleave(torch.arange(p * c, device=x.device), flat, output_size=n_recv)
    src_major = flat.cumsum(0) - flat
    by_expert = cnt.t().reshape(-1)
    exp_major = (by_expert.cumsum(0) - by_expert).view(c, p).t().reshape(-1)
    to_local = exp_major.index_select(0, blocks) + torch.arange(n_recv, device=x.device) - src_major.index_select(0, blocks)
    if n_recv and me.owned:
        local = torch.empty_like(recv).index_copy_(0, to_local, recv)
        row_expert = torch.empty_like(blocks).index_copy_(0, to_local, blocks % c)
        offs = cnt.sum(0).cumsum(0)[: me.owned].to(torch.int32)
        y = C.grouped_ffn(local, offs, row_expert, gw, cfg).index_select(0, to_local)
    else:
        y = recv
    back = x.new_empty(n_send, cfg.hidden)
    dist.all_to_all_single(back, y, send_split, recv_split)
    return C.combine(back, plan, r.weights)


def frozen_splits(x: torch.Tensor, layer: C.LayerWeights, cfg: C.MoeConfig, me: Rank) -> tuple[list[int], list[int]]:
    """The ``(send, recv)`` split sizes of ``x``'s routing (for graph capture)."""
    r = C.route(x, layer.router, cfg.top_k)
    plan = C.plan_dispatch(r.experts, cfg.experts, cfg.capacity_rows())
    send = torch.zeros(me.world * me.per_rank, dtype=torch.int64, device=x.device)
    send[: cfg.experts] = plan.counts
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send)
    return send.view(me.world, -1).sum(1).tolist(), recv.view(me.world, -1).sum(1).tolist()


def capture(x: torch.Tensor, layer: C.LayerWeights, gw: C.GroupedWeights, cfg: C.MoeConfig,
            me: Rank) -> Callable[[], torch.Tensor]:
    """The forward on ``x`` captured in a CUDA graph with frozen splits; raises ``RuntimeError``
    if capture fails."""
    splits = frozen_splits(x, layer, cfg, me)
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(3):
            forward_ep(x, layer, gw, cfg, me, splits)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = forward_ep(x, layer, gw, cfg, me, splits)

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def _gather_max(values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum of ``values`` over all ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def run_config(cfg: C.MoeConfig, args: argparse.Namespace, me: Rank) -> list[dict]:
    """Generates this rank's share, runs, verifies and times each variant; records on rank 0."""
    dev = me.device
    C.configure_torch(cfg)
    layer = C.generate_layer(cfg, args.seed, dev, me.first, me.owned)
    gw = C.GroupedWeights.of(layer)
    x = C.generate_input(cfg, me.rank, args.seed, dev)
    cap = cfg.capacity_rows()

    r = C.route(x, layer.router, cfg.top_k)
    plan = C.plan_dispatch(r.experts, cfg.experts, cap)
    base_notes = []
    if not torch.equal(plan.keep, C.capacity_keep(r.experts, cfg.experts, cap)):
        base_notes.append("sort-based and count-based capacity masks differ")
    rows = C.sample_rows(cfg.tokens, args.verify_rows, dev)

    def expert_weights(e: int) -> C.LayerWeights:
        if me.first <= e < me.first + me.owned:
            return layer.expert(e)
        return C.generate_layer(cfg, args.seed, dev, e, 1)

    def verify(out: torch.Tensor, notes: list[str]) -> tuple[bool, float, str]:
        ok, err, msg = C.check_rows(cfg, x.index_select(0, rows), layer.router, r.experts.index_select(0, rows),
                                    plan.keep.index_select(0, rows), out.index_select(0, rows), expert_weights)
        local = notes + ([f"rank {me.rank}: {msg}"] if msg else [])
        gathered: list = [None] * me.world
        dist.all_gather_object(gathered, local)
        all_notes = [n for ns in gathered for n in ns]
        bad, err = _gather_max([0.0 if ok and not local else 1.0, err], dev)
        return bad == 0.0 and not all_notes, err, "; ".join(dict.fromkeys(all_notes))

    # Experts touched per rank (for the weight-read floor): the busiest rank's count.
    recv = torch.empty(me.world * me.per_rank, dtype=torch.int64, device=dev)
    send = torch.zeros_like(recv)
    send[: cfg.experts] = plan.counts
    dist.all_to_all_single(recv, send)
    touched = int(_gather_max([float((recv.view(me.world, -1).sum(0) > 0).sum())], dev)[0])

    def barrier() -> None:
        if dev.type == "cuda":
            dist.barrier(device_ids=[dev.index])
        else:
            dist.barrier()

    records, eager_out = [], None
    for name in args.variants:
        notes = list(base_notes)
        if name == "graph":
            if dev.type != "cuda":
                if me.rank == 0:
                    print("  skip torch-ep-a2a-graph: CUDA graphs need a CUDA device", flush=True)
                continue
            try:
                fn = capture(x, layer, gw, cfg, me)
            except RuntimeError as e:
                reason = f"graph capture failed, eager only: {str(e).splitlines()[0]}"
                if me.rank == 0:
                    print(f"  skip torch-ep-a2a-graph: {reason}", flush=True)
                    if records:
                        records[-1]["notes"] = "; ".join(filter(None, [records[-1]["notes"], reason]))
                continue
        else:
            fn = functools.partial(forward_ep, x, layer, gw, cfg, me)
        out = fn().clone()
        if eager_out is None:
            eager_out = out
        else:
            d = C.rel_diff(out, eager_out)
            if d > C.TOLERANCE[cfg.dtype]:
                notes.append(f"rank {me.rank}: differs from {IMPL['eager']} by {d:.2e}")
        ok, err, note = verify(out, notes)
        times = _gather_max(C.time_fn(fn, args.iters, args.warmup, dev, before=barrier), dev)
        if me.rank == 0:
            rec = C.make_record(IMPL[name], dev, me.world, cfg, times, ok, err, args.seed, touched, note)
            C.print_table([rec])
            records.append(rec)
        del fn
    return records


def worker(rank: int, world: int, port: int, args: argparse.Namespace, configs: list[C.MoeConfig],
           status: mp.SimpleQueue) -> None:
    """One rank: joins the process group, runs every config, rank 0 writes the results and puts
    ``all verified`` on ``status``."""
    if args.device == "cuda":
        dev = torch.device("cuda", rank)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, device_id=dev)
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        C.self_check_generator(args.seed, configs[0].dtype, dev)
        records = []
        for cfg in configs:
            if rank == 0:
                print(f"== {cfg.label()}  world {world}", flush=True)
            recs = run_config(cfg, args, Rank.of(rank, world, dev, cfg.experts))
            if rank == 0:
                C.write_jsonl(args.out, recs)
            records += recs
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if rank == 0:
            if len(configs) > 1:
                print()
                C.print_table(records)
            status.put(all(r["verified"] for r in records))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_config_args(p)
    p.add_argument("--world", type=int, help="ranks (default: visible GPUs; 1 on --device cpu)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    args = p.parse_args(argv)
    configs = C.parse_variants_and_configs(p, args, VARIANTS)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device visible (use --device cpu for a functional check over gloo)")
    gpus = torch.cuda.device_count() if args.device == "cuda" else 1
    world = args.world if args.world is not None else gpus
    if world <= 0:
        p.error("--world must be > 0")
    if args.device == "cuda" and world > gpus:
        # NCCL 2.28 answers "Duplicate GPU detected" at communicator creation (seen on an H200).
        p.error(f"--world {world} needs {world} GPUs, {gpus} visible: NCCL refuses two ranks on one GPU")
    ctx = mp.get_context("spawn")
    status = ctx.SimpleQueue()
    mp.start_processes(worker, args=(world, _free_port(), args, configs, status), nprocs=world,
                       join=True, start_method="spawn")
    return 0 if not status.empty() and status.get() else 1


if __name__ == "__main__":
    sys.exit(main())
