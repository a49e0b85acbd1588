"""Shared pieces of the PyTorch MoE baselines (``torch_single.py``, ``torch_ep.py``).

Layers, from the bottom:

* **Config** (:class:`MoeConfig`, :data:`PRESETS`, :func:`paper_grid`, :func:`add_config_args`,
  :func:`configs_from_args`): the MoE layer shape and its validation, with the same rules and
  names as flashdmoe-core's ``MoeConfig`` (dtype names ``bf16 f16 f32 f32-exact``).
* **Seeded data** (:func:`generate`, :func:`generate_layer`, :func:`generate_input`,
  :func:`reference_values`): the team's splitmix64 scheme, vectorised in torch ``int64``
  arithmetic (any element is computable directly, so a slice of a tensor -- one expert's
  weights, say -- is generated without the rest), plus a scalar pure-Python version used as the
  ground truth by the tests and by the scripts' start-up self-check.
* **Routing** (:func:`route`, :func:`capacity_keep`, :func:`plan_dispatch`): router, top-k,
  capacity and the permutation that groups token rows by expert.
* **Expert math** (:class:`GroupedWeights`, :func:`grouped_ffn`, :func:`combine`,
  :func:`activate`).
* **Verification** (:func:`check_rows`): a float64 reference for a sample of token rows.
* **Floors, timing, results** (:func:`flops`, :func:`floor_ms`, :func:`time_fn`,
  :func:`summarize`, :func:`make_record`, :func:`write_jsonl`, :func:`print_table`).

Invariants:

* The generator defines the same numbers as ``flashdmoe-core/src/rng.rs`` and
  ``weights.rs``: tensor ``id`` under ``seed`` starts its stream at
  ``start = mix(seed ^ mix(id))`` (:func:`tensor_start`; ``mix`` is the splitmix64 finaliser),
  element ``n`` (row-major) is ``mix(start + (n + 1) * GAMMA)`` (wrapping) mapped to
  ``(2u - 1) * scale`` in f32 with ``u = (x >> 40) * 2^-24``, then rounded to the dtype
  (round to nearest, ties to even). Scales are f32: ``1/sqrt(H)`` for router, up and gate,
  ``1/sqrt(I)`` for down, 0.1 for biases, 1 for inputs. Change both or neither.
* Routing equals ``flashdmoe-core/src/routing.rs``: f32 logits (plus gpt-oss's router bias),
  f32 scores (softmax over E; or sigmoid, DeepSeek-V3; or the logits themselves for gpt-oss's
  softmax over the top-k), choice scores (plus DeepSeek-V3's selection bias; with grouped
  top-k the best groups by their best score or their top-two sum are kept and the others'
  experts set to 0.0, as transformers masks them), top-k by descending choice score with ties
  to the lower expert index (a *stable* descending sort keeps equal scores in index order),
  weights the unbiased scores of the chosen (a softmax over them for gpt-oss), renormalised
  over the chosen k when the config says so (sum in slot order, plus 1e-20 for sigmoid
  scores), times the routed scaling factor. Capacity is per ``(source rank, expert)`` packet:
  ``ceil(f * (T * k) / E)`` rows evaluated in f64 in that order, clamped to T (dropless: T);
  within a packet the lowest token indices are kept.
* Shared experts (Qwen2-MoE, DeepSeek) are one SwiGLU of ``count * inter`` every token visits,
  scaled by ``sigmoid(x . gate_row)`` with Qwen's gate, added after the routed sum; gpt-oss's
  experts are ``(clamp(up, -l, l) + 1) * g * sigmoid(1.702 g)``, ``g = min(gate, l)``. These
  model features (:attr:`MoeConfig.features`) come from the model presets, the
  ``models-t4096`` grid or ``--layer`` (a record's ``config`` object), and the result records
  describe them with the bench's fields and omission rule (:meth:`MoeConfig.to_json`).
* Nothing in :func:`route`, :func:`plan_dispatch`, :func:`grouped_ffn` or :func:`combine`
  synchronises the host with the device or has a data-dependent shape, so the single-GPU
  grouped forward can be captured in a CUDA graph and replayed for any routing.

Rounding points differ from ours where PyTorch offers no choice (documented per function); the
verification tolerance (:data:`TOLERANCE`, flashdmoe-core's ``DType::tolerance``) covers them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

SCHEMA = "flashdmoe-bench/1"

#: Element types: torch storage dtype and whether f32 matrix products may use TF32.
DTYPES = {
    "bf16": torch.bfloat16,
    "f16": torch.float16,
    "f32": torch.float32,
    "f32-exact": torch.float32,
}
ACTIVATIONS = ("relu", "gelu", "swiglu", "swiglu-oss")
SCORINGS = ("softmax", "sigmoid", "topk-softmax")
#: Group scores: ours (:attr:`MoeConfig.groups`) -> the records' and flashdmoe-core's names.
GROUP_SCORES = {"top2": "top2-sum", "max": "max"}

#: Verification tolerance per dtype: the largest accepted ``|out - ref|`` relative to the largest
#: ``|ref|`` of the same output row (flashdmoe-core ``DType::tolerance``).
TOLERANCE = {"bf16": 1 / 32, "f16": 1 / 256, "f32": 1 / 256, "f32-exact": 1 / 8192}

#: hidden and inter must be multiples of this (flashdmoe-core's tile rule; also satisfies the
#: 16-byte alignment ``torch._grouped_mm`` needs).
SIZE_MULTIPLE = 64


class ConfigError(ValueError):
    """A configuration problem, naming the offending field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"invalid config: {field}: {reason}")
        self.field = field


@dataclass(frozen=True)
class MoeConfig:
    """One MoE layer, per rank. ``capacity`` is a capacity factor, or ``None`` for dropless."""

    tokens: int
    hidden: int
    inter: int
    experts: int
    top_k: int
    activation: str = "relu"
    dtype: str = "bf16"
    capacity: float | None = None
    bias: bool = False
    # The model features (module doc; flashdmoe-core's Routing, SharedExperts, SwigluOss).
    renormalize: bool = True
    scoring: str = "softmax"
    router_bias: bool = False
    selection_bias: bool = False
    #: ``(count, keep, "max" | "top2")``: grouped top-k.
    groups: tuple[int, int, str] | None = None
    scaling: float = 1.0
    #: ``(count, inter, "none" | "sigmoid")``: shared experts and their gate.
    shared: tuple[int, int, str] | None = None
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0

    @property
    def features(self) -> bool:
        """Whether the layer has any model feature beyond the paper's (module doc)."""
        return (not self.renormalize or self.scoring != "softmax" or self.router_bias or self.selection_bias
                or self.groups is not None or self.scaling != 1.0 or self.shared is not None
                or self.activation == "swiglu-oss")

    @property
    def shared_inter(self) -> int:
        """The shared SwiGLU's intermediate size ``count * inter`` (0 without shared experts)."""
        return 0 if self.shared is None else self.shared[0] * self.shared[1]

    def validate(self) -> MoeConfig:
        """Returns ``self`` if valid, else raises :class:`ConfigError`."""
        for field in ("tokens", "hidden", "inter", "experts", "top_k"):
            v = getattr(self, field)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(field, f"{v!r} must be an integer > 0")
        if self.top_k > self.experts:
            raise ConfigError("top_k", f"{self.top_k} exceeds the number of experts ({self.experts})")
        for field in ("hidden", "inter"):
            if getattr(self, field) % SIZE_MULTIPLE:
                raise ConfigError(field, f"{getattr(self, field)} is not a multiple of {SIZE_MULTIPLE}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError("activation", f"{self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", f"{self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.capacity is not None and not (math.isfinite(self.capacity) and self.capacity > 0):
            raise ConfigError("capacity", f"factor {self.capacity} must be finite and > 0")
        if self.scoring not in SCORINGS:
            raise ConfigError("scoring", f"{self.scoring!r} is not one of {', '.join(SCORINGS)}")
        if self.scoring == "topk-softmax" and not self.renormalize:
            raise ConfigError("renormalize", "a softmax over the chosen k always sums to one")
        if not (math.isfinite(self.scaling) and self.scaling > 0):
            raise ConfigError("scaling", f"{self.scaling} must be finite and > 0")
        if self.groups is not None:
            count, keep, score = self.groups
            per = self.experts // count if count > 0 and self.experts % count == 0 else 0
            if per == 0 or not 1 <= keep <= count or score not in ("max", "top2") \
                    or (score == "top2" and per < 2) or keep * per < self.top_k:
                raise ConfigError("groups", f"{self.groups} does not fit {self.experts} experts, top-{self.top_k}")
        if self.shared is not None:
            count, inter, gate = self.shared
            if count <= 0 or inter <= 0 or (count * inter) % SIZE_MULTIPLE or gate not in ("none", "sigmoid"):
                raise ConfigError("shared", f"{self.shared}: count x inter a multiple of {SIZE_MULTIPLE}, "
                                            "gate none or sigmoid")
        if not (math.isfinite(self.swiglu_limit) and self.swiglu_limit > 0):
            raise ConfigError("swiglu_limit", f"{self.swiglu_limit} must be finite and > 0")
        return self

    @property
    def gated(self) -> bool:
        """Whether the experts have a gate projection beside the up projection (SwiGLU,
        gpt-oss's SwiGLU)."""
        return self.activation in ("swiglu", "swiglu-oss")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def elem_bytes(self) -> int:
        return self.torch_dtype.itemsize

    def capacity_rows(self) -> int:
        """Rows of one ``(source rank, expert)`` packet (module invariant)."""
        if self.capacity is None:
            return self.tokens
        rows = math.ceil(self.capacity * float(self.tokens * self.top_k) / float(self.experts))
        return min(rows, self.tokens)

    def to_json(self) -> dict:
        """The ``config`` object of the result schema: the paper's fields, then the model fields
        (``renormalize``, ``routing``, ``shared``, ``swiglu_alpha``, ``swiglu_limit``) only where
        the layer differs from the paper's, exactly as flashdmoe-bench's ``record.rs`` writes
        them (:data:`GROUP_SCORES`' JSON names), so a paper record is unchanged."""
        out = {
            "tokens_per_rank": self.tokens,
            "hidden": self.hidden,
            "inter": self.inter,
            "experts": self.experts,
            "top_k": self.top_k,
            "activation": self.activation,
            "dtype": self.dtype,
            "capacity": "dropless" if self.capacity is None else self.capacity,
            "bias": self.bias,
        }
        if not self.renormalize:
            out["renormalize"] = False
        if (self.scoring, self.router_bias, self.selection_bias, self.groups, self.scaling) != \
                ("softmax", False, False, None, 1.0):
            routing = {"scoring": self.scoring, "router_bias": self.router_bias,
                       "selection_bias": self.selection_bias}
            if self.groups is not None:
                count, keep, score = self.groups
                routing["groups"] = {"count": count, "keep": keep, "score": GROUP_SCORES[score]}
            routing["scaling"] = float(self.scaling)
            out["routing"] = routing
        if self.shared is not None:
            count, inter, gate = self.shared
            out["shared"] = {"count": count, "inter": inter, "gate": gate}
        if self.activation == "swiglu-oss" and (self.swiglu_alpha, self.swiglu_limit) != (1.702, 7.0):
            out["swiglu_alpha"] = float(self.swiglu_alpha)
            out["swiglu_limit"] = float(self.swiglu_limit)
        return out

    @staticmethod
    def from_json(c: dict) -> MoeConfig:
        """The inverse of :meth:`to_json`, validated: absent model fields are the paper's layer's
        (a record written before they existed reads as the layer it measured). Raises
        :class:`ConfigError` naming the field by its path (``config.routing.groups.keep``)."""
        def need(obj: dict, key: str, path: str, kinds: tuple[type, ...]):
            if key not in obj or obj[key] is None:
                raise ConfigError(f"config.{path}{key}", "missing")
            return typed(obj, key, path, kinds)

        def typed(obj: dict, key: str, path: str, kinds: tuple[type, ...], default=None):
            v = obj.get(key)
            if v is None:
                return default
            if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
                raise ConfigError(f"config.{path}{key}", f"{v!r} is not a {' or '.join(k.__name__ for k in kinds)}")
            return v

        def strict(obj, path: str, known: tuple[str, ...]) -> dict:
            if not isinstance(obj, dict):
                raise ConfigError(f"config.{path.rstrip('.')}", f"{obj!r} is not an object")
            for key in obj:
                if key not in known:
                    raise ConfigError(f"config.{path}{key}", f"unknown field (expected {', '.join(known)})")
            return obj

        if not isinstance(c, dict):
            raise ConfigError("config", f"{c!r} is not an object")
        cap = need(c, "capacity", "", (int, float, str))
        if isinstance(cap, str) and cap != "dropless":
            raise ConfigError("config.capacity", f"{cap!r} is neither a factor nor 'dropless'")
        ints = {k: need(c, k, "", (int,)) for k in ("tokens_per_rank", "hidden", "inter", "experts", "top_k")}
        fields = {
            "activation": need(c, "activation", "", (str,)),
            "dtype": need(c, "dtype", "", (str,)),
            "capacity": None if cap == "dropless" else float(cap),
            "bias": need(c, "bias", "", (bool,)),
            "renormalize": typed(c, "renormalize", "", (bool,), True),
        }
        routing = c.get("routing")
        if routing is not None:
            r = strict(routing, "routing.", ("scoring", "router_bias", "selection_bias", "groups", "scaling"))
            fields["scoring"] = typed(r, "scoring", "routing.", (str,), "softmax")
            fields["router_bias"] = typed(r, "router_bias", "routing.", (bool,), False)
            fields["selection_bias"] = typed(r, "selection_bias", "routing.", (bool,), False)
            fields["scaling"] = float(typed(r, "scaling", "routing.", (int, float), 1.0))
            if r.get("groups") is not None:
                g = strict(r["groups"], "routing.groups.", ("count", "keep", "score"))
                count, keep = need(g, "count", "routing.groups.", (int,)), need(g, "keep", "routing.groups.", (int,))
                score = typed(g, "score", "routing.groups.", (str,), "top2-sum")
                names = {v: k for k, v in GROUP_SCORES.items()}
                if score not in names:
                    raise ConfigError("config.routing.groups.score", f"{score!r} is not top2-sum or max")
                if count < 1:
                    raise ConfigError("config.routing.groups.count", "must be >= 1")
                if not 1 <= keep <= count:
                    raise ConfigError("config.routing.groups.keep", f"{keep} must be 1 to count ({count})")
                fields["groups"] = (count, keep, names[score])
        shared = c.get("shared")
        if shared is not None:
            sh = strict(shared, "shared.", ("count", "inter", "gate"))
            count, inter = need(sh, "count", "shared.", (int,)), need(sh, "inter", "shared.", (int,))
            gate = typed(sh, "gate", "shared.", (str,), "none")
            for key, v in (("count", count), ("inter", inter)):
                if v < 1:
                    raise ConfigError(f"config.shared.{key}", "must be >= 1")
            if gate not in ("none", "sigmoid"):
                raise ConfigError("config.shared.gate", f"{gate!r} is not none or sigmoid")
            fields["shared"] = (count, inter, gate)
        for key in ("swiglu_alpha", "swiglu_limit"):
            v = typed(c, key, "", (int, float))
            if v is not None:
                if fields["activation"] != "swiglu-oss":
                    raise ConfigError(f"config.{key}", "set, but the activation is not swiglu-oss")
                fields[key] = float(v)
        try:
            return MoeConfig(ints["tokens_per_rank"], ints["hidden"], ints["inter"], ints["experts"],
                             ints["top_k"], **fields).validate()
        except ConfigError as e:
            raise ConfigError(f"config.{e.field}", str(e).split(": ", 2)[-1]) from None

    @staticmethod
    def from_fixture(c: dict) -> MoeConfig:
        """A ``models`` entry's ``config`` of ``testdata/rust_reference.json`` (every field by
        name, ``tokens`` for the tokens per rank, lists for the tuples), validated."""
        c = dict(c)
        tokens = c.pop("tokens")
        for key in ("groups", "shared"):
            if c[key] is not None:
                c[key] = tuple(c[key])
        return MoeConfig(tokens, **c).validate()

    def label(self) -> str:
        """flashdmoe-bench's ``LayerKey::label``: the paper's fields, then what a real model's
        layer changes (``LayerKey::model_suffix``: `` norenorm``, `` sigmoid+sb``, `` g8/4t2``,
        `` x2.5``, `` shared1x2048`` / ``+gate``)."""
        cap = "dropless" if self.capacity is None else f"cf{self.capacity:g}"
        bias = "+bias" if self.bias else ""
        act = self.activation
        if act == "swiglu-oss" and (self.swiglu_alpha, self.swiglu_limit) != (1.702, 7.0):
            act = f"swiglu-oss(alpha {self.swiglu_alpha:g}, limit {self.swiglu_limit:g})"
        label = (
            f"T{self.tokens} H{self.hidden} I{self.inter} E{self.experts} k{self.top_k} "
            f"{act}{bias} {self.dtype} {cap}"
        )
        if not self.renormalize:
            label += " norenorm"
        if self.scoring != "softmax" or self.router_bias or self.selection_bias:
            label += " " + self.scoring + ("+rb" if self.router_bias else "") + ("+sb" if self.selection_bias else "")
        if self.groups is not None:
            count, keep, score = self.groups
            label += f" g{count}/{keep}{'t2' if score == 'top2' else 'max'}"
        if self.scaling != 1.0:
            label += f" x{self.scaling:g}"
        if self.shared is not None:
            count, inter, gate = self.shared
            label += f" shared{count}x{inter}" + ("+gate" if gate == "sigmoid" else "")
        return label


def _paper(tokens: int, experts: int, capacity: float | None) -> MoeConfig:
    return MoeConfig(tokens, 2048, 2048, experts, 2, "relu", "bf16", capacity, False)


PAPER_TOKENS = (128, 4096, 8192, 16384)
PAPER_EXPERTS = (8, 16, 32, 64, 128)
PAPER_CAPACITIES = (1.0, None)


def paper_grid() -> list[MoeConfig]:
    """The reference paper's grid (docs/performance.md): H = I = 2048, top-2, ReLU, bf16."""
    return [_paper(t, e, c) for t in PAPER_TOKENS for e in PAPER_EXPERTS for c in PAPER_CAPACITIES]


def _paper_name(c: MoeConfig) -> str:
    return f"paper-t{c.tokens}-e{c.experts}-" + ("dropless" if c.capacity is None else "cf1")


def _deepseek_v3(experts: int, groups: tuple[int, int, str] | None, scaling: float) -> MoeConfig:
    return MoeConfig(4096, 7168, 2048, experts, 8, "swiglu", scoring="sigmoid", selection_bias=True,
                     groups=groups, scaling=scaling, shared=(1, 2048, "none"))


def _gpt_oss(experts: int) -> MoeConfig:
    return MoeConfig(4096, 2880, 2880, experts, 4, "swiglu-oss", bias=True, scoring="topk-softmax",
                     router_bias=True)


#: Model presets (dropless, bf16) at 4096 tokens per rank, flashdmoe-core's presets (`MODELS`,
#: `MODEL_TOKENS`, same names and layers: ``-routed`` is a model's routed experts without its
#: shared experts, ``-shape`` gpt-oss's expert shapes with the standard SwiGLU and router); CLI
#: flags override any field.
MODEL_PRESETS = {
    "mixtral-8x7b": MoeConfig(4096, 4096, 14336, 8, 2, "swiglu"),
    "qwen1.5-moe-a2.7b": MoeConfig(4096, 2048, 1408, 60, 4, "swiglu", renormalize=False,
                                   shared=(1, 5632, "sigmoid")),
    "qwen1.5-moe-a2.7b-routed": MoeConfig(4096, 2048, 1408, 60, 4, "swiglu", renormalize=False),
    "qwen2-57b-a14b": MoeConfig(4096, 3584, 2560, 64, 8, "swiglu", renormalize=False,
                                shared=(1, 20480, "sigmoid")),
    "qwen3-30b-a3b": MoeConfig(4096, 2048, 768, 128, 8, "swiglu"),
    "deepseek-v2-lite": MoeConfig(4096, 2048, 1408, 64, 6, "swiglu", renormalize=False,
                                  shared=(2, 1408, "none")),
    "deepseek-v2-lite-routed": MoeConfig(4096, 2048, 1408, 64, 6, "swiglu", renormalize=False),
    "deepseek-v3": _deepseek_v3(256, (8, 4, "top2"), 2.5),
    "kimi-k2": _deepseek_v3(384, None, 2.827),
    "olmoe-1b-7b": MoeConfig(4096, 2048, 1024, 64, 8, "swiglu", renormalize=False),
    "gpt-oss-20b": _gpt_oss(32),
    "gpt-oss-120b": _gpt_oss(128),
    "gpt-oss-20b-shape": MoeConfig(4096, 2880, 2880, 32, 4, "swiglu", bias=True),
}

#: The built-in grid ``models-t4096`` (flashdmoe-bench ``grid::MODELS_T4096``, same names and
#: order): the model presets the CUDA kernel computes -- DeepSeek-V3's and Kimi-K2's routed
#: experts (``-routed``: without their shared expert), Qwen3-30B-A3B, Mixtral-8x7B, OLMoE,
#: gpt-oss-20b and -120b -- then the whole DeepSeek-V3 layer (the simulator and
#: ``torch_single.py`` compute it). ``testdata/models_t4096.json`` holds the layers as the Rust
#: side writes them; a test on each side holds its grid to the file.
MODELS_T4096 = {
    "deepseek-v3-routed": dataclasses.replace(MODEL_PRESETS["deepseek-v3"], shared=None),
    "kimi-k2-routed": dataclasses.replace(MODEL_PRESETS["kimi-k2"], shared=None),
    **{n: MODEL_PRESETS[n] for n in ("qwen3-30b-a3b", "mixtral-8x7b", "olmoe-1b-7b", "gpt-oss-20b",
                                     "gpt-oss-120b", "deepseek-v3")},
}

#: The built-in grids of ``--grid``.
GRIDS = {"paper": paper_grid, "models-t4096": lambda: list(MODELS_T4096.values())}

#: Every preset: the paper grid entries (``paper-t16384-e32-cf1`` ...), the model presets and
#: the models-t4096 grid's layers (``deepseek-v3-routed``, ``kimi-k2-routed``).
PRESETS = {**{_paper_name(c): c for c in paper_grid()}, **MODEL_PRESETS, **MODELS_T4096}

DEFAULT = _paper(4096, 8, None)


def _capacity_arg(text: str) -> float | None:
    if text == "dropless":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a capacity factor nor 'dropless'") from None


def _layer_arg(text: str) -> MoeConfig:
    try:
        return MoeConfig.from_json(json.loads(text))
    except (json.JSONDecodeError, ConfigError) as e:
        raise argparse.ArgumentTypeError(f"--layer: {e}") from None


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The shared CLI: layer shape, preset/grid, seed, timing, verification, output."""
    g = p.add_argument_group("layer (flags override --preset; default: paper T4096 E8 dropless)")
    g.add_argument("--preset", nargs="+", choices=sorted(PRESETS), metavar="NAME",
                   help="presets run in turn: paper grid entries paper-t{128,4096,8192,16384}-"
                        "e{8,16,32,64,128}-{cf1,dropless}, or models: " + ", ".join(MODEL_PRESETS))
    g.add_argument("--grid", choices=sorted(GRIDS),
                   help="a built-in grid: paper (40 configs) or models-t4096 (real models' layers)")
    g.add_argument("--layer", type=_layer_arg, metavar="JSON",
                   help="the layer as a result record's config object (flashdmoe bench passes a real "
                        "model's layer so, its router and shared experts included)")
    g.add_argument("--tokens", type=int, help="tokens per rank T")
    g.add_argument("--hidden", type=int, help="hidden size H")
    g.add_argument("--inter", type=int, help="expert intermediate size I")
    g.add_argument("--experts", type=int, help="experts E")
    g.add_argument("--top-k", type=int, dest="top_k", help="experts per token k")
    g.add_argument("--activation", choices=ACTIVATIONS)
    g.add_argument("--dtype", choices=sorted(DTYPES))
    g.add_argument("--capacity", type=_capacity_arg, default=argparse.SUPPRESS,
                   help="capacity factor, or 'dropless'")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                   help="biases on the expert projections")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, default=0, help="seed of the shared generator (u64)")
    r.add_argument("--iters", type=int, default=100, help="timed iterations")
    r.add_argument("--warmup", type=int, default=10, help="untimed iterations first")
    r.add_argument("--verify-rows", type=int, default=64, dest="verify_rows",
                   help="token rows (per rank) checked against the float64 reference")
    r.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: functional check only (times are host wall clock)")
    r.add_argument("--out", help="append one JSON object per result to this file (JSONL)")


def parse_variants_and_configs(parser, args, variants):
    """Validates the ``--variants`` list (stored back as a list) and the layer flags every
    baseline script shares; returns the configs. Errors exit through ``parser.error``."""
    args.variants = [v for v in args.variants.split(",") if v]
    if not args.variants or any(v not in variants for v in args.variants):
        parser.error(f"--variants must name some of {', '.join(variants)}")
    try:
        return configs_from_args(args)
    except ConfigError as e:
        parser.error(str(e))


def configs_from_args(args: argparse.Namespace) -> list[MoeConfig]:
    """The configs a command line asks for: ``--grid``, else ``--preset`` or the default, with
    each given flag overriding the field. Raises :class:`ConfigError`."""
    layer = getattr(args, "layer", None)
    if sum(x is not None and x != [] for x in (args.grid, args.preset, layer)) > 1:
        raise ConfigError("grid", "--grid, --preset and --layer exclude each other")
    if not 0 <= args.seed < 1 << 64:
        raise ConfigError("seed", f"{args.seed} is not a u64")
    if args.iters <= 0 or args.warmup < 0 or args.verify_rows < 0:
        raise ConfigError("iters", "--iters must be > 0, --warmup and --verify-rows >= 0")
    bases = GRIDS[args.grid]() if args.grid else [PRESETS[n] for n in args.preset] if args.preset \
        else [layer] if layer is not None else [DEFAULT]
    overrides = {
        f: getattr(args, f)
        for f in ("tokens", "hidden", "inter", "experts", "top_k", "activation", "dtype", "bias")
        if getattr(args, f, None) is not None
    }
    if hasattr(args, "capacity"):
        overrides["capacity"] = args.capacity
    return [dataclasses.replace(b, **overrides).validate() for b in bases]


# --------------------------------------------------------------------------------------------
# Seeded data
# --------------------------------------------------------------------------------------------

GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1

#: Tensor ids of the generator (flashdmoe-core ``weights::ids``); the input of rank r is
#: ``INPUT + r``.
ID_ROUTER, ID_UP, ID_GATE, ID_DOWN, ID_UP_BIAS, ID_GATE_BIAS, ID_DOWN_BIAS = 1, 2, 3, 4, 5, 6, 7
ID_ROUTER_BIAS, ID_SELECTION_BIAS = 8, 9
ID_SHARED_UP, ID_SHARED_GATE, ID_SHARED_DOWN, ID_SHARED_GATE_ROW = 10, 11, 12, 13
ID_INPUT = 1000
BIAS_SCALE = 0.1

#: Elements generated per device chunk (bounds the int64 temporaries to a few hundred MB).
_CHUNK = 1 << 25


def f32(v: float) -> float:
    """``v`` rounded to the nearest f32 (ties to even), as a Python float."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def inv_sqrt_f32(n: int) -> float:
    """``1 / sqrt(n)`` as Rust's ``1.0 / (n as f32).sqrt()`` computes it. Computing each
    correctly rounded f64 operation and rounding to f32 gives the correctly rounded f32 result
    for sqrt and division (53 >= 2 * 24 + 2)."""
    return f32(1.0 / f32(math.sqrt(f32(float(n)))))


def splitmix64_mix(z: int) -> int:
    """The splitmix64 finaliser of the u64 ``z``, in pure Python (Rust's ``rng::mix``)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def tensor_start(seed: int, tensor_id: int) -> int:
    """The start state of tensor ``tensor_id``'s stream under ``seed``: ``mix(seed ^ mix(id))``.
    Hashing the id keeps the streams of different tensors from overlapping (a start of
    ``seed + id * GAMMA`` made tensor ``id + 1`` tensor ``id`` shifted by one element)."""
    return splitmix64_mix((seed & _MASK64) ^ splitmix64_mix(tensor_id))


def splitmix64_stream(seed: int, tensor_id: int, count: int) -> list[int]:
    """The first ``count`` outputs of tensor ``tensor_id``'s stream, sequentially, in pure
    Python: the ground truth the vectorised generator is checked against."""
    state = tensor_start(seed, tensor_id)
    out = []
    for _ in range(count):
        state = (state + GAMMA) & _MASK64
        out.append(splitmix64_mix(state))
    return out


def round_scalar(v: float, dtype: str) -> float:
    """``v`` (an f32 value) rounded to ``dtype``, ties to even, in pure Python."""
    if dtype == "bf16":
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]
    if dtype == "f16":
        return struct.unpack("<e", struct.pack("<e", v))[0]
    return v


def reference_values(seed: int, tensor_id: int, count: int, scale: float, dtype: str) -> list[float]:
    """The first ``count`` values of a tensor, sequentially, in pure Python (module invariant)."""
    out = []
    for x in splitmix64_stream(seed, tensor_id, count):
        u = f32((x >> 40) * 2.0**-24)
        out.append(round_scalar(f32((2.0 * u - 1.0) * f32(scale)), dtype))
    return out


def _i64(v: int) -> int:
    """The int64 with the bits of the u64 ``v``."""
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of the u64 bits held in an int64 tensor."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def generate(seed: int, tensor_id: int, shape: Iterable[int], scale: float, dtype: str,
             device: torch.device, start: int = 0) -> torch.Tensor:
    """Elements ``start .. start + prod(shape)`` of a seeded tensor (module invariant), as a
    tensor of ``shape`` and the dtype's storage type on ``device``.

    int64 products wrap in two's complement on every torch backend (checked against the
    pure-Python stream by the tests and by :func:`self_check_generator`). ``(2u - 1) * scale``
    is computed exactly in f64 (a 25-bit by 24-bit product) and rounded once to f32, which is
    Rust's f32 product; the f32 value is then rounded to the dtype."""
    shape = tuple(shape)
    count = math.prod(shape)
    out = torch.empty(count, dtype=DTYPES[dtype], device=device)
    base = _i64(tensor_start(seed, tensor_id))
    step = f32(scale) * 2.0**-24  # the f32 scale Rust multiplies by (0.1 is not exact)
    for lo in range(0, count, _CHUNK):
        n = torch.arange(start + lo + 1, start + min(lo + _CHUNK, count) + 1, dtype=torch.int64, device=device)
        z = n * _i64(GAMMA) + base
        z = (z ^ _srl(z, 30)) * _i64(_MIX1)
        z = (z ^ _srl(z, 27)) * _i64(_MIX2)
        z = z ^ _srl(z, 31)
        a = 2 * _srl(z, 40) - (1 << 24)  # (2u - 1) * 2^24, exact
        out[lo:lo + n.numel()] = (a.to(torch.float64) * step).to(torch.float32).to(out.dtype)
    return out.view(shape)


@dataclass
class LayerWeights:
    """Weights of a contiguous range of experts ``[first, first + count)`` in ``nn.Linear``
    layout, in the config's storage dtype, plus the full router ``[E][H]``."""

    first: int
    router: torch.Tensor
    up: torch.Tensor  # [n][I][H]
    gate: torch.Tensor | None  # [n][I][H], SwiGLU only
    down: torch.Tensor  # [n][H][I]
    up_bias: torch.Tensor | None  # [n][I]
    gate_bias: torch.Tensor | None  # [n][I], SwiGLU with biases only
    down_bias: torch.Tensor | None  # [n][H]
    # Layer-level tensors of the model features (module doc), whole in every range.
    router_bias: torch.Tensor | None = None  # [E]
    selection_bias: torch.Tensor | None = None  # [E]
    shared_up: torch.Tensor | None = None  # [S][H]
    shared_gate: torch.Tensor | None = None  # [S][H]
    shared_down: torch.Tensor | None = None  # [H][S]
    shared_gate_row: torch.Tensor | None = None  # [H]

    @property
    def count(self) -> int:
        return self.up.shape[0]

    def expert(self, e: int) -> LayerWeights:
        """The weights of global expert ``e`` alone (views); ``e`` must lie in this range."""
        i = e - self.first
        if not 0 <= i < self.count:
            raise IndexError(f"expert {e} is not in [{self.first}, {self.first + self.count})")

        def one(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[i:i + 1]

        return dataclasses.replace(self, first=e, up=one(self.up), gate=one(self.gate), down=one(self.down),
                                   up_bias=one(self.up_bias), gate_bias=one(self.gate_bias),
                                   down_bias=one(self.down_bias))


def generate_layer(cfg: MoeConfig, seed: int, device: torch.device,
                   first: int = 0, count: int | None = None) -> LayerWeights:
    """The seeded weights of experts ``[first, first + count)`` (default: all) and the router."""
    e, h, i = cfg.experts, cfg.hidden, cfg.inter
    count = e - first if count is None else count
    if not (0 <= first and count >= 0 and first + count <= e):
        raise ConfigError("experts", f"range [{first}, {first + count}) is not within [0, {e})")
    sh, si = inv_sqrt_f32(h), inv_sqrt_f32(i)

    def part(tid: int, per_expert: tuple[int, ...], scale: float) -> torch.Tensor:
        size = math.prod(per_expert)
        return generate(seed, tid, (count, *per_expert), scale, cfg.dtype, device, start=first * size)

    gated, bias = cfg.gated, cfg.bias
    s = cfg.shared_inter

    def whole(tid: int, shape: tuple[int, ...], scale: float, present: bool) -> torch.Tensor | None:
        return generate(seed, tid, shape, scale, cfg.dtype, device) if present else None

    return LayerWeights(
        first=first,
        router=generate(seed, ID_ROUTER, (e, h), sh, cfg.dtype, device),
        up=part(ID_UP, (i, h), sh),
        gate=part(ID_GATE, (i, h), sh) if gated else None,
        down=part(ID_DOWN, (h, i), si),
        up_bias=part(ID_UP_BIAS, (i,), BIAS_SCALE) if bias else None,
        gate_bias=part(ID_GATE_BIAS, (i,), BIAS_SCALE) if bias and gated else None,
        down_bias=part(ID_DOWN_BIAS, (h,), BIAS_SCALE) if bias else None,
        router_bias=whole(ID_ROUTER_BIAS, (e,), BIAS_SCALE, cfg.router_bias),
        selection_bias=whole(ID_SELECTION_BIAS, (e,), BIAS_SCALE, cfg.selection_bias),
        shared_up=whole(ID_SHARED_UP, (s, h), sh, s > 0),
        shared_gate=whole(ID_SHARED_GATE, (s, h), sh, s > 0),
        shared_down=whole(ID_SHARED_DOWN, (h, s), inv_sqrt_f32(max(s, 1)), s > 0),
        shared_gate_row=whole(ID_SHARED_GATE_ROW, (h,), sh, cfg.shared is not None and cfg.shared[2] == "sigmoid"),
    )


def generate_input(cfg: MoeConfig, rank: int, seed: int, device: torch.device) -> torch.Tensor:
    """The seeded input ``[T][H]`` of ``rank`` (tensor id ``1000 + rank``, scale 1)."""
    return generate(seed, ID_INPUT + rank, (cfg.tokens, cfg.hidden), 1.0, cfg.dtype, device)


def self_check_generator(seed: int, dtype: str, device: torch.device, count: int = 4096) -> None:
    """Raises ``RuntimeError`` unless the vectorised generator on ``device`` equals the
    pure-Python stream (run once at start-up: guards int64 wrap-around on that backend)."""
    for tid, scale, start in ((ID_ROUTER, inv_sqrt_f32(2048), 0), (ID_INPUT, 1.0, 3)):
        got = generate(seed, tid, (count,), scale, dtype, device, start=start).float().cpu().tolist()
        want = reference_values(seed, tid, start + count, scale, dtype)[start:]
        if got != want:
            bad = next(n for n, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            raise RuntimeError(f"seeded generator mismatch on {device} (id {tid}, element {start + bad}): "
                               f"{got[bad]} != {want[bad]}")


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------


@dataclass
class Routing:
    """Each token's chosen experts ``[T][k]`` (int64, slot order) and combine weights (f32)."""

    experts: torch.Tensor
    weights: torch.Tensor


_MM_F32_OUT: dict[torch.device, bool] = {}


def router_logits(x: torch.Tensor, router: torch.Tensor) -> torch.Tensor:
    """``x @ router^T`` ``[T][E]`` in f32 with f32 accumulation: bf16/f16 through the CUDA
    ``mm`` with ``out_dtype=float32`` where available (else upcast operands); f32 as f32 (TF32
    when the dtype allows it, which may break near-ties differently from the f64 oracle)."""
    if x.dtype == torch.float32:
        return x @ router.t()
    if x.is_cuda:
        ok = _MM_F32_OUT.get(x.device)
        if ok is None:
            try:
                torch.mm(x[:1], router.t(), out_dtype=torch.float32)
                ok = True
            except (RuntimeError, TypeError):
                ok = False
            _MM_F32_OUT[x.device] = ok
        if ok:
            return torch.mm(x, router.t(), out_dtype=torch.float32)
    return x.float() @ router.float().t()


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the ``k`` largest of each row, ties to the lower index (a stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]


def mask_groups(choice: torch.Tensor, groups: tuple[int, int, str]) -> torch.Tensor:
    """Grouped top-k's mask (module invariant): the experts of all but the ``keep`` best of
    ``count`` groups get 0.0 (transformers' ``masked_fill(~mask, 0.0)``)."""
    count, keep, score = groups
    g = choice.view(choice.shape[0], count, -1)
    if score == "max":
        group_scores = g.amax(dim=-1)
    else:
        best = torch.sort(g, dim=-1, descending=True, stable=True).values
        group_scores = best[..., 0] + best[..., 1]
    kept = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, _top(group_scores, keep), True)
    return g.masked_fill(~kept.unsqueeze(-1), 0.0).view_as(choice)


def route(x: torch.Tensor, router: torch.Tensor, top_k: int, cfg: MoeConfig | None = None, *,
          router_bias: torch.Tensor | None = None, selection_bias: torch.Tensor | None = None) -> Routing:
    """The router of the module invariant (the paper's without ``cfg``). Ties:
    ``torch.sort(stable=True, descending=True)`` keeps equal scores in ascending expert order,
    so the lower index wins."""
    logits = router_logits(x, router)
    if router_bias is not None:
        logits = logits + router_bias.float()
    scoring = "softmax" if cfg is None else cfg.scoring
    if scoring == "softmax":
        scores = torch.softmax(logits, dim=-1)
    elif scoring == "sigmoid":
        scores = torch.sigmoid(logits)
    else:
        scores = logits
    choice = scores if selection_bias is None else scores + selection_bias.float()
    if cfg is not None and cfg.groups is not None:
        choice = mask_groups(choice, cfg.groups)
    experts = _top(choice, top_k)
    top_p = scores.gather(1, experts)
    if scoring == "topk-softmax":
        weights = torch.softmax(top_p, dim=-1)
    elif cfg is None or cfg.renormalize:
        total = top_p[:, 0]
        for j in range(1, top_k):  # slot order, as the Rust router sums
            total = total + top_p[:, j]
        if scoring == "sigmoid":
            total = total + 1e-20
        weights = top_p / total[:, None]
    else:
        weights = top_p
    if cfg is not None and cfg.scaling != 1.0:
        weights = weights * f32(cfg.scaling)
    return Routing(experts=experts, weights=weights)


def route_layer(x: torch.Tensor, layer: LayerWeights, cfg: MoeConfig) -> Routing:
    """:func:`route` with the layer's router and biases."""
    return route(x, layer.router, cfg.top_k, cfg, router_bias=layer.router_bias, selection_bias=layer.selection_bias)


def capacity_keep(experts: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Which ``[T][k]`` slots survive capacity: slot ``(t, j)`` is kept iff fewer than
    ``capacity`` earlier tokens chose the same expert. (A direct count; :func:`plan_dispatch`
    reaches the same mask through a sort, and the scripts cross-check the two.)"""
    chose = F.one_hot(experts, num_experts).sum(dim=1)  # [T][E], 0/1: tokens pick distinct experts
    earlier = chose.cumsum(dim=0) - chose
    return earlier.gather(1, experts) < capacity


@dataclass
class Dispatch:
    """Permutation of a rank's ``N = T * k`` slots into rows grouped by expert.

    Rows ``[0, kept)`` hold the kept slots, grouped by ascending expert, ascending token order
    within an expert (the packet order of the protocol); rows ``[kept, N)`` hold the dropped
    slots and are never computed. ``offs`` are the cumulative kept rows per expert (the ``offs``
    of ``torch._grouped_mm``); every shape is static (``N``, ``E``)."""

    src_token: torch.Tensor  # [N] token of each row
    row_expert: torch.Tensor  # [N] expert of each row
    slot_row: torch.Tensor  # [N] row of each slot t * k + j
    keep: torch.Tensor  # [T][k] bool
    counts: torch.Tensor  # [E] kept rows per expert (int64)
    offs: torch.Tensor  # [E] int32 cumulative counts


def plan_dispatch(experts: torch.Tensor, num_experts: int, capacity: int) -> Dispatch:
    """The :class:`Dispatch` of ``experts`` ``[T][k]`` under ``capacity`` rows per expert."""
    t, k = experts.shape
    n = t * k
    dev = experts.device
    flat = experts.reshape(n)
    order = torch.argsort(flat, stable=True)  # slots grouped by expert, slot (= token) order inside
    sorted_e = flat.index_select(0, order)
    routed = torch.zeros(num_experts, dtype=torch.int64, device=dev).scatter_add_(
        0, flat, torch.ones(n, dtype=torch.int64, device=dev))
    rank = torch.arange(n, device=dev)
    pos = rank - (routed.cumsum(0) - routed).index_select(0, sorted_e)  # position within the expert
    keep_sorted = pos < capacity
    counts = routed.clamp(max=capacity)
    ends = counts.cumsum(0)
    dropped_before = (~keep_sorted).cumsum(0) - (~keep_sorted).long()
    dest = torch.where(keep_sorted, (ends - counts).index_select(0, sorted_e) + pos, ends[-1] + dropped_before)
    slot_row = torch.empty_like(dest).scatter_(0, order, dest)
    return Dispatch(
        src_token=torch.empty_like(dest).scatter_(0, dest, order // k),
        row_expert=torch.empty_like(dest).scatter_(0, dest, sorted_e),
        slot_row=slot_row,
        keep=torch.empty(n, dtype=torch.bool, device=dev).scatter_(0, order, keep_sorted).view(t, k),
        counts=counts,
        offs=ends.to(torch.int32),
    )


# --------------------------------------------------------------------------------------------
# Expert math
# --------------------------------------------------------------------------------------------


def activate(h: torch.Tensor, activation: str, inter: int, limit: float = 7.0, alpha: float = 1.702) -> torch.Tensor:
    """relu / exact-erf gelu of ``h``; SwiGLU of ``h = [gate | up]`` (``[rows][2I]``):
    ``silu(gate) * up``, or gpt-oss's ``(clamp(up, -limit, limit) + 1) * g * sigmoid(alpha g)``
    with ``g = min(gate, limit)``; each op rounded to the storage dtype (PyTorch's elementwise
    rule; we round once)."""
    if activation == "relu":
        return F.relu(h)
    if activation == "gelu":
        return F.gelu(h)
    gate, up = h[:, :inter], h[:, inter:]
    if activation == "swiglu-oss":
        gate = gate.clamp(max=limit)
        return (up.clamp(-limit, limit) + 1) * gate * torch.sigmoid(alpha * gate)
    return F.silu(gate) * up


def shared_ffn(x: torch.Tensor, layer: LayerWeights, cfg: MoeConfig) -> torch.Tensor | None:
    """The shared experts' output ``gs * ys`` ``[T][H]`` (f32), or ``None`` without them:
    ``ys = (silu(x g^T) * (x u^T)) d^T`` in the dtype, ``gs = sigmoid(x . gate_row)`` with
    Qwen's gate, else 1."""
    if cfg.shared is None:
        return None
    h = F.silu(x @ layer.shared_gate.t()) * (x @ layer.shared_up.t())
    y = (h @ layer.shared_down.t()).float()
    if layer.shared_gate_row is not None:
        y = torch.sigmoid(router_logits(x, layer.shared_gate_row[None, :])) * y
    return y


@dataclass
class GroupedWeights:
    """Expert weights laid out for ``torch._grouped_mm``: ``w1t`` ``[n][H][I or 2I]`` (gate and
    up concatenated for SwiGLU, so one GEMM computes both), ``w2t`` ``[n][I][H]``, as transposed
    (column-major) views of ``nn.Linear`` weights; biases ``[n][I or 2I]`` and ``[n][H]``."""

    w1t: torch.Tensor
    w2t: torch.Tensor
    b1: torch.Tensor | None
    b2: torch.Tensor | None

    @staticmethod
    def of(w: LayerWeights) -> GroupedWeights:
        w1 = torch.cat([w.gate, w.up], dim=1) if w.gate is not None else w.up
        b1 = w.up_bias
        if w.gate_bias is not None:
            b1 = torch.cat([w.gate_bias, w.up_bias], dim=1)
        return GroupedWeights(w1t=w1.transpose(1, 2), w2t=w.down.transpose(1, 2), b1=b1, b2=w.down_bias)


def grouped_ffn(rows: torch.Tensor, offs: torch.Tensor, row_expert: torch.Tensor,
                gw: GroupedWeights, cfg: MoeConfig) -> torch.Tensor:
    """Expert FFN of rows grouped by expert (``offs``: cumulative ends, ``row_expert``: local
    expert of each row). Rows past ``offs[-1]`` of the result are unspecified. GEMM outputs are
    rounded to the dtype before the bias is added (``_grouped_mm`` takes no bias)."""
    h = torch._grouped_mm(rows, gw.w1t, offs=offs)
    if gw.b1 is not None:
        h = h + gw.b1.index_select(0, row_expert)
    h = activate(h, cfg.activation, cfg.inter, cfg.swiglu_limit, cfg.swiglu_alpha)
    y = torch._grouped_mm(h, gw.w2t, offs=offs)
    if gw.b2 is not None:
        y = y + gw.b2.index_select(0, row_expert)
    return y


def combine(y: torch.Tensor, plan: Dispatch, weights: torch.Tensor) -> torch.Tensor:
    """``out[t] = sum_j w[t][j] * y[row of (t, j)]`` over kept slots: gather, broadcast product
    in the dtype (weights and products rounded to it: at most an ulp or two of the dtype, inside
    the tolerance), sum over the k slots accumulated in f32 and rounded once. Dropped slots read
    row 0 (always computed) with weight 0, so the unspecified rows past the kept ones are never
    read.

    Not ``torch.bmm([T,1,k] @ [T,k,H])``: cuBLAS runs that as batched GEMV, which took 0.38 ms of
    the 1.56 ms layer at T16384 H2048 k2 bf16 on an H200 (profiled 2026-11-28)."""
    t, k = plan.keep.shape
    rows = torch.where(plan.keep.reshape(-1), plan.slot_row, 0)
    w = torch.where(plan.keep, weights, 0.0).to(y.dtype)
    return (y.index_select(0, rows).view(t, k, -1) * w.unsqueeze(-1)).sum(dim=1)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------

#: Largest accepted gap (in probability) by which a chosen expert may trail an unchosen one,
#: per dtype: f32 logits from bf16/f16 operands differ from the f64 oracle's by ~1e-6; TF32
#: logits by ~1e-3.
_ROUTER_SLACK = {"bf16": 1e-5, "f16": 1e-5, "f32": 4e-3, "f32-exact": 1e-5}


def sample_rows(tokens: int, count: int, device: torch.device) -> torch.Tensor:
    """``min(count, tokens)`` distinct token rows, chosen fresh each run (OS entropy)."""
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
    return torch.randperm(tokens, generator=gen)[:count].sort().values.to(device)


def _to_dtype64(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float64 value stored as ``dtype`` (through f32, as an f32 accumulator is stored)."""
    return v.float().to(dtype).double()


def _reference_weights(cfg: MoeConfig, x: torch.Tensor, router: torch.Tensor, experts: torch.Tensor,
                       extras: LayerWeights | None) -> tuple[torch.Tensor, bool]:
    """The f64 router of the module invariant on rows ``x``: the combine weights of the
    baseline's choice ``experts`` and whether that choice is within :data:`_ROUTER_SLACK` of
    the f64 top-k (in choice scores)."""
    logits = x @ router.double().t()
    if extras is not None and extras.router_bias is not None:
        logits = logits + extras.router_bias.double()
    if cfg.scoring == "softmax":
        scores = torch.softmax(logits, dim=-1)
    elif cfg.scoring == "sigmoid":
        scores = torch.sigmoid(logits)
    else:
        scores = logits
    choice = scores
    if extras is not None and extras.selection_bias is not None:
        choice = choice + extras.selection_bias.double()
    if cfg.groups is not None:
        choice = mask_groups(choice, cfg.groups)
    chosen = choice.gather(1, experts)
    kth = choice.topk(cfg.top_k, dim=-1).values[:, -1:]
    # Probabilities compare as they are; logits and biased scores relative to at least 1.
    slack = _ROUTER_SLACK[cfg.dtype] * (1.0 if cfg.scoring == "softmax" and not cfg.selection_bias
                                        else kth.abs().clamp_min(1.0))
    routing_ok = bool((chosen >= kth - slack).all())
    p = scores.gather(1, experts)
    if cfg.scoring == "topk-softmax":
        w = torch.softmax(p, dim=-1)
    elif cfg.renormalize:
        w = p / p.sum(dim=1, keepdim=True)
    else:
        w = p
    return w * cfg.scaling, routing_ok


def check_rows(cfg: MoeConfig, x_rows: torch.Tensor, router: torch.Tensor, experts: torch.Tensor,
               keep: torch.Tensor, out_rows: torch.Tensor,
               expert_weights: Callable[[int], LayerWeights],
               extras: LayerWeights | None = None) -> tuple[bool, float, str]:
    """Checks output rows against a float64 reference of the same tokens.

    ``experts``/``keep`` ``[R][k]`` are the baseline's routing of those rows: the routing is
    checked first (every chosen expert within :data:`_ROUTER_SLACK` of the f64 top-k), then the
    reference follows the baseline's choice (so a legitimate near-tie flip is not an error) with
    f64 router weights, h and ``w * y`` rounded to the dtype as ours are, and the shared experts' term
    after the routed sum. ``expert_weights(e)`` returns a :class:`LayerWeights` whose range
    starts at expert ``e``; ``extras`` holds the layer-level tensors of the model features
    (router biases, shared experts; module doc). Returns ``(verified, max_rel_err, message)``
    where the error is ``max |out - ref| / max |ref|`` per row."""
    dt = cfg.torch_dtype
    x = x_rows.double()
    w, routing_ok = _reference_weights(cfg, x, router, experts, extras)
    acc = torch.zeros_like(x)
    for e in torch.unique(experts).tolist():
        sel = (experts == e) & keep
        tok, slot = sel.nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        lw = expert_weights(e)
        xe = x.index_select(0, tok)
        h = xe @ lw.up[0].double().t()
        if lw.up_bias is not None:
            h = h + lw.up_bias[0].double()
        if cfg.gated:
            g = xe @ lw.gate[0].double().t()
            if lw.gate_bias is not None:
                g = g + lw.gate_bias[0].double()
            h = activate(torch.cat([g, h], dim=1), cfg.activation, cfg.inter, cfg.swiglu_limit, cfg.swiglu_alpha)
        elif cfg.activation == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h)
        y = _to_dtype64(h, dt) @ lw.down[0].double().t()
        if lw.down_bias is not None:
            y = y + lw.down_bias[0].double()
        # The routing weight scales y before it is rounded (our GEMM1 epilogue applies it).
        acc.index_add_(0, tok, _to_dtype64(w[tok, slot, None] * y, dt))
    if cfg.shared is not None:
        if extras is None or extras.shared_up is None:
            raise ValueError("a layer with shared experts needs their weights (extras)")
        hs = F.silu(x @ extras.shared_gate.double().t()) * (x @ extras.shared_up.double().t())
        ys = _to_dtype64(_to_dtype64(hs, dt) @ extras.shared_down.double().t(), dt)
        if extras.shared_gate_row is not None:
            ys = torch.sigmoid(x @ extras.shared_gate_row.double())[:, None] * ys
        acc = acc + ys
    ref = _to_dtype64(acc, dt)
    diff = (out_rows.double() - ref).abs().amax(dim=1)
    scale = ref.abs().amax(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    err = float((diff / scale).max()) if len(diff) else 0.0
    if not math.isfinite(err):
        err = math.inf
    ok = routing_ok and err <= TOLERANCE[cfg.dtype]
    msg = "" if routing_ok else "routing differs from the f64 router beyond a near-tie"
    return ok, err, msg


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|`` per row, maximised over rows (two outputs compared)."""
    a, b = a.double(), b.double()
    scale = b.abs().amax(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    v = float(((a - b).abs().amax(dim=1) / scale).max())
    return v if math.isfinite(v) else math.inf


# --------------------------------------------------------------------------------------------
# Floors (docs/performance.md)
# --------------------------------------------------------------------------------------------

#: H200 ceilings (docs/performance.md): matrix rate per dtype (FLOP/s) and device bandwidth.
RATE = {"bf16": 790e12, "f16": 790e12, "f32": 395e12, "f32-exact": 67e12}
BANDWIDTH = 4.3e12


def _shared_elements(cfg: MoeConfig) -> int:
    """The shared experts' weights as elements: ``3 H S`` (+ ``H`` for Qwen's gate row)."""
    if cfg.shared is None:
        return 0
    return 3 * cfg.hidden * cfg.shared_inter + (cfg.hidden if cfg.shared[2] == "sigmoid" else 0)


def flops(cfg: MoeConfig) -> float:
    """Nominal FLOPs of one layer forward per rank: ``4 T k H I`` (``6`` for gated experts)
    expert GEMMs plus ``2 T H E`` for the router plus ``2 T`` per shared-expert weight
    (docs/performance.md, flashdmoe-core's ``perf::layer_flops``; dropped slots are still
    counted)."""
    per = 6 if cfg.gated else 4
    return float(per * cfg.tokens * cfg.top_k * cfg.hidden * cfg.inter + 2 * cfg.tokens * cfg.hidden * cfg.experts
                 + 2 * cfg.tokens * _shared_elements(cfg))


def floor_ms(cfg: MoeConfig, experts_touched: int) -> float:
    """``max(FLOPs / rate, bytes / bandwidth)`` in ms: bytes are every touched expert's weights
    read once (2 matrices of ``H x I``, 3 for gated experts), the shared experts' weights, plus
    the input read and output written."""
    mats = 3 if cfg.gated else 2
    nbytes = (experts_touched * mats * cfg.hidden * cfg.inter + _shared_elements(cfg)
              + 2 * cfg.tokens * cfg.hidden) * cfg.elem_bytes
    return 1e3 * max(flops(cfg) / RATE[cfg.dtype], nbytes / BANDWIDTH)


# --------------------------------------------------------------------------------------------
# Timing and results
# --------------------------------------------------------------------------------------------


def configure_torch(cfg: MoeConfig) -> None:
    """Numerics switches for ``cfg``: TF32 for ``f32`` only, and no reduced-precision
    (bf16/f16) reductions inside cuBLAS: we accumulate in f32."""
    tf32 = cfg.dtype == "f32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False


def time_fn(fn: Callable[[], object], iters: int, warmup: int, device: torch.device,
            before: Callable[[], None] | None = None) -> list[float]:
    """Per-iteration times (ms) of ``fn`` after ``warmup`` untimed calls: CUDA events around
    each call on CUDA (``before``, e.g. a barrier, runs outside the timed region), host wall
    clock on CPU."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(iters):
            if before:
                before()
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return times
    torch.cuda.synchronize(device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        if before:
            before()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) for s, e in events]


def _quantile(sorted_v: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = q * (len(sorted_v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_v) - 1)
    return sorted_v[lo] + (sorted_v[hi] - sorted_v[lo]) * (pos - lo)


def summarize(times: list[float]) -> dict:
    """``median_ms, p10_ms, p90_ms, min_ms, max_ms`` of a non-empty list of times."""
    if not times:
        raise ValueError("no times to summarize")
    s = sorted(times)
    return {
        "median_ms": _quantile(s, 0.5),
        "p10_ms": _quantile(s, 0.1),
        "p90_ms": _quantile(s, 0.9),
        "min_ms": s[0],
        "max_ms": s[-1],
    }


#: Fields of a result object, in order; the last three are extensions beyond the brief's list.
RECORD_FIELDS = (
    "schema", "impl", "backend", "device", "world", "config", "iterations", "median_ms", "p10_ms",
    "p90_ms", "min_ms", "max_ms", "verified", "max_rel_err", "flops", "tflops", "timestamp",
    "seed", "floor_ms", "notes",
)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def make_record(impl: str, device: torch.device, world: int, cfg: MoeConfig, times: list[float],
                verified: bool, max_rel_err: float, seed: int, experts_touched: int,
                notes: str = "") -> dict:
    """One result object of schema ``flashdmoe-bench/1`` (``flops``/``tflops`` per rank)."""
    stats = summarize(times)
    fl = flops(cfg)
    rec = {
        "schema": SCHEMA,
        "impl": impl,
        "backend": "torch",
        "device": device_name(device),
        "world": world,
        "config": cfg.to_json(),
        "iterations": len(times),
        **stats,
        "verified": bool(verified),
        "max_rel_err": max_rel_err if math.isfinite(max_rel_err) else None,
        "flops": fl,
        "tflops": fl / (stats["median_ms"] * 1e-3) / 1e12,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "floor_ms": floor_ms(cfg, experts_touched),
        "notes": notes,
    }
    return {f: rec[f] for f in RECORD_FIELDS}


def write_jsonl(path: str | None, records: list[dict]) -> None:
    """Appends ``records`` to ``path``, one JSON object per line (no-op without a path)."""
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=False) + "\n" for r in records)


def print_table(records: list[dict]) -> None:
    """A short human-readable table of results."""
    head = f"{'config':<50} {'impl':<22} {'median':>9} {'p10':>9} {'p90':>9} {'TFLOP/s':>8} " \
           f"{'floor':>8} {'%floor':>6} {'ok':>3} {'rel.err':>8}"
    print(head)
    print("-" * len(head))
    for r in records:
        cfg = MoeConfig.from_json(r["config"])
        err = "inf" if r["max_rel_err"] is None else f"{r['max_rel_err']:.1e}"
        print(f"{cfg.label():<50} {r['impl']:<22} {r['median_ms']:>8.3f}m {r['p10_ms']:>8.3f}m "
              f"{r['p90_ms']:>8.3f}m {r['tflops']:>8.1f} {r['floor_ms']:>7.3f}m "
              f"{100 * r['floor_ms'] / r['median_ms']:>5.0f}% {'yes' if r['verified'] else 'NO':>3} {err:>8}")
        if r["notes"]:
            print(f"    note: {r['notes']}")
