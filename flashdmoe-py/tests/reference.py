"""A plain PyTorch MoE in float64: what flashdmoe.MoE is tested against.

router softmax -> top-k (descending probability) -> renormalize -> capacity (per expert, lower
token index first) -> experts (relu / exact gelu / swiglu, optional biases) -> weighted sum.
"""

import math

import torch


def expert_outputs(x, w, activation):
    """[E, T, H]: every expert applied to every token, in float64."""
    up = torch.einsum("th,eih->eti", x, w["experts.up.weight"].double())
    if "experts.up.bias" in w:
        up = up + w["experts.up.bias"].double()[:, None, :]
    if activation == "relu":
        h = torch.relu(up)
    elif activation == "gelu":
        h = torch.nn.functional.gelu(up)  # exact (erf) GELU
    else:
        gate = torch.einsum("th,eih->eti", x, w["experts.gate.weight"].double())
        if "experts.gate.bias" in w:
            gate = gate + w["experts.gate.bias"].double()[:, None, :]
        h = torch.nn.functional.silu(gate) * up
    y = torch.einsum("eti,ehi->eth", h, w["experts.down.weight"].double())
    if "experts.down.bias" in w:
        y = y + w["experts.down.bias"].double()[:, None, :]
    return y


def route(x, router, top_k, renormalize):
    """(ids, weights), each [T, top_k], from the router in float64."""
    probs = torch.softmax(x @ router.double().T, dim=-1)
    p, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        p = p / p.sum(dim=-1, keepdim=True)
    return ids, p


def kept(ids, experts, capacity_factor):
    """[T, top_k] bool: which (token, slot) pairs fit their expert's capacity."""
    keep = torch.ones(ids.shape, dtype=torch.bool)
    if capacity_factor is None:
        return keep
    tokens, k = ids.shape
    capacity = math.ceil(capacity_factor * tokens * k / experts)
    used = [0] * experts
    for t in range(tokens):
        for j in range(k):
            e = int(ids[t, j])
            keep[t, j] = used[e] < capacity
            used[e] += int(keep[t, j])
    return keep


def moe(x, w, *, top_k, activation, renormalize=True, capacity_factor=None, routing=None):
    """The layer's output in float64 for x [T, H] and weights w (FlashDMoE's names)."""
    x = x.double()
    experts = w["router.weight"].shape[0]
    if routing is None:
        ids, p = route(x, w["router.weight"], top_k, renormalize)
    else:
        ids, p = routing[0].long(), routing[1].double()
    p = p * kept(ids, experts, capacity_factor)
    y = expert_outputs(x, w, activation)
    tokens = torch.arange(x.shape[0])
    out = torch.zeros_like(x)
    for j in range(ids.shape[1]):
        out += p[:, j : j + 1] * y[ids[:, j], tokens]
    return out


def assert_rows_close(actual, expected, tolerance):
    """Every row within tolerance x the row's largest reference value (FlashDMoE's rule)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30)
    err = ((actual - expected).abs() / scale).amax(dim=-1)
    worst = int(err.argmax()) if err.numel() else 0
    assert err.numel() == 0 or err.max() <= tolerance, (
        f"row {worst}: relative error {float(err.max()):.3e} > {tolerance:.3e}"
    )


def inputs(tokens, hidden, dtype, seed=0):
    """Seeded standard-normal rows in `dtype`."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, hidden, generator=g).to(dtype)


def weights_of(moe):
    """A module's weights by FlashDMoE's names."""
    return {k: v.detach() for k, v in moe.state_dict().items()}
