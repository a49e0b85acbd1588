//! The router and the per-rank routing plan.
//!
//! [`route`] is the CPU router every backend is checked against:
//!
//! 1. logits `l[t][e] = sum_h x[t][h] * router[e][h]`, accumulated in `f64` in ascending `h`,
//!    then rounded to `f32`;
//! 2. softmax over the experts in `f32`: `m = max_e l`, `z_e = exp(l_e - m)`,
//!    `s = z_0 + z_1 + ...` (ascending `e`), `p_e = z_e / s`;
//! 3. top-k by descending probability, ties to the lower expert index; slot `j` holds the
//!    `j`-th largest;
//! 4. combine weights `w_j = p_j / (p_0 + ... + p_{k-1})` (sum in slot order, `f32`) when
//!    `renormalize`, else `w_j = p_j`;
//! 5. capacity ([`RankRouting::from_choices`]): within each `(this rank, expert)` packet tokens
//!    take rows in ascending token order; those past [`MoeConfig::capacity_rows`] are dropped.
//!
//! Invariants of a [`RankRouting`] (checked by [`RankRouting::from_choices`] and the property
//! tests): each token's experts are distinct and in range; every `(token, slot)` pair is
//! either kept (row < capacity) or [`DROPPED`], so kept + dropped = `T * k`; the kept tokens
//! of each expert are strictly ascending and row `i` of its packet is its `i`-th token.

use flashdmoe_proto::{HeapLayout, ProtoError, SourcePlan};
use thiserror::Error;

use crate::config::{ConfigError, MoeConfig};
use crate::parallel::fill_rows;

/// Marks a `(token, slot)` pair dropped for capacity in [`RankRouting::rows`].
pub const DROPPED: u32 = u32::MAX;

/// One rank's routing of its tokens.
///
/// Slot `j` of token `t` is index `t * top_k + j`; slots are ordered by descending router
/// probability, ties to the lower expert index.
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

/// Router probabilities `[tokens][experts]` of one rank's `input` (`[tokens_per_rank][hidden]`)
/// under `router` (`[experts][hidden]`): steps 1-2 of the module doc. Validates the config.
pub fn router_probabilities(
    config: &MoeConfig,
    input: &[f32],
    router: &[f32],
) -> Result<Vec<f32>, RoutingError> {
    config.validate()?;
    let (t, h, e) =
        (config.tokens_per_rank as usize, config.hidden as usize, config.experts as usize);
    check_len("input", input, t * h)?;
    check_len("router weights", router, e * h)?;
    let mut probs = vec![0.0f32; t * e];
    fill_rows(&mut probs, e, e * h, |first, block| {
        for (i, p) in block.chunks_exact_mut(e).enumerate() {
            let x = &input[(first + i) * h..][..h];
            for (pe, w) in p.iter_mut().zip(router.chunks_exact(h)) {
                *pe = x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
            }
            softmax_in_place(p);
        }
    });
    match probs.chunks_exact(e).position(|p| !p.iter().all(|v| v.is_finite())) {
        Some(token) => Err(RoutingError::NonFinite { token: token as u32 }),
        None => Ok(probs),
    }
}

/// Softmax of `logits` in place, in `f32`, in the exact order of the module doc.
fn softmax_in_place(logits: &mut [f32]) {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    logits.iter_mut().for_each(|l| *l = (*l - m).exp());
    let s: f32 = logits.iter().sum();
    logits.iter_mut().for_each(|z| *z /= s);
}

/// The `k` experts of one token's probabilities, by descending probability, ties to the lower
/// index. Probabilities must be finite.
pub fn top_k(probs: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..probs.len() as u32).collect();
    idx.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Combine weights of the chosen experts' probabilities `p` (slot order): step 4 of the
/// module doc.
pub fn combine_weights(p: &[f32], renormalize: bool) -> Vec<f32> {
    if renormalize {
        let s: f32 = p.iter().sum();
        p.iter().map(|&v| v / s).collect()
    } else {
        p.to_vec()
    }
}

/// Routes one rank's `input` (`[tokens_per_rank][hidden]`) with `router` weights
/// (`[experts][hidden]`): the reference router of the module doc.
pub fn route(
    config: &MoeConfig,
    input: &[f32],
    router: &[f32],
) -> Result<RankRouting, RoutingError> {
    let probs = router_probabilities(config, input, router)?;
    let (e, k) = (config.experts as usize, config.top_k as usize);
    let mut experts = Vec::with_capacity(config.tokens_per_rank as usize * k);
    let mut weights = Vec::with_capacity(experts.capacity());
    for p in probs.chunks_exact(e) {
        let chosen = top_k(p, k);
        let chosen_p: Vec<f32> = chosen.iter().map(|&x| p[x as usize]).collect();
        weights.extend(combine_weights(&chosen_p, config.renormalize));
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
        let packets = (0..g.world)
            .flat_map(|owner| (0..g.local_experts).map(move |local| (owner, local)))
            .map(|(owner, local)| match map.global(owner, local) {
                Some(e) => self.expert_tokens[e as usize].clone(),
                None => Vec::new(),
            })
            .collect();
        Ok(SourcePlan::new(layout, packets)?)
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
        assert!(matches!(router_probabilities(&no_experts, &x, &[]), Err(RoutingError::Config(_))));
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
        let layout =
            HeapLayout::new(c.geometry(TileShape { bm: 16, bn: 32, bk: 32 }).unwrap()).unwrap();
        let plan = r.source_plan(&c, &layout).unwrap();
        assert_eq!(plan.packet(0, 0), &[1]);
        assert_eq!(plan.packet(0, 1), &[] as &[u32]);
        assert_eq!(plan.packet(1, 0), &[] as &[u32]);
        assert_eq!(plan.packet(1, 1), &[0, 2]);
        // A layout of another config is rejected.
        let other = MoeConfig { tokens_per_rank: 4, ..c.clone() };
        let other_layout =
            HeapLayout::new(other.geometry(TileShape { bm: 16, bn: 32, bk: 32 }).unwrap()).unwrap();
        assert!(matches!(r.source_plan(&c, &other_layout), Err(RoutingError::Proto(_))));
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
            let probs = router_probabilities(&c, &x, &w).unwrap();
            for (tok, chosen) in r.experts.chunks_exact(k).enumerate() {
                let p = &probs[tok * c.experts as usize..][..c.experts as usize];
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
