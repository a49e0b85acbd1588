//! The router and the per-rank routing plan.
//!
//! [`route`] is the CPU router every backend is checked against. Per token, in `f32` unless
//! said otherwise, following each model's Hugging Face reference ([`Routing`]):
//!
//! 1. logits `l[e] = sum_h x[h] * router[e][h] (+ bias[e])`, accumulated in `f64` in ascending
//!    `h` (the router bias, gpt-oss's, added in `f64`), then rounded to `f32`;
//! 2. scores `s[e]` ([`Scoring`]): softmax over the experts (`m = max_e l`, `z_e = exp(l_e -
//!    m)`, `sum = z_0 + z_1 + ...` ascending `e`, `s_e = z_e / sum`); or `sigmoid(l_e) = 1 / (1 +
//!    exp(-l_e))`; or, for top-k softmax (gpt-oss), the logits themselves;
//! 3. choice scores `c[e] = s[e] (+ selection_bias[e])` (DeepSeek-V3's
//!    `e_score_correction_bias`: for the choice only); with grouped top-k ([`Groups`]), the
//!    experts form `n` contiguous groups, each scored by its best `c` ([`GroupScore::Max`]) or
//!    its two best added ([`GroupScore::Top2Sum`], largest first), the `keep` best groups are
//!    kept (ties to the lower group) and the other groups' experts get `c = 0.0` -- zero, not
//!    minus infinity, exactly as the references mask them (so an expert of a dropped group can
//!    still be chosen over kept ones whose biased scores are negative);
//! 4. top-k by descending `c`, ties to the lower expert index; slot `j` holds the `j`-th;
//! 5. combine weights from the unbiased scores of the chosen experts `p_j = s[e_j]`: for top-k
//!    softmax `w_j = exp(p_j - max p) / sum` (sum in slot order); otherwise `w_j = p_j`,
//!    divided by `p_0 + ... + p_{k-1}` (slot order; plus `1e-20` for sigmoid scores, as
//!    DeepSeek-V3's reference adds) when `renormalize`; then every `w_j` times the routed
//!    scaling factor (as `f32`) when it is not 1;
//! 6. capacity ([`RankRouting::from_choices`]): within each `(this rank, expert)` packet tokens
//!    take rows in ascending token order; those past [`MoeConfig::capacity_rows`] are dropped.
//!
//! The paper's router (softmax, no biases, groups or scaling) is steps 1, 2, 4, 5 and 6 with
//! `c = s`.
//!
//! Invariants of a [`RankRouting`] (checked by [`RankRouting::from_choices`] and the property
//! tests): each token's experts are distinct and in range; every `(token, slot)` pair is
//! either kept (row < capacity) or [`DROPPED`], so kept + dropped = `T * k`; the kept tokens
//! of each expert are strictly ascending and row `i` of its packet is its `i`-th token.

use flashdmoe_proto::{HeapLayout, ProtoError, SourcePlan};
use thiserror::Error;

use crate::config::{ConfigError, GroupScore, Groups, MoeConfig, Routing, Scoring};
use crate::parallel::fill_rows;
use crate::weights::{LayerWeights, ShardWeights};

/// Marks a `(token, slot)` pair dropped for capacity in [`RankRouting::rows`].
pub const DROPPED: u32 = u32::MAX;

/// One rank's routing of its tokens.
///
/// Slot `j` of token `t` is index `t * top_k + j`; slots are ordered by descending choice
/// score, ties to the lower expert index.
#[derive(Clone, Debug, PartialEq)]
pub struct RankRouting {
    /// Experts per token k.
    pub top_k: u32,
    /// `[tokens][top_k]` chosen global expert indices.
    pub experts: Vec<u32>,
    /// `[tokens][top_k]` combine weights.
    pub weights: Vec<f32>,
    /// `[tokens][top_k]` row of the slot within its `(this rank, expert)` packet, or
    /// [`DROPPED`].
    pub rows: Vec<u32>,
    /// `[experts]` kept token indices per expert, ascending (row `i` carries the `i`-th).
    pub expert_tokens: Vec<Vec<u32>>,
}

/// Why routing (or turning a routing into a plan) failed.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tensor has the wrong number of elements.
    #[error("{what} has {actual} elements, expected {expected}")]
    Shape {
        /// Which tensor.
        what: &'static str,
        /// Elements expected.
        expected: usize,
        /// Elements found.
        actual: usize,
    },
    /// A token's router logits are not all finite (NaN or infinite input or weights).
    #[error("router logits of token {token} are not finite")]
    NonFinite {
        /// The token.
        token: u32,
    },
    /// A token's expert choice is malformed (out of range or repeated).
    #[error("token {token}: {reason}")]
    BadChoice {
        /// The token.
        token: u32,
        /// What is wrong.
        reason: String,
    },
    /// A routing's derived fields disagree with its own expert choice (see
    /// [`RankRouting::check`]).
    #[error("{what} does not follow from the routing's expert choice")]
    Inconsistent {
        /// The field that disagrees.
        what: &'static str,
    },
    /// The layout does not belong to this config, or the plan is malformed.
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
}

pub(crate) fn check_len(
    what: &'static str,
    v: &[f32],
    expected: usize,
) -> Result<(), RoutingError> {
    if v.len() == expected {
        Ok(())
    } else {
        Err(RoutingError::Shape { what, expected, actual: v.len() })
    }
}

/// The router's tensors: its weight `[E][H]` and the biases the config's [`Routing`] reads.
/// Built from a [`LayerWeights`] or a [`ShardWeights`], or from a bare weight for the paper's
/// router.
#[derive(Clone, Copy, Debug)]
pub struct Router<'a> {
    /// `[experts][hidden]`.
    pub weight: &'a [f32],
    /// `[experts]` added to the logits ([`Routing::router_bias`]).
    pub bias: Option<&'a [f32]>,
    /// `[experts]` added to the scores for the choice ([`Routing::selection_bias`]).
    pub selection_bias: Option<&'a [f32]>,
}

impl<'a> From<&'a [f32]> for Router<'a> {
    fn from(weight: &'a [f32]) -> Self {
        Router { weight, bias: None, selection_bias: None }
    }
}

impl<'a> From<&'a Vec<f32>> for Router<'a> {
    fn from(weight: &'a Vec<f32>) -> Self {
        Router::from(&weight[..])
    }
}

impl<'a, const N: usize> From<&'a [f32; N]> for Router<'a> {
    fn from(weight: &'a [f32; N]) -> Self {
        Router::from(&weight[..])
    }
}

impl<'a> From<&'a LayerWeights> for Router<'a> {
    fn from(w: &'a LayerWeights) -> Self {
        Router {
            weight: &w.router,
            bias: w.router_bias.as_deref(),
            selection_bias: w.selection_bias.as_deref(),
        }
    }
}

impl<'a> From<&'a ShardWeights> for Router<'a> {
    /// A shard's router: every shard holds the whole router.
    fn from(w: &'a ShardWeights) -> Self {
        Router { weight: w.router(), bias: w.router_bias(), selection_bias: w.selection_bias() }
    }
}

impl Router<'_> {
    /// Every tensor has the length the config needs (a bias the routing does not read is an
    /// error too).
    fn check(&self, config: &MoeConfig) -> Result<(), RoutingError> {
        let (e, h) = (config.experts as usize, config.hidden as usize);
        check_len("router weights", self.weight, e * h)?;
        let r = &config.routing;
        for (what, v, needed) in [
            ("router bias", self.bias, r.router_bias),
            ("router selection bias", self.selection_bias, r.selection_bias),
        ] {
            check_len(what, v.unwrap_or_default(), if needed { e } else { 0 })?;
        }
        Ok(())
    }
}

/// The router's scores of one rank's tokens (steps 1-3 of the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct RouterScores {
    experts: usize,
    /// `[tokens][experts]` scores `s` (probabilities, sigmoids, or logits for top-k softmax).
    scores: Vec<f32>,
    /// `[tokens][experts]` choice scores `c`, empty when they equal the scores (no selection
    /// bias, no groups).
    choice: Vec<f32>,
}

impl RouterScores {
    /// Token `t`'s scores `s` (step 2): what the combine weights come from.
    pub fn scores(&self, t: usize) -> &[f32] {
        &self.scores[t * self.experts..][..self.experts]
    }

    /// Token `t`'s choice scores `c` (step 3): what top-k ranks.
    pub fn choice(&self, t: usize) -> &[f32] {
        let c = if self.choice.is_empty() { &self.scores } else { &self.choice };
        &c[t * self.experts..][..self.experts]
    }

    /// Tokens scored.
    pub fn tokens(&self) -> usize {
        self.scores.len().checked_div(self.experts).unwrap_or(0)
    }
}

/// Scores and choice scores of one rank's `input` (`[tokens_per_rank][hidden]`) under `router`:
/// steps 1-3 of the module doc. Validates the config.
pub fn router_scores<'a>(
    config: &MoeConfig,
    input: &[f32],
    router: impl Into<Router<'a>>,
) -> Result<RouterScores, RoutingError> {
    let router = router.into();
    config.validate()?;
    router.check(config)?;
    let (t, h, e) =
        (config.tokens_per_rank as usize, config.hidden as usize, config.experts as usize);
    check_len("input", input, t * h)?;
    let r = &config.routing;
    let mut scores = vec![0.0f32; t * e];
    fill_rows(&mut scores, e, e * h, |first, block| {
        for (i, s) in block.chunks_exact_mut(e).enumerate() {
            let x = &input[(first + i) * h..][..h];
            for (n, (se, w)) in s.iter_mut().zip(router.weight.chunks_exact(h)).enumerate() {
                let dot = x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
                *se = (dot + router.bias.map_or(0.0, |b| b[n] as f64)) as f32;
            }
            score_in_place(r.scoring, s);
        }
    });
    let choice = if r.selection_bias || r.groups.is_some() {
        let mut c = scores.clone();
        for row in c.chunks_exact_mut(e) {
            if let Some(bias) = router.selection_bias {
                row.iter_mut().zip(bias).for_each(|(c, &b)| *c += b);
            }
            if let Some(g) = r.groups {
                mask_groups(g, row);
            }
        }
        c
    } else {
        Vec::new()
    };
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    let bad = (0..t).find(|&tok| {
        !finite(&scores[tok * e..][..e]) || !choice.is_empty() && !finite(&choice[tok * e..][..e])
    });
    match bad {
        Some(token) => Err(RoutingError::NonFinite { token: token as u32 }),
        None => Ok(RouterScores { experts: e, scores, choice }),
    }
}

/// Step 2 of the module doc on one token's logits, in place.
fn score_in_place(scoring: Scoring, logits: &mut [f32]) {
    match scoring {
        Scoring::Softmax => softmax_in_place(logits),
        Scoring::Sigmoid => logits.iter_mut().for_each(|l| *l = sigmoid(*l)),
        Scoring::TopKSoftmax => {}
    }
}

/// `1 / (1 + exp(-x))` in `f32`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Softmax of `logits` in place, in `f32`, in the exact order of the module doc.
fn softmax_in_place(logits: &mut [f32]) {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    logits.iter_mut().for_each(|l| *l = (*l - m).exp());
    let s: f32 = logits.iter().sum();
    logits.iter_mut().for_each(|z| *z /= s);
}

/// Grouped top-k's mask (step 3 of the module doc) on one token's choice scores, in place:
/// experts outside the `keep` best groups get 0.0.
pub fn mask_groups(groups: Groups, choice: &mut [f32]) {
    let per = choice.len() / groups.count as usize;
    let kept = top_k(&group_scores(groups, choice), groups.keep as usize);
    for (i, g) in choice.chunks_exact_mut(per).enumerate() {
        if !kept.contains(&(i as u32)) {
            g.fill(0.0);
        }
    }
}

/// Each group's score (step 3 of the module doc) from one token's unmasked choice scores: its
/// best, or its two best added (largest first).
pub fn group_scores(groups: Groups, choice: &[f32]) -> Vec<f32> {
    let per = choice.len() / groups.count as usize;
    choice
        .chunks_exact(per)
        .map(|g| match groups.score {
            GroupScore::Max => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            GroupScore::Top2Sum => {
                let best = top_k(g, 2);
                g[best[0] as usize] + g[best[1] as usize]
            }
        })
        .collect()
}

/// The `k` experts of one token's (choice) scores, by descending score, ties to the lower
/// index. Scores must be finite.
pub fn top_k(scores: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    idx.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Combine weights of one token's `chosen` experts (slot order) from its scores `s` (`[E]`):
/// step 5 of the module doc.
pub fn combine_weights(config: &MoeConfig, scores: &[f32], chosen: &[u32]) -> Vec<f32> {
    let r: &Routing = &config.routing;
    let p: Vec<f32> = chosen.iter().map(|&e| scores[e as usize]).collect();
    let mut w = if r.scoring == Scoring::TopKSoftmax {
        let mut z = p;
        softmax_in_place(&mut z);
        z
    } else if config.renormalize {
        let mut sum: f32 = p.iter().sum();
        if r.scoring == Scoring::Sigmoid {
            sum += 1e-20;
        }
        p.iter().map(|&v| v / sum).collect()
    } else {
        p
    };
    if r.scaling != 1.0 {
        let scale = r.scaling as f32;
        w.iter_mut().for_each(|v| *v *= scale);
    }
    w
}

/// Routes one rank's `input` (`[tokens_per_rank][hidden]`) with `router` (a
/// [`LayerWeights`], or the bare `[experts][hidden]` weight of a router without biases): the
/// reference router of the module doc.
pub fn route<'a>(
    config: &MoeConfig,
    input: &[f32],
    router: impl Into<Router<'a>>,
) -> Result<RankRouting, RoutingError> {
    let scores = router_scores(config, input, router)?;
    let k = config.top_k as usize;
    let mut experts = Vec::with_capacity(config.tokens_per_rank as usize * k);
    let mut weights = Vec::with_capacity(experts.capacity());
    for t in 0..scores.tokens() {
        let chosen = top_k(scores.choice(t), k);
        weights.extend(combine_weights(config, scores.scores(t), &chosen));
        experts.extend(chosen);
    }
    RankRouting::from_choices(config, experts, weights)
}

impl RankRouting {
    /// Builds the routing of one rank from each token's chosen experts and weights
    /// (`[tokens_per_rank][top_k]`, slot order), assigning packet rows and capacity drops
    /// (step 5 of the module doc). Errors for an invalid config, wrong lengths, an expert out of
    /// range or chosen twice by one token.
    pub fn from_choices(
        config: &MoeConfig,
        experts: Vec<u32>,
        weights: Vec<f32>,
    ) -> Result<RankRouting, RoutingError> {
        config.validate()?;
        let (k, ne) = (config.top_k as usize, config.experts);
        let pairs = config.tokens_per_rank as usize * k;
        if experts.len() != pairs {
            return Err(RoutingError::Shape {
                what: "experts",
                expected: pairs,
                actual: experts.len(),
            });
        }
        check_len("weights", &weights, pairs)?;
        let capacity = config.capacity_rows() as usize;
        let mut expert_tokens = vec![Vec::new(); ne as usize];
        let mut rows = vec![DROPPED; pairs];
        for (t, chosen) in experts.chunks_exact(k).enumerate() {
            for (j, &x) in chosen.iter().enumerate() {
                let token = t as u32;
                if x >= ne {
                    let reason = format!("slot {j} chooses expert {x}, but there are {ne}");
                    return Err(RoutingError::BadChoice { token, reason });
                }
                if chosen[..j].contains(&x) {
                    let reason = format!("expert {x} is chosen twice");
                    return Err(RoutingError::BadChoice { token, reason });
                }
                let w = weights[t * k + j];
                if !w.is_finite() {
                    let reason = format!("slot {j} has the non-finite combine weight {w}");
                    return Err(RoutingError::BadChoice { token, reason });
                }
                let list = &mut expert_tokens[x as usize];
                if list.len() < capacity {
                    rows[t * k + j] = list.len() as u32;
                    list.push(token);
                }
            }
        }
        Ok(RankRouting { top_k: config.top_k, experts, weights, rows, expert_tokens })
    }

    /// Checks that this routing is what [`RankRouting::from_choices`] makes of its own expert
    /// choice and weights for `config`: the check a backend runs on a routing it is given
    /// ([`crate::Layer::forward_rank_routed`]), so a hand-built routing with inconsistent rows
    /// or token lists is an error rather than a wrong forward.
    pub fn check(&self, config: &MoeConfig) -> Result<(), RoutingError> {
        let expected =
            RankRouting::from_choices(config, self.experts.clone(), self.weights.clone())?;
        let fields = [
            ("routing.top_k", self.top_k == expected.top_k),
            ("routing.rows", self.rows == expected.rows),
            ("routing.expert_tokens", self.expert_tokens == expected.expert_tokens),
        ];
        match fields.iter().find(|(_, same)| !same) {
            None => Ok(()),
            Some(&(what, _)) => Err(RoutingError::Inconsistent { what }),
        }
    }

    /// Number of tokens routed.
    pub fn tokens(&self) -> u32 {
        (self.experts.len() / (self.top_k as usize).max(1)) as u32
    }

    /// `(token, slot)` pairs dropped for capacity.
    pub fn dropped(&self) -> u64 {
        self.rows.iter().filter(|&&r| r == DROPPED).count() as u64
    }

    /// This rank's packets as the protocol sees them, for `layout` (which must be the layout of
    /// `config`'s geometry): packet `(owner, local expert)` carries the kept tokens of the
    /// expert placed there; slots of a rank beyond its own experts are empty.
    pub fn source_plan(
        &self,
        config: &MoeConfig,
        layout: &HeapLayout,
    ) -> Result<SourcePlan, RoutingError> {
        let g = layout.geometry();
        let map = config.expert_map()?;
        let matches = [
            ("world", g.world, config.world),
            ("tokens", g.tokens, config.tokens_per_rank),
            ("capacity", g.capacity, config.capacity_rows()),
            ("local_experts", g.local_experts, map.local_experts()),
        ];
        if let Some(&(field, found, expected)) = matches.iter().find(|(_, a, b)| a != b) {
            let (expected, found) = (expected as u64, found as u64);
            return Err(ProtoError::Inconsistent { field, expected, found }.into());
        }
        if self.expert_tokens.len() != config.experts as usize {
            return Err(RoutingError::Shape {
                what: "expert_tokens",
                expected: config.experts as usize,
                actual: self.expert_tokens.len(),
            });
        }
        // Each kept (token, slot)'s weight at its row of its expert's packet.
        let mut expert_weights: Vec<Vec<f32>> =
            self.expert_tokens.iter().map(|t| vec![0.0; t.len()]).collect();
        for (slot, &row) in self.rows.iter().enumerate() {
            if row == DROPPED {
                continue;
            }
            let e = self.experts[slot] as usize;
            match expert_weights.get_mut(e).and_then(|w| w.get_mut(row as usize)) {
                Some(w) => *w = self.weights[slot],
                None => return Err(RoutingError::Inconsistent { what: "rows" }),
            }
        }
        let (mut packets, mut weights) = (Vec::new(), Vec::new());
        for owner in 0..g.world {
            for local in 0..g.local_experts {
                match map.global(owner, local) {
                    Some(e) => {
                        packets.push(self.expert_tokens[e as usize].clone());
                        weights.push(expert_weights[e as usize].clone());
                    }
                    None => {
                        packets.push(Vec::new());
                        weights.push(Vec::new());
                    }
                }
            }
        }
        Ok(SourcePlan::new(layout, packets)?.with_weights(weights)?)
    }
}

#[cfg(test)]
mod tests {
    use flashdmoe_proto::TileShape;
    use proptest::prelude::*;

    use super::*;
    use crate::config::{CapacityPolicy, Placement};

    /// A config with H = 64 whose router is "one-hot": expert e's weight row is `s_e` in
    /// column e, so logit e of a token is `x[e] * s_e`.
    fn cfg(tokens: u32, experts: u32, top_k: u32, capacity: CapacityPolicy) -> MoeConfig {
        MoeConfig {
            world: 1,
            tokens_per_rank: tokens,
            hidden: 64,
            inter: 64,
            experts,
            top_k,
            capacity,
            ..MoeConfig::default()
        }
    }

    fn one_hot_router(experts: u32) -> Vec<f32> {
        let mut r = vec![0.0; experts as usize * 64];
        (0..experts as usize).for_each(|e| r[e * 64 + e] = 1.0);
        r
    }

    fn input(rows: &[&[f32]]) -> Vec<f32> {
        rows.iter()
            .flat_map(|r| {
                let mut v = r.to_vec();
                v.resize(64, 0.0);
                v
            })
            .collect()
    }

    #[test]
    fn hand_computed_routing_with_ties_and_renormalisation() {
        let c = cfg(2, 4, 2, CapacityPolicy::Dropless);
        // Token 0: logits [0, ln 3, 0, ln 3]: a tie between experts 1 and 3 (lower first), and
        // probabilities 3/8 each. Token 1: all equal -> experts 0, 1 (ties to lower index).
        let ln3 = 3.0f32.ln();
        let x = input(&[&[0.0, ln3, 0.0, ln3], &[1.0, 1.0, 1.0, 1.0]]);
        let r = route(&c, &x, &one_hot_router(4)).unwrap();
        assert_eq!(r.experts, vec![1, 3, 0, 1]);
        assert_eq!(r.weights, vec![0.5, 0.5, 0.5, 0.5]);
        assert_eq!(r.rows, vec![0, 0, 0, 1]);
        assert_eq!(r.expert_tokens, vec![vec![1], vec![0, 1], vec![], vec![0]]);

        // Without renormalisation the weights are the raw probabilities.
        let raw = route(&MoeConfig { renormalize: false, ..c }, &x, &one_hot_router(4)).unwrap();
        assert!((raw.weights[0] - 0.375).abs() < 1e-7 && raw.weights[2] == 0.25);
    }

    #[test]
    fn hand_computed_capacity_drops_keep_lowest_tokens() {
        // T = 4, k = 1, E = 2, factor 1: capacity ceil(4 * 1 / 2) = 2. All tokens prefer
        // expert 0: tokens 0, 1 kept, 2, 3 dropped.
        let c = cfg(4, 2, 1, CapacityPolicy::Factor(1.0));
        let x = input(&[&[1.0], &[2.0], &[3.0], &[4.0]]);
        let r = route(&c, &x, &one_hot_router(2)).unwrap();
        assert_eq!(r.experts, vec![0; 4]);
        assert_eq!(r.rows, vec![0, 1, DROPPED, DROPPED]);
        assert_eq!(r.expert_tokens, vec![vec![0, 1], vec![]]);
        assert_eq!(r.dropped(), 2);
        // k = 1 renormalised weights are exactly 1.
        assert_eq!(r.weights, vec![1.0; 4]);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let c = cfg(2, 4, 2, CapacityPolicy::Dropless);
        let x = vec![0.0; 128];
        assert!(matches!(
            route(&c, &x[..100], &one_hot_router(4)),
            Err(RoutingError::Shape { what: "input", expected: 128, actual: 100 })
        ));
        assert!(matches!(route(&c, &x, &[0.0; 3]), Err(RoutingError::Shape { .. })));
        let mut nan = x.clone();
        nan[64] = f32::NAN;
        assert_eq!(route(&c, &nan, &one_hot_router(4)), Err(RoutingError::NonFinite { token: 1 }));
        let bad = MoeConfig { top_k: 5, ..c.clone() };
        assert!(matches!(route(&bad, &x, &one_hot_router(4)), Err(RoutingError::Config(_))));
        let no_experts = MoeConfig { experts: 0, ..c.clone() };
        assert!(matches!(router_scores(&no_experts, &x, &[]), Err(RoutingError::Config(_))));
        assert!(matches!(
            RankRouting::from_choices(&no_experts, vec![], vec![]),
            Err(RoutingError::Config(_))
        ));
        assert!(matches!(
            RankRouting::from_choices(&c, vec![0, 0, 1, 2], vec![0.5; 4]),
            Err(RoutingError::BadChoice { token: 0, .. })
        ));
        assert!(matches!(
            RankRouting::from_choices(&c, vec![0, 4, 1, 2], vec![0.5; 4]),
            Err(RoutingError::BadChoice { token: 0, .. })
        ));
    }

    #[test]
    fn given_routing_is_checked() {
        let c = cfg(2, 4, 2, CapacityPolicy::Factor(0.5));
        let nan = RankRouting::from_choices(&c, vec![0, 1, 2, 3], vec![0.5, f32::NAN, 1.0, 0.0]);
        assert!(matches!(nan, Err(RoutingError::BadChoice { token: 0, .. })), "{nan:?}");
        // Capacity ceil(0.5 * 2 * 2 / 4) = 1: token 1's expert 0 is dropped.
        let r = RankRouting::from_choices(&c, vec![0, 1, 0, 3], vec![0.5; 4]).unwrap();
        assert_eq!(r.rows, vec![0, 0, DROPPED, 0]);
        r.check(&c).unwrap();
        let mut bad = r.clone();
        bad.rows[2] = 1;
        assert_eq!(bad.check(&c), Err(RoutingError::Inconsistent { what: "routing.rows" }));
        let mut bad = r.clone();
        bad.expert_tokens[0].push(1);
        let e = bad.check(&c);
        assert_eq!(e, Err(RoutingError::Inconsistent { what: "routing.expert_tokens" }));
        let mut short = r.clone();
        short.weights.pop();
        assert!(matches!(short.check(&c), Err(RoutingError::Shape { what: "weights", .. })));
    }

    #[test]
    fn source_plan_places_packets_by_owner() {
        // E = 3 over P = 2 with table [1, 0, 1]: rank 0 owns {1}, rank 1 owns {0, 2}.
        let c = MoeConfig {
            world: 2,
            placement: Placement::Table(vec![1, 0, 1]),
            ..cfg(3, 3, 1, CapacityPolicy::Dropless)
        };
        let r = RankRouting::from_choices(&c, vec![2, 1, 2], vec![1.0; 3]).unwrap();
        let layout = HeapLayout::new(c.geometry(TileShape::new(16, 32, 32)).unwrap()).unwrap();
        let plan = r.source_plan(&c, &layout).unwrap();
        assert_eq!(plan.packet(0, 0), &[1]);
        assert_eq!(plan.packet(0, 1), &[] as &[u32]);
        assert_eq!(plan.packet(1, 0), &[] as &[u32]);
        assert_eq!(plan.packet(1, 1), &[0, 2]);
        // A layout of another config is rejected.
        let other = MoeConfig { tokens_per_rank: 4, ..c.clone() };
        let other_layout =
            HeapLayout::new(other.geometry(TileShape::new(16, 32, 32)).unwrap()).unwrap();
        assert!(matches!(r.source_plan(&c, &other_layout), Err(RoutingError::Proto(_))));
    }

    /// A one-hot-router config (module tests' `cfg`) of 8 experts, top-2, with `routing`.
    fn routed(routing: Routing, renormalize: bool) -> MoeConfig {
        MoeConfig { routing, renormalize, ..cfg(2, 8, 2, CapacityPolicy::Dropless) }
    }

    fn close(got: &[f32], want: &[f64]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(&g, &w)| (g as f64 - w).abs() < 1e-6)
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn deepseek_v3_routing_by_hand() {
        // 4 groups of 2, keep 2, scaling 2.5, renormalised. Token 0: logits
        // [2, -1, 0, 0, 1, 1, 3, -3], selection bias +0.5 on experts 2 and 3. Choice scores
        // [.881, .269, 1, 1, .731, .731, .953, .047]: group sums 1.150, 2, 1.462, 1.0 keep
        // groups 1 and 2; the best experts overall (6, then 0) are in dropped groups. Top-2 of
        // the kept: 2 and 3 (a tie, lower first), weighted by their unbiased scores 0.5 and
        // 0.5: 0.5 / 1 * 2.5 each.
        let c = routed(Routing::deepseek_v3(Some((4, 2)), 2.5), true);
        let x = input(&[&[2.0, -1.0, 0.0, 0.0, 1.0, 1.0, 3.0, -3.0], &[0.0; 8]]);
        let bias = [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0];
        let w = one_hot_router(8);
        let router = Router { weight: &w, bias: None, selection_bias: Some(&bias) };
        let r = route(&c, &x, router).unwrap();
        assert_eq!(&r.experts[..2], &[2, 3]);
        assert!(close(&r.weights[..2], &[1.25, 1.25]), "{:?}", r.weights);
        // Token 1: all scores 0.5; the bias lifts group 1 to 2.0 and ties keep group 0 beside
        // it; experts 2 and 3 (biased to 1.0) win.
        assert_eq!(&r.experts[2..], &[2, 3]);
        // Without renormalisation the weights are the unbiased sigmoids, scaled.
        let raw = routed(Routing::deepseek_v3(Some((4, 2)), 2.5), false);
        let r = route(&raw, &x, router).unwrap();
        assert!(close(&r.weights[..2], &[1.25, 1.25]), "{:?}", r.weights);
        // Another choice: bias +0.5 on expert 4 only. Choice [.881, .269, .5, .5, 1.231, .731,
        // .953, .047]: groups 1.150, 1.0, 1.962, 1.0 keep 2 and 0: top-2 experts 4 and 0, weights
        // sig(1) / (sig(1) + sig(2)) * 2.5 and sig(2) / (...) * 2.5.
        let bias4 = [0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0];
        let router = Router { weight: &w, bias: None, selection_bias: Some(&bias4) };
        let r = route(&c, &x, router).unwrap();
        assert_eq!(&r.experts[..2], &[4, 0]);
        let (s1, s2) = (sig(1.0), sig(2.0));
        assert!(close(&r.weights[..2], &[2.5 * s1 / (s1 + s2), 2.5 * s2 / (s1 + s2)]));
    }

    #[test]
    fn grouped_top_k_masks_dropped_groups_with_zero_as_the_reference_does() {
        // All logits 0 (scores 0.5), selection bias -1: every choice score is -0.5, every
        // group's top-two sum -1.0, groups 0 and 1 are kept (ties to the lower), and the
        // dropped groups' experts get 0.0 > -0.5: transformers' masked_fill(..., 0.0) chooses
        // experts 4 and 5 of a dropped group. Ours does the same.
        let c = routed(Routing::deepseek_v3(Some((4, 2)), 1.0), true);
        let x = input(&[&[0.0; 8], &[0.0; 8]]);
        let bias = [-1.0f32; 8];
        let w = one_hot_router(8);
        let router = Router { weight: &w, bias: None, selection_bias: Some(&bias) };
        let r = route(&c, &x, router).unwrap();
        assert_eq!(&r.experts[..2], &[4, 5]);
        assert!(close(&r.weights[..2], &[0.5, 0.5]));
        // The mask by itself.
        let mut choice = [-0.5f32; 8];
        mask_groups(Groups { count: 4, keep: 2, score: GroupScore::Top2Sum }, &mut choice);
        assert_eq!(choice, [-0.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn deepseek_v2_group_limited_greedy_by_hand() {
        // Softmax scores, 4 groups of 2 ranked by their best, keep 1, scaling 16, no
        // renormalisation. Logits [0, 3, 2.9, 2.9, 0, 0, 1, 0]: group 0's best (3) wins though
        // group 1 has the larger sum; top-2 within it: experts 1, 0.
        let routing = Routing {
            groups: Some(Groups { count: 4, keep: 1, score: GroupScore::Max }),
            scaling: 16.0,
            ..Routing::SOFTMAX
        };
        let c = routed(routing, false);
        let l = [0.0, 3.0, 2.9, 2.9, 0.0, 0.0, 1.0, 0.0f64];
        let x = input(&[&l.map(|v| v as f32), &[0.0; 8]]);
        let r = route(&c, &x, &one_hot_router(8)).unwrap();
        assert_eq!(&r.experts[..2], &[1, 0]);
        let z: f64 = l.iter().map(|&v| (v - 3.0).exp()).sum();
        let p = |v: f64| (v - 3.0).exp() / z;
        assert!(close(&r.weights[..2], &[16.0 * p(3.0), 16.0 * p(0.0)]), "{:?}", r.weights);
    }

    #[test]
    fn gpt_oss_routing_by_hand() {
        // Logits [1, 3, 2, 0] + router bias [0, 0, 2, 0] = [1, 3, 4, 0]: top-2 on the logits
        // is experts 2, 1, weighted by a softmax over the two: e / (e + 1), 1 / (e + 1).
        let c = MoeConfig { routing: Routing::GPT_OSS, ..cfg(1, 4, 2, CapacityPolicy::Dropless) };
        let x = input(&[&[1.0, 3.0, 2.0, 0.0]]);
        let w = one_hot_router(4);
        let bias = [0.0, 0.0, 2.0, 0.0];
        let r =
            route(&c, &x, Router { weight: &w, bias: Some(&bias), selection_bias: None }).unwrap();
        assert_eq!(r.experts, vec![2, 1]);
        let e = std::f64::consts::E;
        assert!(close(&r.weights, &[e / (e + 1.0), 1.0 / (e + 1.0)]), "{:?}", r.weights);
        // The same weights as the softmax over all four renormalised over the chosen.
        let soft =
            route(&cfg(1, 4, 2, CapacityPolicy::Dropless), &input(&[&[1.0, 3.0, 4.0, 0.0]]), &w)
                .unwrap();
        assert_eq!(soft.experts, r.experts);
        assert!(close(&soft.weights, &[e / (e + 1.0), 1.0 / (e + 1.0)]));
        // The router's tensors must be the ones the routing reads.
        assert!(matches!(
            route(&c, &x, &w),
            Err(RoutingError::Shape { what: "router bias", expected: 4, actual: 0 })
        ));
        let plain = cfg(1, 4, 2, CapacityPolicy::Dropless);
        let router = Router { weight: &w, bias: Some(&bias), selection_bias: None };
        assert!(matches!(
            route(&plain, &x, router),
            Err(RoutingError::Shape { what: "router bias", expected: 0, actual: 4 })
        ));
    }

    #[test]
    fn sigmoid_scores_without_groups_by_hand() {
        // Kimi-K2's router (one group): sigmoid, selection bias, renormalise, scale 2.827.
        let c = routed(Routing::deepseek_v3(None, 2.827), true);
        let x = input(&[&[0.0, 1.0, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0], &[0.0; 8]]);
        let bias = [0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let w = one_hot_router(8);
        let r =
            route(&c, &x, Router { weight: &w, bias: None, selection_bias: Some(&bias) }).unwrap();
        // Choice: expert 2 (sig(-1) + 3), then 3 (sig(2)).
        assert_eq!(&r.experts[..2], &[2, 3]);
        let (a, b) = (sig(-1.0), sig(2.0));
        assert!(close(&r.weights[..2], &[2.827 * a / (a + b), 2.827 * b / (a + b)]));
        assert_eq!(sigmoid(0.0), 0.5);
    }

    fn arb_case() -> impl Strategy<Value = (MoeConfig, Vec<f32>, Vec<f32>)> {
        (0u32..40, 1u32..12, any::<bool>(), 0.1f64..2.0, any::<u64>()).prop_flat_map(
            |(t, e, dropless, f, seed)| {
                (1..=e).prop_map(move |k| {
                    let capacity =
                        if dropless { CapacityPolicy::Dropless } else { CapacityPolicy::Factor(f) };
                    let c = cfg(t, e, k, capacity);
                    // Coarse values make exact ties frequent.
                    let coarse = |id, n| {
                        crate::rng::tensor(seed, id, n, 2.0, crate::dtype::DType::F32)
                            .into_iter()
                            .map(|v| v.round())
                            .collect::<Vec<f32>>()
                    };
                    let x = coarse(1000, t as usize * 64);
                    let w = coarse(1, e as usize * 64);
                    (c, x, w)
                })
            },
        )
    }

    proptest! {
        #[test]
        fn routing_invariants((c, x, w) in arb_case()) {
            let r = route(&c, &x, &w).unwrap();
            let (t, k) = (c.tokens_per_rank as usize, c.top_k as usize);
            let cap = c.capacity_rows() as usize;
            // Pairs are conserved: every (token, slot) is kept exactly once or dropped.
            let kept: usize = r.expert_tokens.iter().map(Vec::len).sum();
            prop_assert_eq!(kept as u64 + r.dropped(), (t * k) as u64);
            for (e, list) in r.expert_tokens.iter().enumerate() {
                prop_assert!(list.len() <= cap);
                prop_assert!(list.windows(2).all(|p| p[0] < p[1]));
                for (row, &tok) in list.iter().enumerate() {
                    let slot = (0..k).find(|&j| r.experts[tok as usize * k + j] == e as u32);
                    prop_assert_eq!(slot.map(|j| r.rows[tok as usize * k + j]), Some(row as u32));
                }
            }
            // A dropped pair's expert is full of lower tokens.
            for (i, &row) in r.rows.iter().enumerate() {
                if row == DROPPED {
                    let list = &r.expert_tokens[r.experts[i] as usize];
                    let full_of_lower = list.iter().all(|&tok| (tok as usize) < i / k);
                    prop_assert!(list.len() == cap && full_of_lower);
                }
            }
            // Slots are in descending probability, ties to the lower index.
            let scores = router_scores(&c, &x, &w).unwrap();
            for (tok, chosen) in r.experts.chunks_exact(k).enumerate() {
                let p = scores.choice(tok);
                for pair in chosen.windows(2) {
                    let (a, b) = (pair[0] as usize, pair[1] as usize);
                    prop_assert!(p[a] > p[b] || (p[a] == p[b] && a < b));
                }
                let worst = *chosen.last().unwrap() as usize;
                for (e, &pe) in p.iter().enumerate() {
                    if !chosen.contains(&(e as u32)) {
                        prop_assert!(pe < p[worst] || (pe == p[worst] && e > worst));
                    }
                }
            }
            // Deterministic.
            prop_assert_eq!(route(&c, &x, &w).unwrap(), r);
        }
    }
}
