"""CPU end-to-end tests of the two baseline scripts (``torch_single.py``, ``torch_ep.py``).

The GPU-only parts (CUDA graphs, NCCL, ``_grouped_mm``'s CUTLASS path) cannot run here; these
tests run everything else through the real command lines on ``--device cpu`` (gloo for the
expert-parallel script). Run with pytest or ``python3 test_scripts.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import tempfile

import torch
import torch.distributed as dist

import common as C
import torch_ep as EP
import torch_mm as MM
import torch_single as S

SMALL = ["--device", "cpu", "--tokens", "96", "--hidden", "64", "--inter", "128", "--experts", "8",
         "--iters", "2", "--warmup", "1"]


def _records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_single_cli_runs_verifies_and_writes_jsonl(tmp_path: pathlib.Path):
    out = tmp_path / "single.jsonl"
    for extra in (["--capacity", "1", "--activation", "swiglu", "--bias"], ["--dtype", "f16", "--activation", "gelu"]):
        assert S.main(SMALL + extra + ["--out", str(out)]) == 0
    recs = _records(out)
    # CUDA graphs are skipped on CPU: loop and grouped for each of the two configs.
    assert [r["impl"] for r in recs] == ["torch-loop-eager", "torch-grouped-eager"] * 2
    assert all(r["verified"] and r["iterations"] == 2 and r["world"] == 1 for r in recs)
    assert recs[0]["config"]["capacity"] == 1.0 and recs[2]["config"]["capacity"] == "dropless"


def test_dense_ceiling_pair_and_cpu_skip(tmp_path: pathlib.Path):
    g = torch.Generator().manual_seed(3)
    x, wg, wu, w2 = (torch.rand(s, generator=g, dtype=torch.float64) - 0.5 for s in ((5, 8), (4, 8), (4, 8), (8, 4)))
    cfg = C.MoeConfig(5, 8, 4, 2, 1, "swiglu", "f32")
    want = (torch.nn.functional.silu(x @ wg.t()) * (x @ wu.t())) @ w2.t()
    assert torch.allclose(S.dense_pair(cfg, x, torch.cat([wg, wu]), w2), want)
    relu = C.MoeConfig(5, 8, 4, 2, 1, "relu", "f32")
    assert torch.allclose(S.dense_pair(relu, x, wu, w2), torch.relu(x @ wu.t()) @ w2.t())
    # The ceiling is a GPU measurement: on CPU it is skipped and writes nothing.
    out = tmp_path / "dense.jsonl"
    assert S.main(SMALL + ["--variants", "dense", "--out", str(out)]) == 0
    assert not out.exists() or out.read_text() == ""


def test_mm_ceiling_checks_and_prints_each_shape():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert MM.main(["--device", "cpu", "--dtype", "f32", "--shape", "33", "16", "24", "--shape", "8", "8", "8",
                        "--iters", "2", "--warmup", "0"]) == 0
    lines = printed.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["torch.mm m33 n16 k24 f32", "torch.mm m8 n8 k8 f32"]
    assert all("TFLOP/s" in line for line in lines)
    # The check that guards the timing fails on a wrong product.
    a, b = torch.ones(4, 8), torch.ones(3, 8)
    try:
        MM.checked(a, b, torch.zeros(4, 3))
    except RuntimeError as e:
        assert "differs" in str(e)
    else:
        raise AssertionError("a wrong product passed the check")
    for bad in (["--shape", "0", "8", "8"], ["--shape", "8", "8", "8", "--iters", "0"]):
        try:
            MM.main(["--device", "cpu"] + bad)
        except SystemExit as e:
            assert e.code == 2, bad
        else:
            raise AssertionError(f"{bad} was accepted")


def test_single_cli_refuses_bad_input():
    for bad in (["--hidden", "100"], ["--variants", "loop,nope"], ["--capacity", "lots"], ["--top-k", "9"]):
        try:
            S.main(SMALL + bad)
        except SystemExit as e:
            assert e.code == 2, bad
        else:
            raise AssertionError(f"{bad} must be refused")


def test_ep_cli_over_gloo(tmp_path: pathlib.Path):
    out = tmp_path / "ep.jsonl"
    # 3 ranks, 8 experts: ranks own 3, 3 and 2 experts; capacity 1 drops some slots.
    assert EP.main(SMALL + ["--world", "3", "--capacity", "1", "--out", str(out)]) == 0
    [rec] = _records(out)
    assert rec["impl"] == "torch-ep-a2a-eager" and rec["world"] == 3 and rec["verified"]


def test_ep_world_one_equals_the_single_gpu_forward(tmp_path: pathlib.Path):
    cfg = C.MoeConfig(64, 64, 128, 6, 2, "swiglu", "bf16", 1.0, True)
    dev = torch.device("cpu")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        me = EP.Rank.of(0, 1, dev, cfg.experts)
        layer = C.generate_layer(cfg, 9, dev)
        gw = C.GroupedWeights.of(layer)
        x = C.generate_input(cfg, 0, 9, dev)
        ep = EP.forward_ep(x, layer, gw, cfg, me)
        assert torch.equal(ep, S.forward_grouped(x, layer, gw, cfg))
        assert torch.equal(EP.forward_ep(x, layer, gw, cfg, me, EP.frozen_splits(x, layer, cfg, me)), ep)
    finally:
        dist.destroy_process_group()


def test_rank_placement_is_contiguous():
    shares = [EP.Rank.of(r, 4, torch.device("cpu"), 10) for r in range(4)]
    assert [(s.first, s.owned) for s in shares] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    shares = [EP.Rank.of(r, 3, torch.device("cpu"), 4) for r in range(3)]
    assert [(s.first, s.owned) for s in shares] == [(0, 2), (2, 2), (4, 0)]


if __name__ == "__main__":
    import traceback

    failed = 0
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    for name, fn in tests:
        try:
            fn(pathlib.Path(tempfile.mkdtemp())) if fn.__code__.co_argcount else fn()
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    raise SystemExit(1 if failed else 0)
