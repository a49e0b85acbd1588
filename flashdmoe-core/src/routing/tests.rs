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
    let r = route(&c, &x, Router { weight: &w, bias: Some(&bias), selection_bias: None }).unwrap();
    assert_eq!(r.experts, vec![2, 1]);
    let e = std::f64::consts::E;
    assert!(close(&r.weights, &[e / (e + 1.0), 1.0 / (e + 1.0)]), "{:?}", r.weights);
    // The same weights as the softmax over all four renormalised over the chosen.
    let soft = route(&cfg(1, 4, 2, CapacityPolicy::Dropless), &input(&[&[1.0, 3.0, 4.0, 0.0]]), &w)
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
    let r = route(&c, &x, Router { weight: &w, bias: None, selection_bias: Some(&bias) }).unwrap();
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

/// What the kernel's warp form (topk.cuh `route_token_warp`) does, lane by lane: each of 32
/// lanes adds its experts' values in order from 0.0, then a butterfly over `__shfl_xor` adds
/// the lanes, a lane with no expert contributing its 0.0.
fn warp_butterfly(z: &[f32]) -> [f32; 32] {
    let mut s = [0.0f32; 32];
    for (e, &v) in z.iter().enumerate() {
        s[e % 32] += v;
    }
    let mut o = 16;
    while o > 0 {
        let before = s;
        for (l, x) in s.iter_mut().enumerate() {
            *x = before[l] + before[l ^ o];
        }
        o /= 2;
    }
    s
}

#[test]
fn the_softmax_sum_is_a_warps_tree_bit_for_bit() {
    // Eight experts: the lanes halve into ((z0 + z4) + (z2 + z6)) + ((z1 + z5) + (z3 + z7)).
    let z: Vec<f32> = (0..8).map(|i| 1.0 + (i as f32) * 1e-3 + 1e-7 / (1 + i) as f32).collect();
    let by_hand = ((z[0] + z[4]) + (z[2] + z[6])) + ((z[1] + z[5]) + (z[3] + z[7]));
    assert_eq!(tree_sum(&z).to_bits(), by_hand.to_bits());
    // Every expert count a router has, values of mixed magnitudes (an exp's range, zeros from
    // underflow included): every lane of the butterfly ends with tree_sum's bits.
    let mut rng = crate::rng::SplitMix64::new(7);
    for e in 1..=300usize {
        let z: Vec<f32> = (0..e)
            .map(|_| {
                let u = rng.next_unit();
                if u < 0.05 { 0.0 } else { (-30.0 * u).exp() }
            })
            .collect();
        let lanes = warp_butterfly(&z);
        let want = tree_sum(&z).to_bits();
        assert!(
            lanes.iter().all(|l| l.to_bits() == want),
            "E = {e}: {lanes:?} vs {}",
            tree_sum(&z)
        );
    }
}
