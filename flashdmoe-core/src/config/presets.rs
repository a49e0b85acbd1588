//! Named configurations: the paper's benchmark grid and real models' MoE layer shapes.
//!
//! A model preset fixes the layer's shape (H, I, E, k, activation, biases, renormalisation);
//! the run parameters are one rank, 4096 tokens, bf16, dropless, contiguous placement, to be
//! overridden by the caller (e.g. through [`MoeConfig::into_builder`]).
//!
//! A preset named after a model computes that model's MoE layer ([`MODELS`]: Mixtral-8x7B,
//! OLMoE-1B-7B). Models whose layer needs what flashdmoe does not compute yet (issue 16) are
//! refused under their own names ([`REFUSED`]: [`ConfigError::NotImplemented`] naming each
//! missing feature) and offered under a name that says what part of them runs:
//!
//! * `qwen1.5-moe-a2.7b-routed`, `deepseek-v2-lite-routed`: the routed experts alone, without
//!   the shared experts (and Qwen's shared-expert gate) every token also visits;
//! * `gpt-oss-20b-shape`: gpt-oss-20b's expert shapes and biases with the standard SwiGLU and
//!   router: without its `swiglu_limit` clamp, its SwiGLU variant (alpha 1.702, `up + 1`) and
//!   its router bias, so not gpt-oss's numbers.
//!
//! The paper grid ([`paper`], names `paper-t<T>-e<E>`) is H = I = 2048, top-2, ReLU, capacity
//! factor 1, for T in [`PAPER_TOKENS`] and E in [`PAPER_EXPERTS`].

use super::{Activation, CapacityPolicy, ConfigError, Feature, MoeConfig, Unsupported};

/// Tokens per rank of the paper grid.
pub const PAPER_TOKENS: [u32; 4] = [128, 4096, 8192, 16384];

/// Expert counts of the paper grid.
pub const PAPER_EXPERTS: [u32; 5] = [8, 16, 32, 64, 128];

/// Tokens per rank of the model presets.
pub const MODEL_TOKENS: u32 = 4096;

/// A model preset's layer shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Whether expert projections have biases.
    pub bias: bool,
    /// Whether the top-k weights are renormalised (Hugging Face `norm_topk_prob`).
    pub renormalize: bool,
}

/// The model presets (all SwiGLU experts): the models' MoE layers, and the parts of models
/// that run (module doc).
pub const MODELS: [ModelShape; 5] = [
    ModelShape {
        name: "mixtral-8x7b",
        hidden: 4096,
        inter: 14336,
        experts: 8,
        top_k: 2,
        bias: false,
        renormalize: true,
    },
    ModelShape {
        name: "qwen1.5-moe-a2.7b-routed",
        hidden: 2048,
        inter: 1408,
        experts: 60,
        top_k: 4,
        bias: false,
        renormalize: false,
    },
    ModelShape {
        name: "deepseek-v2-lite-routed",
        hidden: 2048,
        inter: 1408,
        experts: 64,
        top_k: 6,
        bias: false,
        renormalize: false,
    },
    ModelShape {
        name: "olmoe-1b-7b",
        hidden: 2048,
        inter: 1024,
        experts: 64,
        top_k: 8,
        bias: false,
        renormalize: false,
    },
    ModelShape {
        name: "gpt-oss-20b-shape",
        hidden: 2880,
        inter: 2880,
        experts: 32,
        top_k: 4,
        bias: true,
        renormalize: true,
    },
];

/// A model whose MoE layer needs features flashdmoe lacks: its preset name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedModel {
    /// The model's name, e.g. `gpt-oss-20b`.
    pub name: &'static str,
    /// What it needs: `(field, value, feature)` as its config.json says.
    pub needs: &'static [(&'static str, &'static str, Feature)],
    /// The preset of the part that runs.
    pub instead: &'static str,
    /// What that part is, in words.
    pub part: &'static str,
}

/// The refused model names (module doc).
pub const REFUSED: [RefusedModel; 3] = [
    RefusedModel {
        name: "qwen1.5-moe-a2.7b",
        needs: &[
            ("shared_expert_intermediate_size", "5632", Feature::SharedExperts),
            (
                "shared_expert_gate",
                "a sigmoid gate on the shared expert",
                Feature::SharedExpertGate,
            ),
        ],
        instead: "qwen1.5-moe-a2.7b-routed",
        part: "its routed experts alone",
    },
    RefusedModel {
        name: "deepseek-v2-lite",
        needs: &[("n_shared_experts", "2", Feature::SharedExperts)],
        instead: "deepseek-v2-lite-routed",
        part: "its routed experts alone",
    },
    RefusedModel {
        name: "gpt-oss-20b",
        needs: &[
            ("swiglu_limit", "7.0", Feature::SwigluClamp),
            ("model_type", "\"gpt_oss\"", Feature::GptOssSwiglu),
            ("model_type", "\"gpt_oss\" (its router has a bias)", Feature::RouterBias),
        ],
        instead: "gpt-oss-20b-shape",
        part: "its expert shapes with the standard SwiGLU and router",
    },
];

impl RefusedModel {
    /// The error of asking for this preset.
    pub fn error(&self) -> ConfigError {
        ConfigError::NotImplemented {
            origin: format!("preset {}", self.name),
            unsupported: self.needs.iter().map(|&(f, v, x)| Unsupported::new(f, v, x)).collect(),
            note: format!("; preset {} is {}", self.instead, self.part),
        }
    }
}

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
            activation: Activation::SiluGated,
            bias: self.bias,
            capacity: CapacityPolicy::Dropless,
            renormalize: self.renormalize,
            ..MoeConfig::default()
        }
    }
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
    if let Some(m) = REFUSED.iter().find(|m| m.name == lower) {
        return Err(m.error());
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
    fn models_missing_features_are_refused_naming_them_and_the_part_that_runs() {
        for m in REFUSED {
            assert!(!names().contains(&m.name.to_owned()), "{}", m.name);
            assert!(names().contains(&m.instead.to_owned()), "{}", m.instead);
            let err = preset(&m.name.to_ascii_uppercase()).unwrap_err();
            assert!(matches!(&err, ConfigError::NotImplemented { unsupported, .. }
                if unsupported.len() == m.needs.len()));
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("preset {}: ", m.name)), "{msg}");
            assert!(msg.contains(&format!("(issue 16); preset {} is ", m.instead)), "{msg}");
        }
        let msg = preset("deepseek-v2-lite").unwrap_err().to_string();
        assert_eq!(
            msg,
            "preset deepseek-v2-lite: n_shared_experts = 2: shared experts are not implemented \
             yet (issue 16); preset deepseek-v2-lite-routed is its routed experts alone"
        );
        let msg = preset("gpt-oss-20b").unwrap_err().to_string();
        for needle in ["swiglu_limit = 7.0", "1.702", "a router bias"] {
            assert!(msg.contains(needle), "{msg}");
        }
    }
}
