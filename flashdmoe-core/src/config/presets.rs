//! Named configurations: the paper's benchmark grid and real models' MoE layers.
//!
//! A model preset fixes the layer (H, I, E, k, activation, biases, renormalisation, routing,
//! shared experts) as the model's published `config.json` describes it (the samples under
//! `tests/data/hf/`, and the tests that load them, hold each preset to its file); the run
//! parameters are one rank, 4096 tokens, bf16, dropless, contiguous placement, to be overridden
//! by the caller (e.g. through [`MoeConfig::into_builder`]). Weights that the model publishes
//! quantized (DeepSeek-V3 and Kimi-K2 in FP8 blocks, gpt-oss in MXFP4) are bf16 here: the
//! presets compute the layer's math, not its storage format.
//!
//! Models whose layer has features the CUDA kernel does not compute yet (shared experts,
//! DeepSeek-V3 routing, gpt-oss experts: [`MoeConfig::features`]) run on the simulator; their
//! parts that the kernel runs have presets of their own:
//!
//! * `qwen1.5-moe-a2.7b-routed`, `deepseek-v2-lite-routed`: the routed experts alone, without
//!   the shared experts (and Qwen's shared-expert gate) every token also visits;
//! * `gpt-oss-20b-shape`: gpt-oss-20b's expert shapes and biases with the standard SwiGLU and
//!   router: without its `swiglu_limit` clamp, its SwiGLU variant (alpha 1.702, `up + 1`) and
//!   its router (a bias, softmax over the top-k logits), so not gpt-oss's numbers.
//!
//! The paper grid ([`paper`], names `paper-t<T>-e<E>`) is H = I = 2048, top-2, ReLU, capacity
//! factor 1, for T in [`PAPER_TOKENS`] and E in [`PAPER_EXPERTS`].

use super::{
    Activation, CapacityPolicy, ConfigError, DType, GroupScore, Groups, MoeConfig, Routing,
    SharedExperts, SharedGate, SwigluOss,
};

/// Tokens per rank of the paper grid.
pub const PAPER_TOKENS: [u32; 4] = [128, 4096, 8192, 16384];

/// Expert counts of the paper grid.
pub const PAPER_EXPERTS: [u32; 5] = [8, 16, 32, 64, 128];

/// Tokens per rank of the model presets.
pub const MODEL_TOKENS: u32 = 4096;

/// A model preset's layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelShape {
    /// Preset name, e.g. `mixtral-8x7b`.
    pub name: &'static str,
    /// Hidden size H.
    pub hidden: u32,
    /// Expert intermediate size I.
    pub inter: u32,
    /// Routed experts E.
    pub experts: u32,
    /// Experts per token k.
    pub top_k: u32,
    /// The experts' activation (gated: SwiGLU or gpt-oss's).
    pub activation: Activation,
    /// Whether expert projections have biases.
    pub bias: bool,
    /// Whether the top-k weights are renormalised (Hugging Face `norm_topk_prob`).
    pub renormalize: bool,
    /// The router.
    pub routing: Routing,
    /// Shared experts.
    pub shared: Option<SharedExperts>,
}

/// A SwiGLU model with the paper's router and no shared experts.
const fn swiglu(
    name: &'static str,
    [hidden, inter, experts, top_k]: [u32; 4],
    renormalize: bool,
) -> ModelShape {
    ModelShape {
        name,
        hidden,
        inter,
        experts,
        top_k,
        activation: Activation::SiluGated,
        bias: false,
        renormalize,
        routing: Routing::SOFTMAX,
        shared: None,
    }
}

/// `model` with shared experts.
const fn with_shared(model: ModelShape, count: u32, inter: u32, gate: SharedGate) -> ModelShape {
    ModelShape { shared: Some(SharedExperts { count, inter, gate }), ..model }
}

/// DeepSeek-V3's layer shape and routing (Kimi-K2 differs in E, groups and scaling).
const fn deepseek_v3(
    name: &'static str,
    experts: u32,
    groups: Option<(u32, u32)>,
    scaling: f64,
) -> ModelShape {
    let model = ModelShape {
        routing: Routing::deepseek_v3(groups, scaling),
        ..swiglu(name, [7168, 2048, experts, 8], true)
    };
    with_shared(model, 1, 2048, SharedGate::None)
}

/// gpt-oss's layer with `experts` experts.
const fn gpt_oss(name: &'static str, experts: u32) -> ModelShape {
    ModelShape {
        activation: Activation::SwigluOss(SwigluOss::GPT_OSS),
        bias: true,
        routing: Routing::GPT_OSS,
        ..swiglu(name, [2880, 2880, experts, 4], true)
    }
}

/// The model presets: the models' MoE layers (from their `config.json`), and the parts of
/// models that the CUDA kernel runs (module doc).
pub const MODELS: [ModelShape; 13] = [
    swiglu("mixtral-8x7b", [4096, 14336, 8, 2], true),
    with_shared(
        swiglu("qwen1.5-moe-a2.7b", [2048, 1408, 60, 4], false),
        1,
        5632,
        SharedGate::Sigmoid,
    ),
    swiglu("qwen1.5-moe-a2.7b-routed", [2048, 1408, 60, 4], false),
    with_shared(
        swiglu("qwen2-57b-a14b", [3584, 2560, 64, 8], false),
        1,
        20480,
        SharedGate::Sigmoid,
    ),
    swiglu("qwen3-30b-a3b", [2048, 768, 128, 8], true),
    with_shared(swiglu("deepseek-v2-lite", [2048, 1408, 64, 6], false), 2, 1408, SharedGate::None),
    swiglu("deepseek-v2-lite-routed", [2048, 1408, 64, 6], false),
    deepseek_v3("deepseek-v3", 256, Some((8, 4)), 2.5),
    deepseek_v3("kimi-k2", 384, None, 2.827),
    swiglu("olmoe-1b-7b", [2048, 1024, 64, 8], false),
    gpt_oss("gpt-oss-20b", 32),
    gpt_oss("gpt-oss-120b", 128),
    ModelShape { bias: true, ..swiglu("gpt-oss-20b-shape", [2880, 2880, 32, 4], true) },
];

impl ModelShape {
    /// This model's layer with the preset run parameters (module doc).
    pub fn config(&self) -> MoeConfig {
        MoeConfig {
            world: 1,
            tokens_per_rank: MODEL_TOKENS,
            hidden: self.hidden,
            inter: self.inter,
            experts: self.experts,
            top_k: self.top_k,
            activation: self.activation,
            bias: self.bias,
            capacity: CapacityPolicy::Dropless,
            renormalize: self.renormalize,
            routing: self.routing,
            shared: self.shared,
            ..MoeConfig::default()
        }
    }
}

/// Small layers of each real-model kind, for tests and fixtures (the simulator's, the
/// oracle's, the PyTorch baselines' fixture): one rank, T 16, H 64, I 64, E 8, top-2,
/// dropless, in `dtype`: `mixtral`, `qwen3-moe` (not renormalised), `qwen2-moe` (a shared
/// expert of 128 with its sigmoid gate), `deepseek-v2` (2 shared experts of 64, 2 of 4 groups
/// by their best score, x16), `deepseek-v3` (a shared expert of 64, sigmoid scores, selection
/// bias, 2 of 4 groups by their top-two sum, x2.5) and `gpt-oss`.
pub fn small_model_kinds(dtype: DType) -> Vec<(&'static str, MoeConfig)> {
    let base = MoeConfig {
        world: 1,
        tokens_per_rank: 16,
        hidden: 64,
        inter: 64,
        experts: 8,
        top_k: 2,
        activation: Activation::SiluGated,
        dtype,
        capacity: CapacityPolicy::Dropless,
        ..MoeConfig::default()
    };
    let shared = |count, inter, gate| Some(SharedExperts { count, inter, gate });
    vec![
        ("mixtral", base.clone()),
        ("qwen3-moe", MoeConfig { renormalize: false, ..base.clone() }),
        (
            "qwen2-moe",
            MoeConfig {
                shared: shared(1, 128, SharedGate::Sigmoid),
                renormalize: false,
                ..base.clone()
            },
        ),
        (
            "deepseek-v2",
            MoeConfig {
                shared: shared(2, 64, SharedGate::None),
                routing: Routing {
                    groups: Some(Groups { count: 4, keep: 2, score: GroupScore::Max }),
                    scaling: 16.0,
                    ..Routing::SOFTMAX
                },
                renormalize: false,
                ..base.clone()
            },
        ),
        (
            "deepseek-v3",
            MoeConfig {
                shared: shared(1, 64, SharedGate::None),
                routing: Routing::deepseek_v3(Some((4, 2)), 2.5),
                ..base.clone()
            },
        ),
        (
            "gpt-oss",
            MoeConfig {
                activation: Activation::SwigluOss(SwigluOss::GPT_OSS),
                bias: true,
                routing: Routing::GPT_OSS,
                ..base
            },
        ),
    ]
}

/// The paper's layer with `tokens` per rank and `experts` experts, on one rank.
pub fn paper(tokens: u32, experts: u32) -> MoeConfig {
    MoeConfig {
        world: 1,
        tokens_per_rank: tokens,
        hidden: 2048,
        inter: 2048,
        experts,
        top_k: 2,
        activation: Activation::Relu,
        bias: false,
        capacity: CapacityPolicy::Factor(1.0),
        renormalize: true,
        ..MoeConfig::default()
    }
}

/// The whole paper grid, T-major: `(name, config)`.
pub fn paper_grid() -> Vec<(String, MoeConfig)> {
    PAPER_TOKENS
        .iter()
        .flat_map(|&t| PAPER_EXPERTS.iter().map(move |&e| (paper_name(t, e), paper(t, e))))
        .collect()
}

fn paper_name(tokens: u32, experts: u32) -> String {
    format!("paper-t{tokens}-e{experts}")
}

/// Every preset name: the models, then the paper grid.
pub fn names() -> Vec<String> {
    MODELS
        .iter()
        .map(|m| m.name.to_owned())
        .chain(paper_grid().into_iter().map(|(n, _)| n))
        .collect()
}

/// The preset called `name` (case-insensitive): a model name or `paper-t<T>-e<E>` with T and E
/// from the grid.
pub fn preset(name: &str) -> Result<MoeConfig, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if let Some(m) = MODELS.iter().find(|m| m.name == lower) {
        return Ok(m.config());
    }
    paper_grid().into_iter().find(|(n, _)| *n == lower).map(|(_, c)| c).ok_or_else(|| {
        ConfigError::UnknownPreset { name: name.to_owned(), known: names().join(", ") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid() {
        for name in names() {
            let c = preset(&name).unwrap();
            assert_eq!(c.validate(), Ok(()), "{name}");
        }
        assert_eq!(names().len(), MODELS.len() + 20);
    }

    #[test]
    fn presets_by_name() {
        let m = preset("Mixtral-8x7B").unwrap();
        assert_eq!((m.hidden, m.inter, m.experts, m.top_k), (4096, 14336, 8, 2));
        assert_eq!(m.activation, Activation::SiluGated);
        let g = preset("gpt-oss-20b-shape").unwrap();
        assert!(g.bias && g.hidden == 2880);
        let q = preset("qwen1.5-moe-a2.7b-routed").unwrap();
        assert_eq!(
            (q.hidden, q.inter, q.experts, q.top_k, q.renormalize),
            (2048, 1408, 60, 4, false)
        );
        let p = preset("paper-t16384-e128").unwrap();
        assert_eq!((p.tokens_per_rank, p.experts, p.hidden, p.inter), (16384, 128, 2048, 2048));
        assert_eq!(p.capacity, CapacityPolicy::Factor(1.0));
        assert!(matches!(preset("paper-t100-e8"), Err(ConfigError::UnknownPreset { .. })));
        let err = preset("llama").unwrap_err().to_string();
        assert!(err.contains("llama") && err.contains("olmoe-1b-7b"), "{err}");
    }

    #[test]
    fn model_presets_have_their_models_features() {
        use crate::config::{GroupScore, Groups, Scoring};
        let v3 = preset("deepseek-v3").unwrap();
        assert_eq!((v3.hidden, v3.inter, v3.experts, v3.top_k), (7168, 2048, 256, 8));
        assert_eq!(
            v3.shared,
            Some(SharedExperts { count: 1, inter: 2048, gate: SharedGate::None })
        );
        assert_eq!(v3.routing.scoring, Scoring::Sigmoid);
        assert!(v3.routing.selection_bias && v3.renormalize && v3.routing.scaling == 2.5);
        assert_eq!(
            v3.routing.groups,
            Some(Groups { count: 8, keep: 4, score: GroupScore::Top2Sum })
        );
        let kimi = preset("kimi-k2").unwrap();
        assert_eq!((kimi.experts, kimi.routing.groups, kimi.routing.scaling), (384, None, 2.827));
        let q = preset("qwen2-57b-a14b").unwrap();
        assert_eq!(q.shared.map(|s| (s.inter, s.gate)), Some((20480, SharedGate::Sigmoid)));
        let oss = preset("gpt-oss-120b").unwrap();
        assert_eq!((oss.experts, oss.bias, oss.routing), (128, true, Routing::GPT_OSS));
        assert_eq!(oss.activation, Activation::SwigluOss(SwigluOss::GPT_OSS));
        // The parts the CUDA kernel runs have no features; the models have theirs.
        for name in ["qwen1.5-moe-a2.7b-routed", "deepseek-v2-lite-routed", "gpt-oss-20b-shape"] {
            assert!(preset(name).unwrap().features().is_empty(), "{name}");
        }
        for name in ["qwen1.5-moe-a2.7b", "deepseek-v2-lite", "deepseek-v3", "gpt-oss-20b"] {
            assert!(!preset(name).unwrap().features().is_empty(), "{name}");
        }
    }
}
