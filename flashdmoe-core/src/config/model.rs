//! The parts of real models' MoE layers beyond the paper's (issue 16): how the router scores
//! and chooses experts ([`Routing`]), shared experts every token visits ([`SharedExperts`]),
//! and gpt-oss's clamped SwiGLU ([`SwigluOss`]), with their validation and the list of these
//! features a config uses ([`MoeConfig::features`]), which a backend that lacks them refuses.
//!
//! Each follows its Hugging Face reference exactly (the math is in `routing.rs` and
//! `oracle.rs`):
//!
//! * DeepSeek-V3 / Kimi-K2 (`DeepseekV3TopkRouter`): sigmoid scores, a selection bias
//!   (`e_score_correction_bias`) added for the choice only, the best `topk_group` of `n_group`
//!   groups by the sum of each group's two best biased scores, top-k within them, weights the
//!   unbiased scores of the chosen experts, renormalised (`norm_topk_prob`), times
//!   `routed_scaling_factor`; a shared expert of `n_shared_experts * moe_intermediate_size`.
//! * DeepSeek-V2 (`group_limited_greedy`): softmax scores, groups scored by their best score.
//! * Qwen2-MoE / Qwen1.5-MoE: a shared expert scaled by `sigmoid(x . shared_expert_gate)`.
//! * gpt-oss (`GptOssTopKRouter`, `GptOssExperts`): a router with a bias, top-k on the logits
//!   then a softmax over the chosen k, and experts `(clamp(up, -l, l) + 1) * g * sigmoid(1.702
//!   g)` with `g = min(gate, l)`, biases on every projection.

use super::{ConfigError, Feature, MoeConfig, SIZE_MULTIPLE, Unsupported, invalid};

/// How the router turns logits into scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scoring {
    /// Softmax over all experts, then top-k (Mixtral, Qwen, OLMoE, DeepSeek-V2).
    Softmax,
    /// `sigmoid(logit)` per expert (DeepSeek-V3, Kimi-K2).
    Sigmoid,
    /// Top-k on the logits, then a softmax over the chosen k (gpt-oss); the weights always sum
    /// to one, so [`MoeConfig::renormalize`] must be true.
    TopKSoftmax,
}

impl Scoring {
    /// The name in config files and summaries.
    pub const fn name(self) -> &'static str {
        match self {
            Scoring::Softmax => "softmax",
            Scoring::Sigmoid => "sigmoid",
            Scoring::TopKSoftmax => "topk-softmax",
        }
    }
}

/// What ranks the expert groups of grouped top-k.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupScore {
    /// The group's best choice score (DeepSeek-V2 `group_limited_greedy`).
    Max,
    /// The sum of the group's two best choice scores (DeepSeek-V3 `noaux_tc`).
    Top2Sum,
}

/// Grouped top-k: the experts are `count` contiguous groups; only the `keep` best groups'
/// experts may be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Groups {
    /// Groups (`n_group`); divides the experts.
    pub count: u32,
    /// Groups kept per token (`topk_group`).
    pub keep: u32,
    /// How groups are ranked.
    pub score: GroupScore,
}

/// The router's math beyond the logits' GEMM (the module doc of `routing.rs` has the steps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Routing {
    /// How logits become scores.
    pub scoring: Scoring,
    /// A bias `[E]` added to the logits (gpt-oss's router is a linear layer with a bias).
    pub router_bias: bool,
    /// A bias `[E]` added to the scores for the choice only (`e_score_correction_bias`); the
    /// combine weights are the unbiased scores.
    pub selection_bias: bool,
    /// Grouped top-k, if any.
    pub groups: Option<Groups>,
    /// Every combine weight is multiplied by this (`routed_scaling_factor`), after the
    /// renormalisation.
    pub scaling: f64,
}

impl Routing {
    /// The paper's router: softmax, no biases, no groups, no scaling.
    pub const SOFTMAX: Routing = Routing {
        scoring: Scoring::Softmax,
        router_bias: false,
        selection_bias: false,
        groups: None,
        scaling: 1.0,
    };

    /// DeepSeek-V3's router (`noaux_tc`): sigmoid scores, a selection bias, and grouped top-k
    /// (when `groups` has more than one group) by the sum of the top two.
    pub const fn deepseek_v3(groups: Option<(u32, u32)>, scaling: f64) -> Routing {
        Routing {
            scoring: Scoring::Sigmoid,
            router_bias: false,
            selection_bias: true,
            groups: match groups {
                Some((count, keep)) => Some(Groups { count, keep, score: GroupScore::Top2Sum }),
                None => None,
            },
            scaling,
        }
    }

    /// gpt-oss's router: a bias on the logits, top-k on them, softmax over the chosen.
    pub const GPT_OSS: Routing = Routing {
        scoring: Scoring::TopKSoftmax,
        router_bias: true,
        selection_bias: false,
        groups: None,
        scaling: 1.0,
    };
}

impl Default for Routing {
    fn default() -> Self {
        Routing::SOFTMAX
    }
}

/// What scales the shared experts' output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SharedGate {
    /// Nothing: output = routed sum + shared (DeepSeek).
    None,
    /// `sigmoid(x . g)` with a gate row `g` `[H]` (Qwen's `shared_expert_gate`).
    Sigmoid,
}

/// Experts every token visits besides its routed ones, computed on the token's own rank (no
/// dispatch). They are SwiGLU (silu) experts without biases; `count` of them are one SwiGLU of
/// intermediate size `count * inter` (what DeepSeek's `shared_experts` module is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SharedExperts {
    /// Shared experts (`n_shared_experts`; Qwen: 1).
    pub count: u32,
    /// Intermediate size of one (`moe_intermediate_size`; Qwen: `shared_expert_intermediate_size`).
    pub inter: u32,
    /// The gate on their output.
    pub gate: SharedGate,
}

impl SharedExperts {
    /// The intermediate size of the fused shared SwiGLU: `count * inter` (saturating; validated
    /// to fit).
    pub const fn total_inter(&self) -> u32 {
        self.count.saturating_mul(self.inter)
    }
}

/// gpt-oss's clamped SwiGLU: `h = (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g)` with
/// `g = min(gate, limit)`.
#[derive(Clone, Copy, Debug)]
pub struct SwigluOss {
    /// The sigmoid's slope (1.702).
    pub alpha: f64,
    /// The clamp (`swiglu_limit`, 7.0).
    pub limit: f64,
}

impl SwigluOss {
    /// gpt-oss's values: alpha 1.702, limit 7.
    pub const GPT_OSS: SwigluOss = SwigluOss { alpha: 1.702, limit: 7.0 };

    /// The activated value of one element.
    pub fn eval(self, up: f64, gate: f64) -> f64 {
        let g = gate.min(self.limit);
        let u = up.clamp(-self.limit, self.limit);
        (u + 1.0) * g / (1.0 + (-self.alpha * g).exp())
    }
}

impl PartialEq for SwigluOss {
    fn eq(&self, other: &Self) -> bool {
        self.alpha.to_bits() == other.alpha.to_bits()
            && self.limit.to_bits() == other.limit.to_bits()
    }
}

impl Eq for SwigluOss {}

impl std::hash::Hash for SwigluOss {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.alpha.to_bits().hash(state);
        self.limit.to_bits().hash(state);
    }
}

impl MoeConfig {
    /// Checks the routing, shared experts and activation parameters (part of
    /// [`MoeConfig::validate`]).
    pub(super) fn validate_model(&self) -> Result<(), ConfigError> {
        let r = &self.routing;
        if !(r.scaling.is_finite() && r.scaling > 0.0) {
            return Err(invalid(
                "routing.scaling",
                format!("{} must be finite and > 0", r.scaling),
            ));
        }
        if r.scoring == Scoring::TopKSoftmax && !self.renormalize {
            return Err(invalid(
                "renormalize",
                "false: a softmax over the chosen k (topk-softmax scoring) always sums to one",
            ));
        }
        if let Some(g) = r.groups {
            let e = self.experts;
            let per = if g.count == 0 || !e.is_multiple_of(g.count) { 0 } else { e / g.count };
            let reason = if g.count == 0 || per == 0 {
                Some(format!("{} groups do not divide the {e} experts", g.count))
            } else if g.keep == 0 || g.keep > g.count {
                Some(format!("keeping {} of {} groups: must be 1 to {}", g.keep, g.count, g.count))
            } else if g.score == GroupScore::Top2Sum && per < 2 {
                Some(format!("groups of {per} expert have no top two to sum"))
            } else if (g.keep as u64) * (per as u64) < self.top_k as u64 {
                Some(format!(
                    "{} kept groups of {per} experts hold fewer than top_k = {}",
                    g.keep, self.top_k
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(invalid("routing.groups", reason));
            }
        }
        if let Some(s) = self.shared {
            if s.count == 0 || s.inter == 0 {
                return Err(invalid("shared", "count and inter must be > 0"));
            }
            let total = s.count as u64 * s.inter as u64;
            if total > u32::MAX as u64 || !total.is_multiple_of(SIZE_MULTIPLE as u64) {
                return Err(invalid(
                    "shared.inter",
                    format!(
                        "{} x {} = {total} must fit in 32 bits and be a multiple of \
                         {SIZE_MULTIPLE}",
                        s.count, s.inter
                    ),
                ));
            }
        }
        if let super::Activation::SwigluOss(p) = self.activation
            && !(p.alpha.is_finite() && p.limit.is_finite() && p.limit > 0.0)
        {
            return Err(invalid(
                "activation",
                format!(
                    "swiglu-oss alpha {} and limit {} must be finite, limit > 0",
                    p.alpha, p.limit
                ),
            ));
        }
        Ok(())
    }

    /// The model features this config uses beyond the paper's layer (softmax router, top-k,
    /// relu/gelu/SwiGLU experts), each with the config field that asks for it: what a backend
    /// that does not compute them refuses (the CUDA kernel, issue 16). Empty for the paper's
    /// layer and the standard SwiGLU models (Mixtral, Qwen3-MoE, OLMoE).
    pub fn features(&self) -> Vec<Unsupported> {
        let r = &self.routing;
        let mut out = Vec::new();
        if let Some(s) = self.shared {
            let value = format!("{} x {}", s.count, s.inter);
            out.push(Unsupported::new("shared", value, Feature::SharedExperts));
            if s.gate == SharedGate::Sigmoid {
                out.push(Unsupported::new("shared.gate", "sigmoid", Feature::SharedExpertGate));
            }
        }
        if r.scoring != Scoring::Softmax {
            let value = r.scoring.name();
            out.push(Unsupported::new("routing.scoring", value, Feature::RouterScoring));
        }
        if r.router_bias {
            out.push(Unsupported::new("routing.router_bias", "true", Feature::RouterBias));
        }
        if r.selection_bias {
            out.push(Unsupported::new("routing.selection_bias", "true", Feature::SelectionBias));
        }
        if let Some(g) = r.groups {
            let value = format!("{} of {} groups", g.keep, g.count);
            out.push(Unsupported::new("routing.groups", value, Feature::GroupedTopK));
        }
        if r.scaling != 1.0 {
            let value = r.scaling.to_string();
            out.push(Unsupported::new("routing.scaling", value, Feature::RoutedScaling));
        }
        if let super::Activation::SwigluOss(p) = self.activation {
            let value = format!("swiglu-oss (alpha {}, limit {})", p.alpha, p.limit);
            out.push(Unsupported::new("activation", value.clone(), Feature::GptOssSwiglu));
            out.push(Unsupported::new("activation", value, Feature::SwigluClamp));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, Feature};

    #[test]
    fn swiglu_oss_by_hand() {
        let a = SwigluOss::GPT_OSS;
        // gate 1, up 2: 1 * sigmoid(1.702) * (2 + 1); sigmoid(1.702) = 0.845795...
        let s = 1.0 / (1.0 + (-1.702f64).exp());
        assert!((a.eval(2.0, 1.0) - 3.0 * s).abs() < 1e-15);
        assert!((s - 0.845_795_8).abs() < 1e-7);
        // gate clamped to 7 from above only, up to [-7, 7]: gate 9, up -10 -> 7 sig(11.914) (-6).
        let s7 = 1.0 / (1.0 + (-1.702f64 * 7.0).exp());
        assert!((a.eval(-10.0, 9.0) - (-6.0 * 7.0 * s7)).abs() < 1e-12);
        // A very negative gate is not clamped: -20 * sigmoid(-34.04) (1 + 1), about -3.6e-14.
        let v = a.eval(1.0, -20.0);
        assert!(v < 0.0 && v > -1e-13, "{v}");
        // up = -1 cancels the (up + 1) term.
        assert_eq!(a.eval(-1.0, 3.0), 0.0);
        assert_eq!(Activation::SwigluOss(a).eval(2.0, 1.0), a.eval(2.0, 1.0));
    }

    fn base() -> MoeConfig {
        MoeConfig {
            experts: 8,
            top_k: 2,
            activation: Activation::SiluGated,
            ..MoeConfig::default()
        }
    }

    fn field(c: &MoeConfig) -> &'static str {
        match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            Ok(()) => "ok",
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn routing_and_shared_experts_are_validated() {
        let groups = |count, keep, score| MoeConfig {
            routing: Routing {
                groups: Some(Groups { count, keep, score }),
                ..Routing::deepseek_v3(None, 1.0)
            },
            ..base()
        };
        assert_eq!(field(&groups(4, 2, GroupScore::Top2Sum)), "ok");
        assert_eq!(field(&groups(3, 2, GroupScore::Top2Sum)), "routing.groups"); // 3 ∤ 8
        assert_eq!(field(&groups(0, 0, GroupScore::Max)), "routing.groups");
        assert_eq!(field(&groups(4, 5, GroupScore::Max)), "routing.groups");
        assert_eq!(field(&groups(8, 2, GroupScore::Top2Sum)), "routing.groups"); // groups of 1
        assert_eq!(field(&groups(8, 2, GroupScore::Max)), "ok");
        assert_eq!(field(&groups(8, 1, GroupScore::Max)), "routing.groups"); // 1 expert < k 2
        let scaled =
            |scaling| MoeConfig { routing: Routing { scaling, ..Routing::SOFTMAX }, ..base() };
        assert_eq!(field(&scaled(2.5)), "ok");
        assert_eq!(field(&scaled(0.0)), "routing.scaling");
        assert_eq!(field(&scaled(f64::NAN)), "routing.scaling");
        let topk = MoeConfig { routing: Routing::GPT_OSS, renormalize: false, ..base() };
        assert_eq!(field(&topk), "renormalize");
        let shared = |count, inter| MoeConfig {
            shared: Some(SharedExperts { count, inter, gate: SharedGate::None }),
            ..base()
        };
        assert_eq!(field(&shared(2, 1408)), "ok");
        assert_eq!(field(&shared(0, 64)), "shared");
        assert_eq!(field(&shared(3, 100)), "shared.inter");
        assert_eq!(field(&shared(u32::MAX, 128)), "shared.inter");
        let oss = |limit| MoeConfig {
            activation: Activation::SwigluOss(SwigluOss { alpha: 1.702, limit }),
            ..base()
        };
        assert_eq!(field(&oss(7.0)), "ok");
        assert_eq!(field(&oss(-1.0)), "activation");
    }

    #[test]
    fn features_name_each_field() {
        assert!(base().features().is_empty());
        let v3 = MoeConfig {
            shared: Some(SharedExperts { count: 1, inter: 128, gate: SharedGate::Sigmoid }),
            routing: Routing::deepseek_v3(Some((4, 2)), 2.5),
            ..base()
        };
        let got: Vec<(String, Feature)> =
            v3.features().into_iter().map(|u| (u.field, u.feature)).collect();
        let want = [
            ("shared", Feature::SharedExperts),
            ("shared.gate", Feature::SharedExpertGate),
            ("routing.scoring", Feature::RouterScoring),
            ("routing.selection_bias", Feature::SelectionBias),
            ("routing.groups", Feature::GroupedTopK),
            ("routing.scaling", Feature::RoutedScaling),
        ];
        assert_eq!(got, want.map(|(f, x)| (f.to_owned(), x)));
        let oss = MoeConfig {
            activation: Activation::SwigluOss(SwigluOss::GPT_OSS),
            routing: Routing::GPT_OSS,
            bias: true,
            ..base()
        };
        let got: Vec<Feature> = oss.features().into_iter().map(|u| u.feature).collect();
        assert_eq!(
            got,
            [
                Feature::RouterScoring,
                Feature::RouterBias,
                Feature::GptOssSwiglu,
                Feature::SwigluClamp
            ]
        );
    }
}
