"""``flashdmoe.MoE``: one rank's MoE layer as a ``torch.nn.Module``."""

from __future__ import annotations

import os
import weakref
from typing import Iterable, Mapping, Optional, Union

import torch

from . import _native, _ops

_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}

PathLike = Union[str, os.PathLike]


def _dtype_name(dtype: Union[torch.dtype, str]) -> str:
    """Core's name of a layer dtype given as a torch dtype or a name (``"f32-exact"``)."""
    if isinstance(dtype, str):
        return dtype
    if dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype]
    raise TypeError(
        f"dtype {dtype} is not supported: use torch.bfloat16, torch.float16, torch.float32 "
        "or 'f32-exact'"
    )


def _group_size(group) -> int:
    """Ranks of ``group`` (``None``: one)."""
    if group is None:
        return 1
    return torch.distributed.get_world_size(group)


class MoE(torch.nn.Module):
    """A Mixture-of-Experts layer: router, ``experts`` FFN experts, top-k weighted combine.

    ``y = moe(x)`` routes each row of ``x`` (``[tokens, hidden]``, the layer's dtype) with
    the layer's router (softmax, top-k, renormalized when ``renormalize``); ``y = moe(x,
    topk_ids=..., topk_weights=...)`` takes the routing as given (``[tokens, top_k]`` expert
    indices, int32/int64, and combine weights, float32 or the layer's dtype, used as given).

    The weights are parameters (``requires_grad=False``) under the names of FlashDMoE's
    safetensors files: ``router.weight`` ``[E, H]``, ``experts.up.weight`` ``[E, I, H]``,
    ``experts.gate.weight`` (SwiGLU), ``experts.down.weight`` ``[E, H, I]`` and, with
    ``bias=True``, ``experts.{up,gate,down}.bias``. They start as FlashDMoE's seeded weights
    for ``seed``; ``load_weights`` takes a state dict with these or Hugging Face
    Mixtral / Qwen-MoE names, ``load_safetensors`` a checkpoint.

    ``capacity_factor=None`` is dropless; a factor ``f`` keeps at most
    ``ceil(f * tokens * top_k / experts)`` tokens per expert (lower token index first).
    ``dtype`` is ``torch.bfloat16``, ``torch.float16``, ``torch.float32`` or ``"f32-exact"``
    (float32 tensors; on GPU, no tensor cores). ``group=None`` is one rank. Calls take at most
    ``max_tokens`` tokens. Forward only: the op has no backward.

    ``pairs`` chooses paired GEMM0 tasks on CUDA (two SMs of a 2-CTA cluster compute two row
    tiles of an expert's column tile and read its weights once; docs/dev/paired-tasks.md):
    ``None`` (the default) pairs where an expert's GEMM0 weights do not fit in L2 (measured
    1-6% faster there: DeepSeek-V3 3.4% sustained), ``True`` pairs any layer that can (an
    error naming ``pairs`` where it cannot), ``False`` never. The output is the same bits
    either way; on CPU tensors ``True`` runs the simulator's paired schedule (three processor
    threads, one cluster).

    ``group`` (a ``torch.distributed`` process group of ``W`` ranks, one process per GPU)
    makes the module one rank of a layer of ``W`` ranks: each rank's GPU holds the router and
    its own ``experts / W`` experts (the module's parameters stay the whole layer on every rank;
    the upload slices them), and ``moe(x)`` runs that rank's tokens. Every rank of the group
    must build the module with the same arguments and weights and call it the same number of
    times with the same token count (a call is collective). The first CUDA call bootstraps
    through the group (``group_timeout`` seconds at most a step); CPU tensors are refused.
    """

    def __init__(
        self,
        hidden: int,
        inter: int,
        experts: int,
        top_k: int,
        activation: str = "relu",
        capacity_factor: Optional[float] = None,
        renormalize: bool = True,
        dtype: Union[torch.dtype, str] = torch.bfloat16,
        group=None,
        max_tokens: int = 4096,
        *,
        bias: bool = False,
        seed: int = 0,
        device: Optional[Union[torch.device, str]] = None,
        group_timeout: float = 120.0,
        pairs: Optional[bool] = None,
    ):
        super().__init__()
        self.group = group
        self.group_size = _group_size(group)
        self.group_timeout = group_timeout
        # A group of one rank is group=None; a larger one is joined by the first CUDA call.
        self._joined = self.group_size == 1
        if pairs is not None and not isinstance(pairs, bool):
            raise TypeError(f"pairs must be None, True or False, not {pairs!r}")
        self._engine = _native.Engine(
            hidden, inter, experts, top_k, activation, _dtype_name(dtype),
            capacity_factor, renormalize, bias, max_tokens, pairs=pairs,
        )
        self.pairs = pairs
        self.hidden, self.inter, self.num_experts, self.top_k = hidden, inter, experts, top_k
        self.activation, self.capacity_factor = activation, capacity_factor
        self.renormalize, self.bias, self.max_tokens = renormalize, bias, max_tokens
        self.dtype = getattr(torch, self._engine.torch_dtype_name)
        self._shapes = {name: shape for _field, name, shape in self._engine.tensor_names()}
        self._names = list(self._shapes)
        initial = self._host_tensors()
        self._engine.generate_weights(seed, initial)
        for name, value in initial.items():
            self._register(name, torch.nn.Parameter(value, requires_grad=False))
        # Each weight's dotted name split once (``get_parameter`` splits and checks it on every
        # call: ~10 us a weight of each call's host time); a call then walks plain dicts.
        self._paths = [tuple(name.split(".")) for name in self._names]
        if device is not None:
            self.to(device)
        self._handle = _ops.bind(self._engine, self._names)
        weakref.finalize(self, _ops.unbind, self._handle)

    @property
    def layer_dtype(self) -> str:
        """FlashDMoE's name of the layer's dtype (``bf16``, ``f16``, ``f32``, ``f32-exact``)."""
        return self._engine.dtype

    @property
    def tolerance(self) -> float:
        """FlashDMoE's verification tolerance for the dtype: the largest accepted difference
        from a float64 reference, relative to the row's largest value."""
        return self._engine.tolerance

    def _register(self, name: str, param: torch.nn.Parameter) -> None:
        """Registers ``param`` at a dotted name, creating the containers on the way."""
        *path, leaf = name.split(".")
        module: torch.nn.Module = self
        for part in path:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        module.register_parameter(leaf, param)

    def _weights(self) -> list[torch.Tensor]:
        out = []
        for *path, leaf in self._paths:
            module = self
            for part in path:
                module = module._modules.get(part)
                if module is None:
                    break
            weight = None if module is None else module._parameters.get(leaf)
            if weight is None:
                name = ".".join((*path, leaf))
                raise AttributeError(f"flashdmoe.MoE: the weight {name} is missing from the module")
            out.append(weight)
        return out

    def _host_tensors(self) -> dict[str, torch.Tensor]:
        """Empty CPU tensors, one per weight, for the engine to write into."""
        return {n: torch.empty(s, dtype=self.dtype) for n, s in self._shapes.items()}

    @torch.no_grad()
    def _assign(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self.get_parameter(name).copy_(value)

    def load_weights(
        self, state_dict: Mapping[str, torch.Tensor], prefix: Optional[str] = None
    ) -> "MoE":
        """Loads this layer's weights from a state dict with FlashDMoE's names, Mixtral's
        (``block_sparse_moe.gate.weight``, ``block_sparse_moe.experts.{e}.w1/w2/w3.weight``)
        or Hugging Face Qwen-MoE / OLMoE / DeepSeek's (``mlp.gate.weight``,
        ``mlp.experts.{e}.gate_proj/up_proj/down_proj.weight``), under an optional layer
        ``prefix`` (``"model.layers.3."``; found by itself when the dict holds one layer).
        bf16, f16 and f32 tensors are accepted and rounded to the layer's dtype."""
        values = self._host_tensors()
        self._engine.load_state_dict(dict(state_dict), values, prefix)
        self._assign(values)
        return self

    def load_safetensors(
        self, paths: Union[PathLike, Iterable[PathLike]], prefix: Optional[str] = None
    ) -> "MoE":
        """Loads this layer's weights from safetensors files (one, or a checkpoint's shards),
        with the names and ``prefix`` rules of ``load_weights``; only the layer's tensors are
        read."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        values = self._host_tensors()
        self._engine.load_safetensors([os.fspath(p) for p in paths], values, prefix)
        self._assign(values)
        return self

    def save_safetensors(self, path: PathLike) -> None:
        """Writes the weights as a safetensors file with FlashDMoE's names, in the layer's
        dtype."""
        weights = [w.detach().to("cpu").contiguous() for w in self._weights()]
        self._engine.set_weights(dict(zip(self._names, weights)))
        _ops.binding(self._handle).key = None
        self._engine.save_safetensors(os.fspath(path))

    def forward(
        self,
        x: torch.Tensor,
        topk_ids: Optional[torch.Tensor] = None,
        topk_weights: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if not self._joined:
            self._join(x)
        weights = self._weights()
        if isinstance(x, torch.Tensor) and x.device != weights[0].device:
            raise ValueError(
                f"x is on {x.device} but the layer's weights are on {weights[0].device}"
            )
        # The op's overload itself (resolving it through the packet costs a few us a call).
        op = torch.ops.flashdmoe.moe_forward.default
        return op(x, weights, topk_ids, topk_weights, self._handle)

    def _join(self, x) -> None:
        """The first call of a module with a group of several ranks: joins the group on x's
        GPU (collective; ``flashdmoe._group``). A CPU ``x`` is refused before any collective."""
        if not (isinstance(x, torch.Tensor) and x.device.type == "cuda"):
            where = x.device if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x is on {where}: a flashdmoe.MoE with a group of {self.group_size} ranks "
                "runs on CUDA only (one GPU per process: move the module and x to this rank's "
                "GPU); use group=None for the CPU simulator"
            )
        from . import _group

        device = x.device.index if x.device.index is not None else torch.cuda.current_device()
        self._engine.set_group(_group.join(self.group, device, self.group_timeout))
        self._joined = True

    @property
    def group_rank(self) -> int:
        """This process's rank in the layer's group (0 for ``group=None``)."""
        info = self._engine.group_info()
        if info is not None:
            return info[0]
        return 0 if self.group is None else torch.distributed.get_rank(self.group)

    def status(self) -> None:
        """Raises ``TimeoutError`` with the kernel's report if a wait inside the last CUDA
        forward gave up (a CUDA forward is asynchronous: call this once its stream finished,
        e.g. after ``torch.cuda.synchronize()``). Nothing to report on the CPU."""
        self._engine.status()

    def extra_repr(self) -> str:
        return (
            f"hidden={self.hidden}, inter={self.inter}, experts={self.num_experts}, "
            f"top_k={self.top_k}, activation={self.activation!r}, "
            f"capacity_factor={self.capacity_factor}, renormalize={self.renormalize}, "
            f"dtype={self.layer_dtype}, bias={self.bias}, max_tokens={self.max_tokens}"
            + (f", group_size={self.group_size}" if self.group_size > 1 else "")
        )
