//! [`check_routing`]: a backend's routing against the CPU router, near ties accepted (module
//! doc of [`super`]).

use super::{ROUTING_TIE_TOLERANCE, WEIGHT_TOLERANCE, check_routing_shape};
use crate::config::{Groups, MoeConfig, Scoring};
use crate::routing::{
    DROPPED, RankRouting, Router, combine_weights, group_scores, router_scores, top_k,
};

/// A backend routing accepted by [`check_routing`].
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedRouting {
    /// The routing to compute the reference with: the backend's expert choice, the CPU's
    /// weights for it, the rows that choice implies.
    pub routing: RankRouting,
    /// Tokens whose choice differs from the CPU's by near ties.
    pub near_ties: u64,
}

/// Compares a backend's routing of one rank's `input` with the CPU router under `router`
/// (module doc). `Err` describes the first disagreement beyond tolerance.
pub fn check_routing<'a>(
    config: &MoeConfig,
    router: impl Into<Router<'a>>,
    input: &[f32],
    backend: &RankRouting,
) -> Result<CheckedRouting, String> {
    let router: Router<'a> = router.into();
    let scores =
        router_scores(config, input, router).map_err(|e| format!("the CPU router failed: {e}"))?;
    check_routing_shape(config, backend).map_err(|e| e.to_string())?;
    let k = config.top_k as usize;
    let r = &config.routing;
    // Probabilities and sigmoids compare relative to the larger; logits and biased scores
    // relative to at least 1.
    let floor = if r.scoring == Scoring::TopKSoftmax || r.selection_bias { 1.0 } else { 0.0 };
    let near =
        |a: f32, b: f32| (a - b).abs() <= ROUTING_TIE_TOLERANCE * a.abs().max(b.abs()).max(floor);
    // Slot by slot, the backend's choice b against the top-k of choice scores p.
    let slots_near = |t: usize, p: &[f32], b: &[u32]| -> Result<(), String> {
        for (j, (&bj, cj)) in b.iter().zip(top_k(p, k)).enumerate() {
            let (pb, pc) = (p[bj as usize], p[cj as usize]);
            if !near(pb, pc) {
                return Err(format!(
                    "token {t} slot {j}: backend chose expert {bj} (score {pb}), the CPU \
                     router expert {cj} (score {pc}); not a near tie (relative tolerance \
                     {ROUTING_TIE_TOLERANCE})"
                ));
            }
        }
        Ok(())
    };
    let mut near_ties = 0;
    let mut weights = Vec::with_capacity(backend.weights.len());
    for (t, b) in backend.experts.chunks_exact(k).enumerate() {
        let p = scores.choice(t);
        if b != top_k(p, k) {
            // With grouped top-k the backend may have kept other groups whose scores tie the
            // CPU's last kept one: its choice is then checked within the groups it kept.
            slots_near(t, p, b).or_else(|e| {
                let regrouped = r.groups.and_then(|g| {
                    let unmasked = unmasked_choice(scores.scores(t), router.selection_bias);
                    regroup(g, &unmasked, b, near)
                });
                regrouped.map_or(Err(e), |p2| slots_near(t, &p2, b))
            })?;
            near_ties += 1;
        }
        let expect = combine_weights(config, scores.scores(t), b);
        let got = &backend.weights[t * k..][..k];
        let off = |j: usize| {
            let d = (got[j] - expect[j]).abs();
            d.is_nan() || d > WEIGHT_TOLERANCE
        };
        if let Some(j) = (0..k).find(|&j| off(j)) {
            return Err(format!(
                "token {t} slot {j} (expert {}): combine weight {} differs from the CPU's {} by \
                 more than {WEIGHT_TOLERANCE}",
                b[j], got[j], expect[j]
            ));
        }
        weights.extend(expect);
    }
    let routing = RankRouting::from_choices(config, backend.experts.clone(), weights)
        .map_err(|e| e.to_string())?;
    if routing.rows != backend.rows || routing.expert_tokens != backend.expert_tokens {
        let slot = (0..routing.rows.len()).find(|&s| routing.rows[s] != backend.rows[s]);
        return Err(match slot {
            Some(s) => format!(
                "token {} slot {}: packet row {} where the capacity rule gives {}",
                s / k,
                s % k,
                show_row(backend.rows[s]),
                show_row(routing.rows[s])
            ),
            None => "per-expert token lists differ from the capacity rule's".to_owned(),
        });
    }
    Ok(CheckedRouting { routing, near_ties })
}

/// One token's choice scores before the group mask: its scores plus the selection bias.
fn unmasked_choice(scores: &[f32], selection_bias: Option<&[f32]>) -> Vec<f32> {
    match selection_bias {
        Some(bias) => scores.iter().zip(bias).map(|(&s, &b)| s + b).collect(),
        None => scores.to_vec(),
    }
}

/// The choice scores masked to the groups a backend's choice `b` implies, when those groups
/// are a top-`keep` set of group scores up to near ties (`near`): the groups `b` draws from,
/// filled up with the best others. `None` when `b` draws from more than `keep` groups or its
/// groups do not tie the CPU's.
fn regroup(
    groups: Groups,
    unmasked: &[f32],
    b: &[u32],
    near: impl Fn(f32, f32) -> bool,
) -> Option<Vec<f32>> {
    let per = unmasked.len() / groups.count as usize;
    let scores = group_scores(groups, unmasked);
    let mut kept: Vec<u32> = b.iter().map(|&e| e / per as u32).collect();
    kept.sort_unstable();
    kept.dedup();
    if kept.len() > groups.keep as usize {
        return None;
    }
    for g in top_k(&scores, scores.len()) {
        if kept.len() == groups.keep as usize {
            break;
        }
        if !kept.contains(&g) {
            kept.push(g);
        }
    }
    let score = |g: &u32| scores[*g as usize];
    let weakest_kept = kept.iter().map(score).fold(f32::INFINITY, f32::min);
    let best_dropped = (0..groups.count)
        .filter(|g| !kept.contains(g))
        .map(|g| scores[g as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    if weakest_kept < best_dropped && !near(weakest_kept, best_dropped) {
        return None;
    }
    let mut p = unmasked.to_vec();
    for (g, chunk) in p.chunks_exact_mut(per).enumerate() {
        if !kept.contains(&(g as u32)) {
            chunk.fill(0.0);
        }
    }
    Some(p)
}

fn show_row(row: u32) -> String {
    if row == DROPPED { "dropped".to_owned() } else { row.to_string() }
}
