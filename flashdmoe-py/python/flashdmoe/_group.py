"""The bootstrap of ``flashdmoe.MoE(..., group=pg)`` through the caller's ``torch.distributed``
group: every rank of ``pg`` joins FlashDMoE's own process group (rendezvous store, liveness
mesh, NCCL communicator; ``flashdmoe_cuda::layer::process``) with no extra environment.

1. ``all_gather_object`` over ``pg`` of each rank's (host name, GPU, problem), where the
   problem is ``_native.probe()`` (NCCL not loadable, too old, or NCCL variables that turn
   the windows off). A problem on any rank, or two ranks on one GPU of one host, raises the
   same exception on every rank, naming them: nothing is left waiting.
2. Rank 0 of ``pg`` binds the store on an ephemeral port (``127.0.0.1`` when every rank is on
   its host, else ``MASTER_ADDR`` or the host's name) and ``broadcast_object_list`` hands the
   address to the others (or rank 0's bind error, raised everywhere).
3. Every rank calls ``_native.Group.join(address, rank in pg, size of pg, its GPU)``: the store,
   the mesh and NCCL, each with the deadline ``timeout_s``.

Steps 1 and 2 are plain ``torch.distributed`` collectives: they run on a gloo group on CPU too
(the CPU tests use that). Under an NCCL group they run with ``device`` as the current GPU.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Callable, Optional

import torch
import torch.distributed as dist

from . import _native

# Each bootstrap step's deadline (the store, the mesh, NCCL's communicator and the symmetric
# heap): the ranks meet again after building their kernels, and a first NVRTC compile of a
# large layer can take a minute.
DEFAULT_TIMEOUT_S = 120.0


def _global_src(group) -> int:
    """The global rank of rank 0 of ``group`` (what ``broadcast_object_list``'s ``src`` is)."""
    if group is None or group is dist.group.WORLD:
        return 0
    return dist.get_global_rank(group, 0)


def _device_scope(group, device: int):
    """Object collectives of an NCCL group use the current CUDA device: make it ``device``."""
    backend = dist.get_backend(group)
    if "nccl" in str(backend).lower() and torch.cuda.is_available():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def check_members(infos: list) -> None:
    """Raises the exception every rank raises for the gathered ``(host, device, problem)``:
    a problem on a rank, or two ranks on one GPU of one host."""
    problems = [(r, p) for r, (_h, _d, p) in enumerate(infos) if p]
    if problems:
        lines = "; ".join(f"rank {r}: {p}" for r, p in problems)
        raise RuntimeError(f"flashdmoe: the group cannot run the layer: {lines}")
    seen: dict[tuple, int] = {}
    for r, (host, device, _p) in enumerate(infos):
        other = seen.setdefault((host, device), r)
        if other != r:
            raise ValueError(
                f"flashdmoe: ranks {other} and {r} of the group both use cuda:{device} on host "
                f"{host}: each rank needs a GPU of its own (call "
                "torch.cuda.set_device(int(os.environ['LOCAL_RANK'])) before building the "
                "module, and keep x on that GPU)"
            )


def store_host_name(infos: list) -> str:
    """Where the others reach rank 0's store: loopback when every rank shares its host."""
    if all(h == infos[0][0] for h, _d, _p in infos):
        return "127.0.0.1"
    return os.environ.get("MASTER_ADDR") or socket.getfqdn()


def rendezvous(
    group,
    device: int,
    *,
    probe: Callable[[], Optional[str]] = _native.probe,
    bind: Callable[[str], object] = _native.StoreHost.bind,
):
    """Steps 1 and 2: returns ``(rank, world, address, store_host)`` (``store_host`` on rank
    0 only), or raises the same error on every rank."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if rank < 0:
        raise ValueError("flashdmoe: this process is not a member of the group it was given")
    with _device_scope(group, device):
        infos: list = [None] * world
        dist.all_gather_object(infos, (socket.gethostname(), int(device), probe()), group=group)
        check_members(infos)
        host = None
        message: list = [None]
        if rank == 0:
            try:
                host = bind(store_host_name(infos))
                message[0] = ("ok", host.address)
            except Exception as e:  # noqa: BLE001: handed to every rank, then raised
                message[0] = ("error", f"{type(e).__name__}: {e}")
        dist.broadcast_object_list(message, src=_global_src(group), group=group)
    kind, value = message[0]
    if kind != "ok":
        raise RuntimeError(f"flashdmoe: rank 0 of the group could not host the store: {value}")
    return rank, world, value, host


def join(group, device: int, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Steps 1 to 3: this rank's ``_native.Group`` on GPU ``device``."""
    rank, world, address, host = rendezvous(group, device)
    return _native.Group.join(address, rank, world, device, host, timeout_s)
