use super::verify::sample_tokens;
use super::*;
use crate::backend::{RankOutput, RankStats};
use crate::config::{
    Activation, CapacityPolicy, GroupScore, Groups, Routing, SharedExperts, SharedGate, SwigluOss,
};
use crate::dtype::DType;
use crate::routing::{route, router_scores};
use crate::weights::generate_input;

#[test]
fn every_row_is_checked_only_when_the_rows_and_the_work_are_small() {
    let paper = |t: u32, world: u32| MoeConfig {
        world,
        tokens_per_rank: t,
        hidden: 2048,
        inter: 2048,
        experts: 8,
        top_k: 2,
        activation: Activation::Relu,
        ..MoeConfig::default()
    };
    assert_eq!(Sample::sized_for(&paper(4096, 1), 64), Sample::All);
    // Too many rows.
    let small = MoeConfig { tokens_per_rank: 8192, world: 2, ..MoeConfig::default() };
    assert_eq!(Sample::sized_for(&small, 8), Sample::Rows { per_rank: 8, seed: None });
    // Too much work: the paper layer at T = 8192 on one rank (2^38 multiply-adds).
    assert_eq!(Sample::sized_for(&paper(8192, 1), 64), Sample::Rows { per_rank: 64, seed: None });
    // A real model's layer at T = 4096: DeepSeek-V3's routed experts.
    let v3 = MoeConfig {
        hidden: 7168,
        inter: 2048,
        experts: 256,
        top_k: 8,
        activation: Activation::SiluGated,
        ..paper(4096, 1)
    };
    assert!(matches!(Sample::sized_for(&v3, 64), Sample::Rows { .. }));
}

fn tiny(experts: u32, top_k: u32, activation: Activation, bias: bool) -> MoeConfig {
    MoeConfig {
        world: 1,
        tokens_per_rank: 1,
        hidden: 64,
        inter: 64,
        experts,
        top_k,
        activation,
        bias,
        dtype: DType::F32Exact,
        capacity: CapacityPolicy::Dropless,
        ..MoeConfig::default()
    }
}

fn zeros(c: &MoeConfig) -> LayerWeights {
    LayerWeights::zeros(c)
}

fn row(values: &[f32]) -> Vec<f32> {
    let mut v = values.to_vec();
    v.resize(64, 0.0);
    v
}

#[test]
fn one_token_two_experts_by_hand() {
    // x = [ln 3, 2, 0, ...]; router: logit 0 = x[0] = ln 3, logit 1 = 0 -> p = [3/4, 1/4].
    // Expert 0: h = [relu(x0), relu(-x1)] = [ln 3, 0]; y = [2 h0, 0] = [2 ln 3, 0].
    // Expert 1: h = [x1] = [2]; y = [0, 3 h0] = [0, 6].
    // out = 3/4 [2 ln 3, 0] + 1/4 [0, 6] = [1.5 ln 3, 1.5].
    let c = tiny(2, 2, Activation::Relu, false);
    let mut w = zeros(&c);
    let (h, i) = (64, 64);
    w.router[0] = 1.0;
    w.up[0] = 1.0; // up[0][0][0]
    w.up[h + 1] = -1.0; // up[0][1][1]
    w.down[0] = 2.0; // down[0][0][0]
    w.up[i * h + 1] = 1.0; // up[1][0][1]
    w.down[h * i + i] = 3.0; // down[1][1][0]
    let x = row(&[3f32.ln(), 2.0]);
    let r = route(&c, &x, &w.router).unwrap();
    assert_eq!(r.experts, vec![0, 1]);
    let out = reference_rank(&c, &w, &x, &r).unwrap();
    let want = [1.5 * 3f64.ln(), 1.5];
    for (o, want) in out.iter().zip(want) {
        assert!((*o as f64 - want).abs() < 1e-6, "{o} vs {want}");
    }
    assert!(out[2..].iter().all(|&v| v == 0.0));
}

#[test]
fn swiglu_with_biases_by_hand() {
    // One expert, k = 1 (weight 1). x = [1, 0, ...].
    // u0 = up[0][0] x0 + ub0 = 2 + 0.5; g0 = gate[0][0] x0 + gb0 = 1 + 0 -> h0 = silu(1) 2.5.
    // y0 = down[0][0] h0 + db0 = h0 - 0.25; y1 = db1 = 0.125.
    let c = tiny(1, 1, Activation::SiluGated, true);
    let mut w = zeros(&c);
    w.up[0] = 2.0;
    w.up_bias.as_mut().unwrap()[0] = 0.5;
    w.gate.as_mut().unwrap()[0] = 1.0;
    w.down[0] = 1.0;
    let db = w.down_bias.as_mut().unwrap();
    db[0] = -0.25;
    db[1] = 0.125;
    let x = row(&[1.0]);
    let r = route(&c, &x, &w.router).unwrap();
    let out = reference_rank(&c, &w, &x, &r).unwrap();
    let h0 = 2.5 / (1.0 + (-1f64).exp());
    assert!((out[0] as f64 - (h0 - 0.25)).abs() < 1e-6);
    assert_eq!(out[1], 0.125);
    assert_eq!(out[2], 0.0);
}

#[test]
fn dropped_slots_contribute_nothing() {
    // T = 3, E = 2, k = 1, capacity ceil(0.5 * 3 / 2) = 1: all tokens pick expert 0, only
    // token 0 is kept; tokens 1 and 2 output zeros.
    let c = MoeConfig {
        tokens_per_rank: 3,
        capacity: CapacityPolicy::Factor(0.5),
        ..tiny(2, 1, Activation::Relu, false)
    };
    let mut w = zeros(&c);
    w.router[0] = 1.0;
    w.up[0] = 1.0;
    w.down[0] = 1.0;
    let x: Vec<f32> = [1.0, 2.0, 3.0].iter().flat_map(|&v| row(&[v])).collect();
    let r = route(&c, &x, &w.router).unwrap();
    assert_eq!(r.rows, vec![0, DROPPED, DROPPED]);
    let out = reference_rank(&c, &w, &x, &r).unwrap();
    assert_eq!(out[0], 1.0);
    assert!(out[64..].iter().all(|&v| v == 0.0));
}

#[test]
fn outputs_are_representable_in_the_dtype() {
    let c = MoeConfig { world: 1, tokens_per_rank: 8, ..MoeConfig::default() };
    let w = LayerWeights::generate(&c, 3).unwrap();
    let x = generate_input(&c, 0, 3).unwrap();
    let r = route(&c, &x, &w.router).unwrap();
    let out = reference_rank(&c, &w, &x, &r).unwrap();
    assert!(out.iter().all(|&v| DType::Bf16.is_representable(v)));
    assert!(out.iter().any(|&v| v != 0.0));
    let rows = reference_rows(&c, &w, &x, &r, &[5, 2]).unwrap();
    assert_eq!(&rows[..256], &out[5 * 256..6 * 256]);
    assert_eq!(&rows[256..], &out[2 * 256..3 * 256]);
    assert_eq!(
        reference_rows(&c, &w, &x, &r, &[8]),
        Err(OracleError::Token { token: 8, tokens: 8 })
    );
}

/// An independent forward the way a backend computes it: `f32` accumulation, the same
/// rounding points.
fn f32_backend(c: &MoeConfig, w: &LayerWeights, x: &[f32], r: &RankRouting) -> Vec<f32> {
    let (h, i, k) = (c.hidden as usize, c.inter as usize, c.top_k as usize);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f32>();
    let mut out = vec![0.0; c.tokens_per_rank as usize * h];
    for t in 0..c.tokens_per_rank as usize {
        let xt = &x[t * h..][..h];
        let mut acc = vec![0.0f32; h];
        for j in 0..k {
            if r.rows[t * k + j] == DROPPED {
                continue;
            }
            let e = r.experts[t * k + j] as usize;
            let hv: Vec<f32> = (0..i)
                .map(|n| {
                    let ub = w.up_bias.as_ref().map_or(0.0, |b| b[e * i + n]);
                    let u = dot(xt, &w.up[(e * i + n) * h..][..h]) + ub;
                    let g = w.gate.as_ref().map_or(0.0, |g| {
                        let gb = w.gate_bias.as_ref().map_or(0.0, |b| b[e * i + n]);
                        dot(xt, &g[(e * i + n) * h..][..h]) + gb
                    });
                    c.dtype.round(c.activation.eval(u as f64, g as f64) as f32)
                })
                .collect();
            for (o, a) in acc.iter_mut().enumerate() {
                let db = w.down_bias.as_ref().map_or(0.0, |b| b[e * h + o]);
                let y = c.dtype.round(dot(&hv, &w.down[(e * h + o) * i..][..i]) + db);
                *a += r.weights[t * k + j] * y;
            }
        }
        if let Some(shared) = c.shared {
            let si = shared.total_inter() as usize;
            let (up, gate) = (w.shared_up.as_ref().unwrap(), w.shared_gate.as_ref().unwrap());
            let hv: Vec<f32> = (0..si)
                .map(|n| {
                    let (u, g) = (dot(xt, &up[n * h..][..h]), dot(xt, &gate[n * h..][..h]));
                    c.dtype.round(Activation::SiluGated.eval(u as f64, g as f64) as f32)
                })
                .collect();
            let gs = w.shared_gate_row.as_ref().map_or(1.0, |row| sigmoid(dot(xt, row)));
            let down = w.shared_down.as_ref().unwrap();
            for (o, a) in acc.iter_mut().enumerate() {
                *a += gs * c.dtype.round(dot(&hv, &down[o * si..][..si]));
            }
        }
        for (o, a) in out[t * h..][..h].iter_mut().zip(acc) {
            *o = c.dtype.round(a);
        }
    }
    out
}

fn forward(c: &MoeConfig, w: &LayerWeights, seed: u64) -> (Vec<Vec<f32>>, Vec<RankOutput>) {
    let inputs: Vec<Vec<f32>> = (0..c.world).map(|r| generate_input(c, r, seed).unwrap()).collect();
    let outputs = inputs
        .iter()
        .map(|x| {
            let routing = route(c, x, w).unwrap();
            RankOutput {
                output: f32_backend(c, w, x, &routing),
                routing,
                stats: RankStats::default(),
                trace: None,
            }
        })
        .collect();
    (inputs, outputs)
}

#[test]
fn an_f32_backend_passes_for_every_dtype_and_activation() {
    for dtype in DType::ALL {
        for activation in [Activation::Relu, Activation::Gelu, Activation::SiluGated] {
            let c = MoeConfig {
                tokens_per_rank: 16,
                hidden: 128,
                inter: 256,
                activation,
                bias: activation == Activation::Gelu,
                dtype,
                ..MoeConfig::default()
            };
            let w = LayerWeights::generate(&c, 11).unwrap();
            let (inputs, outputs) = forward(&c, &w, 11);
            let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
            assert!(report.passed(), "{dtype} {activation:?}: {report}");
            assert_eq!(report.rows_checked, 32);
            // Far from the bound: the tolerance leaves margin, but not orders of magnitude.
            assert!(report.max_rel < dtype.tolerance() / 2.0, "{dtype}: {report}");
        }
    }
}

/// Small layers of each real-model kind (issue 16), in `dtype`, with the shared ones'
/// kinds first.
fn model_kinds(dtype: DType) -> Vec<(&'static str, MoeConfig)> {
    crate::config::presets::small_model_kinds(dtype).into_iter().skip(2).collect()
}

#[test]
fn an_f32_backend_passes_for_every_model_kind() {
    for dtype in DType::ALL {
        for (name, c) in model_kinds(dtype) {
            let w = LayerWeights::generate(&c, 12).unwrap();
            let (inputs, outputs) = forward(&c, &w, 12);
            let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
            assert!(report.passed(), "{dtype} {name}: {report}");
            assert!(report.max_rel < dtype.tolerance() / 2.0, "{dtype} {name}: {report}");
        }
    }
}

#[test]
fn a_missing_shared_expert_or_selection_bias_is_caught() {
    for (name, c) in model_kinds(DType::F32Exact).into_iter().take(3) {
        let w = LayerWeights::generate(&c, 13).unwrap();
        let (inputs, mut outputs) = forward(&c, &w, 13);
        // The layer without its shared experts: every row is off.
        let routed = MoeConfig { shared: None, ..c.clone() };
        let mut routed_w = w.clone();
        routed_w.shared_up = None;
        routed_w.shared_gate = None;
        routed_w.shared_down = None;
        routed_w.shared_gate_row = None;
        outputs[0].output = f32_backend(&routed, &routed_w, &inputs[0], &outputs[0].routing);
        let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
        assert_eq!(report.failure_count, 16, "{name}: {report}");
    }
    // DeepSeek-V3 routed without its selection bias chooses other experts.
    let (_, c) = model_kinds(DType::F32Exact).swap_remove(2);
    let w = LayerWeights::generate(&c, 13).unwrap();
    let (inputs, outputs) = forward(&c, &w, 13);
    let mut unbiased = w.clone();
    unbiased.selection_bias.as_mut().unwrap().fill(0.0);
    let other = route(&c, &inputs[0], &unbiased).unwrap();
    assert_ne!(other.experts, outputs[0].routing.experts);
    let err = check_routing(&c, &w, &inputs[0], &other).unwrap_err();
    assert!(err.contains("not a near tie"), "{err}");
}

#[test]
fn shared_expert_with_its_gate_by_hand() {
    // One routed expert (k = 1, weight 1) that outputs zero, and a shared expert of 64:
    // x = [1, 0, ...]; shared up[0][0] = 2, gate[0][0] = 1 -> h0 = silu(1) * 2;
    // down[0][0] = 1 -> ys0 = h0; gate row [ln 3, 0, ...] -> gs = sigmoid(ln 3) = 3/4.
    let c = MoeConfig {
        shared: Some(SharedExperts { count: 1, inter: 64, gate: SharedGate::Sigmoid }),
        activation: Activation::SiluGated,
        ..tiny(1, 1, Activation::SiluGated, false)
    };
    let mut w = zeros(&c);
    w.shared_up.as_mut().unwrap()[0] = 2.0;
    w.shared_gate.as_mut().unwrap()[0] = 1.0;
    w.shared_down.as_mut().unwrap()[0] = 1.0;
    w.shared_gate_row.as_mut().unwrap()[0] = 3f32.ln();
    let x = row(&[1.0]);
    let r = route(&c, &x, &w).unwrap();
    let out = reference_rank(&c, &w, &x, &r).unwrap();
    let h0 = 2.0 / (1.0 + (-1f64).exp());
    assert!((out[0] as f64 - 0.75 * h0).abs() < 1e-6, "{}", out[0]);
    assert!(out[1..].iter().all(|&v| v == 0.0));
    // Without the gate: the shared expert's output itself, added to the routed sum.
    let plain = MoeConfig {
        shared: Some(SharedExperts { count: 1, inter: 64, gate: SharedGate::None }),
        ..c.clone()
    };
    let mut w2 = zeros(&plain);
    w2.shared_up = w.shared_up.clone();
    w2.shared_gate = w.shared_gate.clone();
    w2.shared_down = w.shared_down.clone();
    w2.up[0] = 1.0; // routed expert: u0 = 1, g0 = 0 -> h0 = 0: contributes 0
    let out = reference_rank(&plain, &w2, &x, &route(&plain, &x, &w2).unwrap()).unwrap();
    assert!((out[0] as f64 - h0).abs() < 1e-6, "{}", out[0]);
    // A token whose slots are all dropped keeps its shared term.
    let dropped = RankRouting { rows: vec![DROPPED], ..r.clone() };
    let out = reference_rank(&c, &w, &x, &dropped).unwrap();
    assert!((out[0] as f64 - 0.75 * h0).abs() < 1e-6);
}

#[test]
fn gpt_oss_expert_by_hand() {
    // One expert with biases: x = [1, 0, ...]; u0 = up 9 + ub 0.5 = 9.5 -> clamped to 7;
    // g0 = gate 1 + gb 0.25 = 1.25 -> h0 = (7 + 1) * 1.25 * sigmoid(1.702 * 1.25);
    // u1 = -9 -> -7, g1 = 8 -> 7: h1 = (-7 + 1) * 7 * sigmoid(11.914).
    // y0 = h0 + h1 + db0 (down[0][0] = down[0][1] = 1, db0 = 0.125).
    let c = tiny(1, 1, Activation::SwigluOss(SwigluOss::GPT_OSS), true);
    let c = MoeConfig { routing: Routing::GPT_OSS, ..c };
    let mut w = zeros(&c);
    w.up[0] = 9.0;
    w.up[64] = -9.0; // up[0][1][0]
    w.up_bias.as_mut().unwrap()[0] = 0.5;
    w.gate.as_mut().unwrap()[0] = 1.0;
    w.gate.as_mut().unwrap()[64] = 8.0;
    w.gate_bias.as_mut().unwrap()[0] = 0.25;
    w.down[0] = 1.0;
    w.down[1] = 1.0;
    w.down_bias.as_mut().unwrap()[0] = 0.125;
    let x = row(&[1.0]);
    let r = route(&c, &x, &w).unwrap();
    assert_eq!(r.weights, vec![1.0]);
    let out = reference_rank(&c, &w, &x, &r).unwrap();
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let h0 = 8.0 * 1.25 * sig(1.702 * 1.25);
    let h1 = -6.0 * 7.0 * sig(1.702 * 7.0);
    assert!((out[0] as f64 - (h0 + h1 + 0.125)).abs() < 1e-5, "{}", out[0]);
}

#[test]
fn output_errors_are_caught_and_located() {
    let c = MoeConfig { tokens_per_rank: 16, ..MoeConfig::default() };
    let w = LayerWeights::generate(&c, 5).unwrap();
    let (inputs, mut outputs) = forward(&c, &w, 5);
    let h = c.hidden as usize;
    // Token 9 of rank 1 loses its second slot's contribution: far beyond bf16 tolerance.
    let bad_routing = {
        let mut r = outputs[1].routing.clone();
        r.rows[9 * 2 + 1] = DROPPED;
        r
    };
    let wrong = f32_backend(&c, &w, &inputs[1], &bad_routing);
    outputs[1].output[9 * h..10 * h].copy_from_slice(&wrong[9 * h..10 * h]);
    let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
    assert!(!report.passed());
    assert_eq!(report.worst, Some(RowId { rank: 1, token: 9 }));
    assert_eq!(report.failure_count, 1);
    assert!(report.max_rel > 10.0 * c.dtype.tolerance());
    assert!(report.to_string().contains("rank 1 token 9"), "{report}");

    // A NaN fails; so does a wrong output length.
    let (_, mut outputs) = forward(&c, &w, 5);
    outputs[0].output[3] = f32::NAN;
    outputs[1].output.pop();
    let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
    assert_eq!(report.failure_count, 2);
    assert!(matches!(report.failures[0], Failure::Row { rel, .. } if rel.is_infinite()));
    assert!(matches!(report.failures[1], Failure::OutputShape { rank: 1, .. }));

    // Mismatched world: a typed error.
    assert!(verify(&c, &w, &inputs[..1], &outputs, &VerifyOptions::default()).is_err());
}

#[test]
fn sampled_rows_are_distinct_reproducible_and_reported() {
    let s = sample_tokens(100, 10, 42, 3);
    assert_eq!(s.len(), 10);
    assert!(s.windows(2).all(|p| p[0] < p[1]) && s.iter().all(|&t| t < 100));
    assert_eq!(s, sample_tokens(100, 10, 42, 3));
    assert_ne!(s, sample_tokens(100, 10, 42, 4));
    assert_eq!(sample_tokens(5, 10, 1, 0), vec![0, 1, 2, 3, 4]);

    let c = MoeConfig { tokens_per_rank: 16, ..MoeConfig::default() };
    let w = LayerWeights::generate(&c, 5).unwrap();
    let (inputs, outputs) = forward(&c, &w, 5);
    let opts = |seed| VerifyOptions { sample: Sample::Rows { per_rank: 4, seed }, tolerance: None };
    let report = verify(&c, &w, &inputs, &outputs, &opts(Some(7))).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!((report.rows_checked, report.rows_total, report.sample_seed), (8, 32, Some(7)));
    assert!(report.to_string().contains("sample seed 7"));
    // Without a seed one is drawn and reported.
    assert!(verify(&c, &w, &inputs, &outputs, &opts(None)).unwrap().sample_seed.is_some());
}

/// A config whose router gives experts 0 and 1 identical rows (exact ties) and expert 2 a
/// distinct one.
fn tied() -> (MoeConfig, LayerWeights, Vec<Vec<f32>>) {
    let c = MoeConfig {
        world: 1,
        tokens_per_rank: 4,
        hidden: 64,
        inter: 64,
        experts: 3,
        top_k: 1,
        ..MoeConfig::default()
    };
    let mut w = LayerWeights::generate(&c, 2).unwrap();
    let (first, rest) = w.router.split_at_mut(64);
    rest[..64].copy_from_slice(first);
    let inputs = vec![generate_input(&c, 0, 2).unwrap()];
    (c, w, inputs)
}

fn output_for(c: &MoeConfig, w: &LayerWeights, x: &[f32], routing: RankRouting) -> RankOutput {
    RankOutput {
        output: f32_backend(c, w, x, &routing),
        routing,
        stats: RankStats::default(),
        trace: None,
    }
}

#[test]
fn near_ties_are_accepted_and_verified_with_the_backend_routing() {
    let (c, w, inputs) = tied();
    let cpu = route(&c, &inputs[0], &w.router).unwrap();
    // Swap 0 <-> 1 wherever the CPU chose one of the tied pair.
    let swapped: Vec<u32> = cpu.experts.iter().map(|&e| [1, 0, 2][e as usize]).collect();
    let ties = cpu.experts.iter().filter(|&&e| e < 2).count() as u64;
    assert!(ties > 0, "the seed must exercise a tie: {:?}", cpu.experts);
    let routing = RankRouting::from_choices(&c, swapped, cpu.weights.clone()).unwrap();
    let outputs = vec![output_for(&c, &w, &inputs[0], routing)];
    let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.near_ties, ties);
}

/// Grouped top-k over 4 experts in 2 groups (1 kept, top-1); with `tied_groups` group 1's
/// router rows repeat group 0's, so the two groups' scores tie exactly for every token.
fn grouped(tied_groups: bool) -> (MoeConfig, LayerWeights, Vec<f32>) {
    let c = MoeConfig {
        world: 1,
        tokens_per_rank: 8,
        hidden: 64,
        inter: 64,
        experts: 4,
        top_k: 1,
        routing: Routing {
            groups: Some(Groups { count: 2, keep: 1, score: GroupScore::Max }),
            ..Routing::SOFTMAX
        },
        ..MoeConfig::default()
    };
    let mut w = LayerWeights::generate(&c, 3).unwrap();
    if tied_groups {
        let (first, rest) = w.router.split_at_mut(128);
        rest.copy_from_slice(first);
    }
    let x = generate_input(&c, 0, 3).unwrap();
    (c, w, x)
}

#[test]
fn near_ties_between_groups_are_accepted_within_the_groups_the_backend_kept() {
    let (c, w, x) = grouped(true);
    let cpu = route(&c, &x, &w).unwrap();
    assert!(cpu.experts.iter().all(|&e| e < 2), "ties go to group 0: {:?}", cpu.experts);
    // The backend kept group 1 instead: the same choice there.
    let moved: Vec<u32> = cpu.experts.iter().map(|&e| e + 2).collect();
    let r = RankRouting::from_choices(&c, moved, cpu.weights.clone()).unwrap();
    let checked = check_routing(&c, &w, &x, &r).unwrap();
    assert_eq!(checked.near_ties, 8);
    // Within the kept group the choice must still be the top one (no tie there).
    let wrong: Vec<u32> = cpu.experts.iter().map(|&e| 3 - e).collect();
    let r = RankRouting::from_choices(&c, wrong, cpu.weights.clone()).unwrap();
    let err = check_routing(&c, &w, &x, &r).unwrap_err();
    assert!(err.contains("not a near tie"), "{err}");
}

#[test]
fn a_group_that_does_not_tie_the_kept_ones_is_refused() {
    let (c, w, x) = grouped(false);
    let cpu = route(&c, &x, &w).unwrap();
    // Each token's best expert of the group the CPU dropped.
    let scores = router_scores(&c, &x, &w).unwrap();
    let other: Vec<u32> = (0..8)
        .map(|t| {
            let dropped = if cpu.experts[t] < 2 { 2 } else { 0 };
            let s = scores.scores(t);
            (if s[dropped] >= s[dropped + 1] { dropped } else { dropped + 1 }) as u32
        })
        .collect();
    let r = RankRouting::from_choices(&c, other, cpu.weights.clone()).unwrap();
    let err = check_routing(&c, &w, &x, &r).unwrap_err();
    assert!(err.contains("not a near tie"), "{err}");
}

#[test]
fn routing_errors_beyond_ties_fail_with_a_reason() {
    let (c, w, inputs) = tied();
    let x = &inputs[0];
    let cpu = route(&c, x, &w.router).unwrap();
    let check = |r: &RankRouting| check_routing(&c, &w.router, x, r).unwrap_err();

    // A different expert that is not tied.
    let mut experts = cpu.experts.clone();
    experts[0] = if experts[0] == 2 { 0 } else { 2 };
    let r = RankRouting::from_choices(&c, experts, cpu.weights.clone()).unwrap();
    assert!(check(&r).contains("not a near tie"), "{}", check(&r));
    let outputs = vec![output_for(&c, &w, x, r)];
    let report = verify(&c, &w, &inputs, &outputs, &VerifyOptions::default()).unwrap();
    assert!(matches!(&report.failures[..], [Failure::Routing { rank: 0, .. }]));

    // A wrong combine weight.
    let mut r = cpu.clone();
    r.weights[1] = 0.5;
    assert!(check(&r).contains("combine weight"), "{}", check(&r));

    // A drop the capacity rule does not make.
    let mut r = cpu.clone();
    r.rows[2] = DROPPED;
    assert!(check(&r).contains("packet row dropped"), "{}", check(&r));

    // Structural damage.
    let mut r = cpu;
    r.experts[3] = 7;
    assert!(check(&r).contains("out of range"), "{}", check(&r));
}
