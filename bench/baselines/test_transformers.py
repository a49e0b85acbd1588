"""flashdmoe's oracle against transformers' own MoE blocks, on the same weights and inputs.

The layers are the Rust fixture's ``models`` (``testdata/rust_reference.json``, written by
flashdmoe-core's ``examples/python_fixture.rs``): small Mixtral, Qwen3-MoE, Qwen2-MoE (shared
expert with its sigmoid gate), DeepSeek-V2 (grouped softmax router, shared experts),
DeepSeek-V3 (sigmoid router, selection bias, groups, scaling, shared expert) and gpt-oss
(router bias, softmax over the top-k logits, clamped SwiGLU with biases) layers, in bf16 and
f32-exact. The weights are regenerated here from the fixture's seed (``common.generate_layer``,
held to Rust's by ``test_common.py``), loaded into transformers' modules in their own layouts
(fused ``gate_up_proj``; gpt-oss's interleaved and transposed one), and the modules run in
float64 on the same input. Their expert choice must equal the Rust router's, their weights
match, and their output match the Rust oracle's: within one bf16 rounding of the row maximum
for bf16 layers (the oracle rounds h and y to bf16, transformers in float64 does not), within
1e-5 of it for f32-exact ones.

Needs ``transformers`` (pinned by ``scripts/install-torch.sh``, 5.23.0; CI requires it): without
it every test here is skipped, and the run's summary says so on a line of its own
(``conftest.py``).
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

import common as C

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: the comparison with its MoE blocks did not run")

HERE = pathlib.Path(__file__).resolve().parent
CPU = torch.device("cpu")
#: transformers' model type of each fixture kind.
KINDS = {"mixtral": "mixtral", "qwen3-moe": "qwen3_moe", "qwen2-moe": "qwen2_moe", "deepseek-v2": "deepseek_v2",
         "deepseek-v3": "deepseek_v3", "gpt-oss": "gpt_oss"}


def _models() -> list[tuple[dict, C.MoeConfig]]:
    data = json.loads((HERE / "testdata" / "rust_reference.json").read_text())
    return [(m, C.MoeConfig.from_fixture(m["config"])) for m in data["models"]]


def _block(kind: str, cfg: C.MoeConfig, w: C.LayerWeights) -> torch.nn.Module:
    """transformers' MoE block of ``kind`` for ``cfg``, holding ``w`` in its layout, float64."""
    h, i, e, k = cfg.hidden, cfg.inter, cfg.experts, cfg.top_k
    sd: dict[str, torch.Tensor] = {}
    fused = torch.cat([w.gate, w.up], dim=1)  # [E][2I][H]: gate, then up (chunk(2))
    if kind == "gpt-oss":
        from transformers import GptOssConfig
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

        conf = GptOssConfig(hidden_size=h, intermediate_size=i, num_local_experts=e, num_experts_per_tok=k,
                            swiglu_limit=cfg.swiglu_limit)
        block = GptOssMLP(conf)
        gate_up = torch.empty(e, h, 2 * i)
        gate_up[..., 0::2], gate_up[..., 1::2] = w.gate.transpose(1, 2), w.up.transpose(1, 2)  # interleaved
        bias = torch.empty(e, 2 * i)
        bias[:, 0::2], bias[:, 1::2] = w.gate_bias, w.up_bias
        sd = {"router.weight": w.router, "router.bias": w.router_bias, "experts.gate_up_proj": gate_up,
              "experts.gate_up_proj_bias": bias, "experts.down_proj": w.down.transpose(1, 2),
              "experts.down_proj_bias": w.down_bias}
    elif kind in ("mixtral", "qwen3-moe", "qwen2-moe"):
        if kind == "mixtral":
            from transformers import MixtralConfig
            from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as Block

            conf = MixtralConfig(hidden_size=h, intermediate_size=i, num_local_experts=e, num_experts_per_tok=k)
        elif kind == "qwen3-moe":
            from transformers import Qwen3MoeConfig
            from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock as Block

            conf = Qwen3MoeConfig(hidden_size=h, moe_intermediate_size=i, num_experts=e, num_experts_per_tok=k,
                                  norm_topk_prob=cfg.renormalize)
        else:
            from transformers import Qwen2MoeConfig
            from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock as Block

            conf = Qwen2MoeConfig(hidden_size=h, moe_intermediate_size=i, num_experts=e, num_experts_per_tok=k,
                                  norm_topk_prob=cfg.renormalize, shared_expert_intermediate_size=cfg.shared_inter)
            sd = {"shared_expert.gate_proj.weight": w.shared_gate, "shared_expert.up_proj.weight": w.shared_up,
                  "shared_expert.down_proj.weight": w.shared_down,
                  "shared_expert_gate.weight": w.shared_gate_row[None, :]}
        block = Block(conf)
        sd.update({"gate.weight": w.router, "experts.gate_up_proj": fused, "experts.down_proj": w.down})
    else:
        count, _, _ = cfg.shared
        if kind == "deepseek-v2":
            from transformers import DeepseekV2Config
            from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe as Block

            groups, keep, _ = cfg.groups
            conf = DeepseekV2Config(hidden_size=h, moe_intermediate_size=i, n_routed_experts=e, num_experts_per_tok=k,
                                    n_shared_experts=count, topk_method="group_limited_greedy", n_group=groups,
                                    topk_group=keep, routed_scaling_factor=cfg.scaling, norm_topk_prob=False)
        else:
            from transformers import DeepseekV3Config
            from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE as Block

            groups, keep, _ = cfg.groups
            conf = DeepseekV3Config(hidden_size=h, moe_intermediate_size=i, n_routed_experts=e, num_experts_per_tok=k,
                                    n_shared_experts=count, n_group=groups, topk_group=keep,
                                    routed_scaling_factor=cfg.scaling, norm_topk_prob=cfg.renormalize)
            sd["gate.e_score_correction_bias"] = w.selection_bias
        block = Block(conf)
        sd.update({"gate.weight": w.router, "experts.gate_up_proj": fused, "experts.down_proj": w.down,
                   "shared_experts.gate_proj.weight": w.shared_gate, "shared_experts.up_proj.weight": w.shared_up,
                   "shared_experts.down_proj.weight": w.shared_down})
    want = set(block.state_dict())
    assert want == set(sd), f"{kind}: transformers' block has {sorted(want)}, we load {sorted(sd)}"
    block.load_state_dict({n: t.double() for n, t in sd.items()})
    return block.double().eval()


def _output(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's output for rows ``x`` ``[T][H]`` (some blocks also return router logits)."""
    with torch.no_grad():
        out = block(x[None])
    return (out[0] if isinstance(out, tuple) else out).view(x.shape)


@pytest.mark.parametrize("name", [m["name"] for m, _ in _models()])
def test_transformers_blocks_compute_the_oracles_layer(name: str):
    m, cfg = next((m, c) for m, c in _models() if m["name"] == name)
    kind = name.removesuffix("-f32")
    layer = C.generate_layer(cfg, m["seed"], CPU)
    x = C.generate_input(cfg, 0, m["seed"], CPU)
    block = _block(kind, cfg, layer)
    got = _output(block, x.double())
    oracle = torch.tensor(m["output"], dtype=torch.float64).view(cfg.tokens, cfg.hidden)
    err = C.rel_diff(got, oracle)
    bound = 2**-7 if cfg.dtype == "bf16" else 1e-5
    assert err <= bound, f"{name}: transformers' block differs from the Rust oracle by {err:.3e} (bound {bound:.0e})"
    # Its routing is ours: the same experts (in any slot order) and, expert by expert, weights.
    with torch.no_grad():
        _, weights, experts = (block.router if kind == "gpt-oss" else block.gate)(x.double())
    rust_e = torch.tensor(m["experts"]).view(cfg.tokens, cfg.top_k)
    rust_w = torch.tensor(m["weights"], dtype=torch.float64).view(cfg.tokens, cfg.top_k)
    if weights.shape[-1] == cfg.experts and cfg.top_k != cfg.experts:  # scattered over the experts
        weights = weights.gather(1, experts)
    order = torch.argsort(experts, dim=1)
    rust_order = torch.argsort(rust_e, dim=1)
    assert torch.equal(experts.gather(1, order), rust_e.gather(1, rust_order)), f"{name}: expert choice"
    diff = float((weights.double().gather(1, order) - rust_w.gather(1, rust_order)).abs().max())
    assert diff <= 1e-5 * max(1.0, cfg.scaling), f"{name}: combine weights differ by {diff:.2e}"
