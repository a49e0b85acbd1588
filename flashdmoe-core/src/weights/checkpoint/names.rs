//! How a layer's tensors are named: our stacked names, the Hugging Face per-expert namings,
//! gpt-oss's bf16 layout, the layouts recognised but refused, and why a tensor of the layer's
//! scope that no name matches is unexpected.

use crate::config::{MoeConfig, SharedGate};
use crate::weights::is_routed;

/// The stacked file name of a [`LayerWeights`] field.
pub(in crate::weights) fn stacked_name(field: &str) -> &'static str {
    match field {
        "router" => "router.weight",
        "up" => "experts.up.weight",
        "gate" => "experts.gate.weight",
        "down" => "experts.down.weight",
        "up_bias" => "experts.up.bias",
        "gate_bias" => "experts.gate.bias",
        "down_bias" => "experts.down.bias",
        "router_bias" => "router.bias",
        "selection_bias" => "router.selection_bias",
        "shared_up" => "shared.up.weight",
        "shared_gate" => "shared.gate.weight",
        "shared_down" => "shared.down.weight",
        "shared_gate_row" => "shared.gate_row.weight",
        _ => unreachable!("specs() only names LayerWeights fields"),
    }
}

/// The Hugging Face name of a layer-level tensor (not one per expert) of `field` under a
/// per-expert naming's MoE block (module doc), or `None` for an expert tensor.
pub(super) fn hf_layer_name(n: &PerExpert, field: &str, config: &MoeConfig) -> Option<String> {
    let router_stem = n.router.strip_suffix(".weight").unwrap_or(n.router);
    // Qwen's shared expert has the sigmoid gate; DeepSeek's shared experts have none.
    let shared = match config.shared.map(|s| s.gate) {
        Some(SharedGate::Sigmoid) => "shared_expert",
        _ => "shared_experts",
    };
    Some(match field {
        "router" => n.router.to_owned(),
        "router_bias" => format!("{router_stem}.bias"),
        "selection_bias" => format!("{router_stem}.e_score_correction_bias"),
        "shared_up" => format!("{}{shared}.up_proj.weight", n.block),
        "shared_gate" => format!("{}{shared}.gate_proj.weight", n.block),
        "shared_down" => format!("{}{shared}.down_proj.weight", n.block),
        "shared_gate_row" => format!("{}shared_expert_gate.weight", n.block),
        _ => return None,
    })
}

/// A per-expert naming scheme of a Hugging Face checkpoint.
pub(in crate::weights) struct PerExpert {
    /// The MoE block, under which every tensor of the layer's MoE lives.
    pub(super) block: &'static str,
    pub(super) router: &'static str,
    pub(super) experts: &'static str,
    pub(super) gate: &'static str,
    pub(super) up: &'static str,
    pub(super) down: &'static str,
}

pub(in crate::weights) const MIXTRAL: PerExpert = PerExpert {
    block: "block_sparse_moe.",
    router: "block_sparse_moe.gate.weight",
    experts: "block_sparse_moe.experts.",
    gate: "w1",
    up: "w3",
    down: "w2",
};

pub(in crate::weights) const HF_MLP: PerExpert = PerExpert {
    block: "mlp.",
    router: "mlp.gate.weight",
    experts: "mlp.experts.",
    gate: "gate_proj",
    up: "up_proj",
    down: "down_proj",
};

pub(super) const JAMBA: PerExpert = PerExpert {
    block: "feed_forward.",
    router: "feed_forward.router.weight",
    experts: "feed_forward.experts.",
    gate: "gate_proj",
    up: "up_proj",
    down: "down_proj",
};

/// How a layer's tensors are named in a checkpoint.
#[derive(Clone, Copy)]
pub(super) enum Naming {
    Stacked,
    PerExpert(&'static PerExpert),
    /// gpt-oss's bf16 layout (module doc).
    GptOss,
}

impl Naming {
    pub(super) const ALL: [(&'static str, Naming); 5] = [
        ("router.weight", Naming::Stacked),
        (MIXTRAL.router, Naming::PerExpert(&MIXTRAL)),
        (HF_MLP.router, Naming::PerExpert(&HF_MLP)),
        (JAMBA.router, Naming::PerExpert(&JAMBA)),
        ("mlp.router.weight", Naming::GptOss),
    ];

    /// Where every tensor of the layer lives: the whole (prefixed) file for our stacked
    /// files, the MoE block of a model's layer.
    pub(super) fn scope(&self, prefix: &str) -> String {
        match self {
            Naming::Stacked => prefix.to_owned(),
            Naming::PerExpert(n) => format!("{prefix}{}", n.block),
            Naming::GptOss => format!("{prefix}mlp."),
        }
    }

    /// Whether tensor `field` (a [`specs`] name) is one tensor per expert in this naming.
    pub(super) fn is_per_expert(&self, field: &str) -> bool {
        matches!(self, Naming::PerExpert(_)) && is_routed(field)
    }

    /// The checkpoint names of tensor `field` (a [`specs`] name) of `config`: one stacked
    /// name, or one per expert (the router, its biases and the shared experts are always one).
    pub(super) fn names(&self, prefix: &str, field: &str, config: &MoeConfig) -> Vec<String> {
        let n = match self {
            Naming::Stacked => return vec![format!("{prefix}{}", stacked_name(field))],
            Naming::GptOss => return vec![format!("{prefix}{}", gpt_oss_name(field))],
            Naming::PerExpert(n) => n,
        };
        if let Some(name) = hf_layer_name(n, field, config) {
            return vec![format!("{prefix}{name}")];
        }
        let experts = config.experts as usize;
        let (proj, kind) = match field {
            "up" => (n.up, "weight"),
            "gate" => (n.gate, "weight"),
            "down" => (n.down, "weight"),
            "up_bias" => (n.up, "bias"),
            "gate_bias" => (n.gate, "bias"),
            _ => (n.down, "bias"),
        };
        (0..experts).map(|e| format!("{prefix}{}{e}.{proj}.{kind}", n.experts)).collect()
    }
}

/// gpt-oss's bf16 name of a [`specs`] field (module doc): the gate and up projections (and
/// their biases) share one interleaved tensor.
pub(super) fn gpt_oss_name(field: &str) -> &'static str {
    match field {
        "router" => "mlp.router.weight",
        "router_bias" => "mlp.router.bias",
        "up" | "gate" => "mlp.experts.gate_up_proj",
        "up_bias" | "gate_bias" => "mlp.experts.gate_up_proj_bias",
        "down" => "mlp.experts.down_proj",
        "down_bias" => "mlp.experts.down_proj_bias",
        // Not in gpt-oss: a name no checkpoint has, so the tensor is reported missing.
        "selection_bias" => "mlp.router.selection_bias",
        "shared_up" => "mlp.shared_experts.up_proj.weight",
        "shared_gate" => "mlp.shared_experts.gate_proj.weight",
        "shared_down" => "mlp.shared_experts.down_proj.weight",
        _ => "mlp.shared_expert_gate.weight",
    }
}

/// Checkpoint layouts recognised but not supported yet: a name suffix, and the layout.
pub(super) const UNSUPPORTED_LAYOUTS: [(&str, &str); 3] = [
    (
        "mlp.experts.gate_up_proj_blocks",
        "gpt-oss MXFP4 (_blocks/_scales experts; its bf16 layout, mlp.experts.gate_up_proj, \
         loads)",
    ),
    ("feed_forward.experts.gate_up_proj", "Llama-4 (a fused gate_up_proj, a shared expert)"),
    ("ffn.router.layer.weight", "DBRX (experts stacked as ffn.experts.mlp.w1 / v1 / w2)"),
];

/// Dense MLP tensors: a layer with one of these and no router is not an MoE layer.
pub(super) const DENSE_MLP: [&str; 4] = [
    "mlp.up_proj.weight",
    "mlp.gate_up_proj.weight",
    "feed_forward.up_proj.weight",
    "mlp.w3.weight",
];

/// Why tensor `name` of the layer's scope is not read, and how telling that is (lower first):
/// `field` is the tensor it would be in a gated layer with biases and router biases.
pub(super) fn why_unexpected(name: &str, field: Option<&str>, config: &MoeConfig) -> (u8, String) {
    if name.contains("shared_expert") {
        let reason = match config.shared {
            None => "a shared expert's tensor, but the config has no shared experts (shared; \
                     n_shared_experts or shared_expert_intermediate_size in config.json)"
                .to_owned(),
            Some(s) if name.contains("shared_expert_gate") && s.gate == SharedGate::None => {
                "Qwen's shared_expert_gate, but the config's shared experts have no sigmoid gate \
                 (shared.gate)"
                    .to_owned()
            }
            Some(_) => "a shared expert's tensor of the other naming: shared experts without a \
                        gate are read as mlp.shared_experts.* (DeepSeek), with a sigmoid gate as \
                        mlp.shared_expert.* and mlp.shared_expert_gate.weight (Qwen)"
                .to_owned(),
        };
        (0, reason)
    } else if name.ends_with("e_score_correction_bias") || field == Some("selection_bias") {
        let why = "DeepSeek-V3's selection bias, but the config's router has none \
                   (routing.selection_bias; topk_method noaux_tc in config.json)";
        (0, why.into())
    } else if name.contains("gate_up_proj") && field.is_none() {
        (0, "a fused gate/up projection of another layout: not supported yet (issue 16)".into())
    } else if name.ends_with("router.bias")
        || field == Some("router_bias")
        || name.ends_with("gate.bias") && field.is_none()
    {
        (0, "a router bias, but the config's router has none (routing.router_bias)".into())
    } else if matches!(field, Some("gate" | "gate_bias")) && !config.activation.is_gated() {
        (1, format!("the {} layer has no gate projection (only swiglu has one)", config.activation))
    } else if field.is_some() && !config.bias {
        (1, "the config has no biases (bias = false)".into())
    } else {
        let (e, a, b) = (config.experts, config.activation, config.bias);
        (2, format!("no tensor of this layer ({e} experts, {a}, bias = {b}) has this name"))
    }
}
