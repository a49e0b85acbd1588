"""The ``flashdmoe::moe_forward`` custom op, and the table of live layers it runs.

The op is functional: ``moe_forward(x, weights, topk_ids, topk_weights, handle) -> y`` with
``y`` a new tensor of ``x``'s shape, dtype and device. ``weights`` are the module's tensors
(so tracing sees the dependency) and ``handle`` names the module's native engine in
``_BINDINGS``. The fake (meta) implementation only allocates ``y``, so ``torch.compile``
traces through the op without running it.
"""

from __future__ import annotations

import itertools
import threading
from typing import Optional

import torch

_BINDINGS: dict[int, "Binding"] = {}
_NEXT = itertools.count(1)
_LOCK = threading.Lock()


def _weights_key(weights: list[torch.Tensor]) -> Optional[tuple]:
    """What identifies the weights' current values: each tensor's address and version counter
    (bumped by every in-place write). None when it cannot be known (inference tensors have no
    version counter): then the weights are handed over again on every call."""
    try:
        return tuple((w.data_ptr(), w._version) for w in weights)
    except RuntimeError:
        return None


class Binding:
    """A module's native engine and the key of the weights it last handed to it."""

    def __init__(self, engine, names: list[str]):
        self.engine = engine
        self.names = names
        self.key: Optional[tuple] = None

    def sync(self, weights: list[torch.Tensor]) -> None:
        """Hands the weights to the engine when they changed since the last call (a CUDA
        module's are copied to the host for that, and the engine uploads them to its GPU
        layer again: a weight update costs a rebuild, a forward does not)."""
        key = _weights_key(weights)
        if key is None or key != self.key:
            host = [w.detach().to("cpu").contiguous() for w in weights]
            self.engine.set_weights(dict(zip(self.names, host)))
            self.key = key


def bind(engine, names: list[str]) -> int:
    """Registers a module's engine; returns its handle."""
    with _LOCK:
        handle = next(_NEXT)
        _BINDINGS[handle] = Binding(engine, names)
    return handle


def unbind(handle: int) -> None:
    """Forgets a module's engine (when the module is collected)."""
    with _LOCK:
        _BINDINGS.pop(handle, None)


def binding(handle: int) -> Binding:
    """The binding of a live module."""
    try:
        return _BINDINGS[handle]
    except KeyError:
        raise RuntimeError(
            f"flashdmoe::moe_forward: no live flashdmoe.MoE has handle {handle}"
        ) from None


@torch.library.custom_op("flashdmoe::moe_forward", mutates_args=())
def moe_forward(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    topk_ids: Optional[torch.Tensor],
    topk_weights: Optional[torch.Tensor],
    handle: int,
) -> torch.Tensor:
    """One MoE forward of ``x`` ([tokens, hidden]) by the layer ``handle`` names."""
    b = binding(handle)
    # Both backends build from core's host copy of the weights.
    b.sync(weights)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    # A CUDA forward runs on PyTorch's current stream of x's device, asynchronously; a given
    # routing goes to the kernel as int32 ids and float32 weights (device-side conversions).
    stream = 0
    if x.device.type == "cuda":
        stream = torch.cuda.current_stream(x.device).cuda_stream
        if topk_ids is not None:
            topk_ids = topk_ids.to(torch.int32).contiguous()
        if topk_weights is not None:
            topk_weights = topk_weights.to(torch.float32).contiguous()
    b.engine.forward(x, out, topk_ids, topk_weights, stream)
    return out


@moe_forward.register_fake
def _moe_forward_fake(x, weights, topk_ids, topk_weights, handle):
    return x.new_empty(x.shape)
