"""flashdmoe.MoE(..., group=pg) without a GPU: two processes in a gloo group test the
bootstrap's plumbing (the gathered checks, the address broadcast) and its error paths, each
of which must raise the same clear exception on every rank, never hang."""

import datetime
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flashdmoe
from flashdmoe import _group
from reference import inputs

SMALL = dict(hidden=64, inter=128, experts=4, top_k=2, max_tokens=64)
DEADLINE_S = 90


def expect(error, match, fn):
    """Runs `fn`; returns the message of the `error` it must raise (matching `match`)."""
    try:
        fn()
    except error as e:
        assert match in str(e), f"{type(e).__name__}: {e!r} lacks {match!r}"
        return str(e)
    raise AssertionError(f"no {error.__name__} ({match!r}) raised")


def scenarios(rank, world):
    """Every scenario, in order, on rank `rank`; each collective scenario runs on every rank."""
    g = dist.group.WORLD
    # A module with a group of 2 builds on CPU; a CPU call is refused before any collective.
    moe = flashdmoe.MoE(**SMALL, group=g)
    assert moe.group_size == 2 and moe.group_rank == rank
    expect(ValueError, "runs on CUDA only", lambda: moe(inputs(4, 64, torch.bfloat16)))
    # The address: rank 0 binds an ephemeral loopback port (one host), every rank gets it.
    r, w, address, host = _group.rendezvous(g, device=rank, probe=lambda: None)
    assert (r, w) == (rank, world)
    assert address.startswith("127.0.0.1:") and not address.endswith(":0"), address
    assert (host is not None) == (rank == 0)
    if host is not None:
        assert host.address == address
    seen = [None] * world
    dist.all_gather_object(seen, address)
    assert len(set(seen)) == 1, seen
    # Two ranks on one GPU of one host.
    expect(ValueError, "ranks 0 and 1 of the group both use cuda:0",
           lambda: _group.rendezvous(g, device=0, probe=lambda: None))
    # A rank without NCCL: every rank raises, naming it.
    missing = lambda: "NCCL is missing (test)" if rank == 1 else None  # noqa: E731
    expect(RuntimeError, "rank 1: NCCL is missing (test)",
           lambda: _group.rendezvous(g, device=rank, probe=missing))

    # Rank 0 cannot bind: every rank raises rank 0's reason.
    def refuse(_host):
        raise OSError("no port for you (test)")

    expect(RuntimeError, "could not host the store: OSError: no port for you (test)",
           lambda: _group.rendezvous(g, device=rank, probe=lambda: None, bind=refuse))
    # The real join on this machine (no GPU; NCCL absent or present): a clear RuntimeError on
    # every rank within the deadline, never a hang.
    expect(RuntimeError, "flashdmoe", lambda: _group.join(g, device=rank, timeout_s=10))


def worker(rank, world, init, out):
    try:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=60))
        scenarios(rank, world)
        dist.barrier()
        dist.destroy_process_group()
        with open(os.path.join(out, f"{rank}.ok"), "w") as f:
            f.write("ok")
    except BaseException:  # noqa: BLE001: reported to the parent
        with open(os.path.join(out, f"{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        raise


def test_two_gloo_ranks_bootstrap_plumbing_and_errors(tmp_path):
    world = 2
    ctx = mp.start_processes(worker, args=(world, str(tmp_path / "init"), str(tmp_path)),
                             nprocs=world, join=False, start_method="spawn")
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=DEADLINE_S)
    try:
        while not ctx.join(timeout=1):
            if datetime.datetime.now() > deadline:
                pytest.fail(f"the 2 ranks did not finish within {DEADLINE_S} s (a hang)")
    except mp.ProcessRaisedException:
        pass
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    errors = {p.name: p.read_text() for p in tmp_path.glob("*.err")}
    assert not errors, "\n".join(f"{k}:\n{v}" for k, v in errors.items())
    assert sorted(p.name for p in tmp_path.glob("*.ok")) == ["0.ok", "1.ok"]


def test_check_members_names_the_problem():
    with pytest.raises(RuntimeError, match="rank 1: no NCCL"):
        _group.check_members([("h", 0, None), ("h", 1, "no NCCL")])
    with pytest.raises(ValueError, match="ranks 0 and 2 of the group both use cuda:1 on host a"):
        _group.check_members([("a", 1, None), ("b", 1, None), ("a", 1, None)])
    _group.check_members([("a", 0, None), ("b", 0, None)])
    assert _group.store_host_name([("a", 0, None), ("a", 1, None)]) == "127.0.0.1"


def test_the_native_store_host_binds_an_ephemeral_port():
    host = flashdmoe._native.StoreHost.bind("127.0.0.1")
    assert host.address.startswith("127.0.0.1:") and int(host.address.rsplit(":", 1)[1]) > 0
    with pytest.raises(RuntimeError, match="cannot bind the group's store"):
        flashdmoe._native.StoreHost.bind("")
    with pytest.raises(ValueError, match="rank 0 of a group must pass its StoreHost"):
        flashdmoe._native.Group.join(host.address, 0, 2, 0)
    with pytest.raises(ValueError, match="not host:port"):
        flashdmoe._native.Group.join("nohost", 1, 2, 0)
