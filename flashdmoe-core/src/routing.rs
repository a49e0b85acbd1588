//! The router and the per-rank routing plan.
//!
//! [`route`] is the CPU router every backend is checked against. Per token, in `f32` unless
//! said otherwise, following each model's Hugging Face reference ([`Routing`]):
//!
//! 1. logits `l[e] = sum_h x[h] * router[e][h] (+ bias[e])`, accumulated in `f64` in ascending
//!    `h` (the router bias, gpt-oss's, added in `f64`), then rounded to `f32`;
//! 2. scores `s[e]` ([`Scoring`]): softmax over the experts (`m = max_e l`, `z_e = exp(l_e -
//!    m)`, `s_e = z_e / sum` with `sum` as a warp adds it ([`tree_sum`]: 32 lanes each add
//!    `z_l, z_{l+32}, ...` in order, then the lanes halve, `p_l += p_{l+o}` for `o` = 16, 8,
//!    4, 2, 1); or `sigmoid(l_e) = 1 / (1 + exp(-l_e))`; or, for top-k softmax (gpt-oss), the
//!    logits themselves;
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

/// Softmax over the experts of one token's `logits`, in place, in `f32`: step 2 of the module
/// doc, its sum a [`tree_sum`].
fn softmax_in_place(logits: &mut [f32]) {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    logits.iter_mut().for_each(|l| *l = (*l - m).exp());
    let s = tree_sum(logits);
    logits.iter_mut().for_each(|z| *z /= s);
}

/// The sum of a token's exponentials `z` (non-negative) as a warp of 32 lanes adds them, the
/// specification's order (module doc, step 2), which the kernel's thread and warp forms
/// follow bit for bit: lane `l` adds `z_l, z_{l+32}, z_{l+64}, ...` in order into `p_l`, then
/// for `o` = 16, 8, 4, 2, 1 each lane `l < o` adds `p_{l+o}` to its own; the sum is `p_0`. A lane
/// that holds no expert (`l >= z.len()`) adds nothing: its `+0.0` would change no bit of a
/// non-negative partial, so skipping it gives the warp's bits. Its depth is about `E / 32 + 5`
/// additions, where a serial sum's is `E`.
pub fn tree_sum(z: &[f32]) -> f32 {
    let mut p = [0.0f32; 32];
    for (e, &v) in z.iter().enumerate() {
        p[e % 32] += v;
    }
    let lanes = z.len().min(32);
    let mut o = 16;
    while o > 0 {
        for l in 0..o {
            if l + o < lanes {
                p[l] += p[l + o];
            }
        }
        o /= 2;
    }
    p[0]
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
        // The softmax over the chosen k sums in slot order (step 5), not as a tree.
        let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: Vec<f32> = p.iter().map(|&v| (v - m).exp()).collect();
        let sum: f32 = z.iter().sum();
        z.iter().map(|&v| v / sum).collect()
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
mod tests;
