//! Writes `bench/baselines/testdata/rust_reference.json`, the fixture that holds the PyTorch
//! baselines' generator, router, capacity rule and f64 reference to this crate's (see
//! `bench/baselines/testdata/README.md`):
//!
//! ```sh
//! cargo run -q -p flashdmoe-core --example python_fixture > bench/baselines/testdata/rust_reference.json
//! ```
//!
//! A small layer (T 32, H 64, I 128, E 8, top-2, SwiGLU with biases, bf16, capacity factor 1,
//! seed 7): per generated tensor its length, first four values and a checksum
//! (`sum((n + 1) * f32_bits(v_n))` mod 2^64), then the router's experts and weights, which
//! slots survive capacity, and the oracle's output (`reference_rank`). Then `models`: small
//! layers of each real-model kind (Mixtral's and Qwen3-MoE's routers; issue 16: Qwen2-MoE's
//! gated shared expert, DeepSeek-V2's grouped softmax router with shared experts,
//! DeepSeek-V3's sigmoid router with selection bias, groups and scaling, gpt-oss's router and
//! experts), in bf16 and f32-exact, each with its config in the baselines' field names, the
//! checksums of its model tensors (router biases, shared experts), its routing and the
//! oracle's output (what `test_transformers.py` compares transformers' own MoE blocks with). The test `tests/python_fixture.rs` fails when
//! the committed file differs from what this prints.

use flashdmoe_core::config::presets::small_model_kinds;
use flashdmoe_core::config::{
    Activation, CapacityPolicy, GroupScore, MoeConfig, Placement, SharedGate, SwigluOss,
};
use flashdmoe_core::dtype::DType;
use flashdmoe_core::oracle::reference_rank;
use flashdmoe_core::routing::DROPPED;
use flashdmoe_core::{LayerWeights, generate_input, route};

fn main() {
    print!("{}", fixture_json());
}

/// `sum((n + 1) * f32_bits(v_n))` mod 2^64.
fn checksum(v: &[f32]) -> u64 {
    v.iter()
        .enumerate()
        .fold(0u64, |h, (n, x)| h.wrapping_add((n as u64 + 1).wrapping_mul(x.to_bits() as u64)))
}

/// The fixture, as the committed file holds it (f32 values in Rust's shortest round-trip form).
pub fn fixture_json() -> String {
    let config = MoeConfig {
        world: 1,
        tokens_per_rank: 32,
        hidden: 64,
        inter: 128,
        experts: 8,
        top_k: 2,
        activation: Activation::SiluGated,
        bias: true,
        dtype: DType::Bf16,
        capacity: CapacityPolicy::Factor(1.0),
        renormalize: true,
        placement: Placement::Contiguous,
        ..MoeConfig::default()
    };
    let seed = 7u64;
    let w = LayerWeights::generate(&config, seed).expect("the fixture's config is valid");
    let x = generate_input(&config, 0, seed).expect("rank 0 exists");
    let r = route(&config, &x, &w.router).expect("the router takes the generated input");
    let out = reference_rank(&config, &w, &x, &r).expect("the oracle takes the routing");
    let mut s = String::from("{\n");
    s += "  \"config\": {\"tokens\": 32, \"hidden\": 64, \"inter\": 128, \"experts\": 8, \
          \"top_k\": 2, \"activation\": \"swiglu\", \"dtype\": \"bf16\", \"capacity\": 1.0, \
          \"bias\": true},\n  \"seed\": 7,\n  \"tensors\": {\n";
    for n in ["router", "up", "gate", "down", "up_bias", "gate_bias", "down_bias"] {
        let t = w.tensor(n).expect("a SwiGLU layer with biases has every tensor");
        s += &format!(
            "    \"{n}\": {{\"len\": {}, \"checksum\": {}, \"first\": {:?}}},\n",
            t.len(),
            checksum(t),
            &t[..4]
        );
    }
    s += &format!(
        "    \"input\": {{\"len\": {}, \"checksum\": {}, \"first\": {:?}}}\n  }},\n",
        x.len(),
        checksum(&x),
        &x[..4]
    );
    s += &format!("  \"experts\": {:?},\n", r.experts);
    s += &format!("  \"weights\": {:?},\n", r.weights);
    let kept: Vec<bool> = r.rows.iter().map(|&v| v != DROPPED).collect();
    s += &format!("  \"kept\": {kept:?},\n");
    s += &format!("  \"output\": {out:?},\n");
    let models: Vec<String> = models().into_iter().map(|(name, c)| model_json(&name, &c)).collect();
    s += &format!("  \"models\": [\n{}\n  ]\n}}\n", models.join(",\n"));
    s
}

/// `presets::small_model_kinds` in bf16, then in f32-exact (named `<kind>-f32`).
fn models() -> Vec<(String, MoeConfig)> {
    let bf16 = small_model_kinds(DType::Bf16).into_iter().map(|(n, c)| (n.to_owned(), c));
    let f32s = small_model_kinds(DType::F32Exact).into_iter().map(|(n, c)| (format!("{n}-f32"), c));
    bf16.chain(f32s).collect()
}

/// One entry of `models` (module doc), seed 9.
fn model_json(name: &str, c: &MoeConfig) -> String {
    let seed = 9u64;
    let w = LayerWeights::generate(c, seed).expect("the fixture's configs are valid");
    let x = generate_input(c, 0, seed).expect("rank 0 exists");
    let r = route(c, &x, &w).expect("the router takes the generated input");
    let out = reference_rank(c, &w, &x, &r).expect("the oracle takes the routing");
    let (activation, limit, alpha) = match c.activation {
        Activation::SwigluOss(p) => ("swiglu-oss", p.limit, p.alpha),
        a => (a.name(), SwigluOss::GPT_OSS.limit, SwigluOss::GPT_OSS.alpha),
    };
    let groups = c.routing.groups.map_or("null".to_owned(), |g| {
        let score = if g.score == GroupScore::Max { "max" } else { "top2" };
        format!("[{}, {}, \"{score}\"]", g.count, g.keep)
    });
    let shared = c.shared.map_or("null".to_owned(), |s| {
        let gate = if s.gate == SharedGate::Sigmoid { "sigmoid" } else { "none" };
        format!("[{}, {}, \"{gate}\"]", s.count, s.inter)
    });
    let mut s = format!("    {{\"name\": \"{name}\", \"seed\": {seed},\n");
    s += &format!(
        "     \"config\": {{\"tokens\": {}, \"hidden\": {}, \"inter\": {}, \"experts\": {}, \
         \"top_k\": {}, \"activation\": \"{activation}\", \"dtype\": \"{}\", \"capacity\": null, \
         \"bias\": {}, \"renormalize\": {}, \"scoring\": \"{}\", \"router_bias\": {}, \
         \"selection_bias\": {}, \"groups\": {groups}, \"scaling\": {:?}, \"shared\": {shared}, \
         \"swiglu_limit\": {limit:?}, \"swiglu_alpha\": {alpha:?}}},\n",
        c.tokens_per_rank,
        c.hidden,
        c.inter,
        c.experts,
        c.top_k,
        c.dtype.name(),
        c.bias,
        c.renormalize,
        c.routing.scoring.name(),
        c.routing.router_bias,
        c.routing.selection_bias,
        c.routing.scaling,
    );
    let tensors: Vec<String> = [
        "router_bias",
        "selection_bias",
        "shared_up",
        "shared_gate",
        "shared_down",
        "shared_gate_row",
    ]
    .into_iter()
    .filter_map(|n| w.tensor(n).map(|t| (n, t)))
    .map(|(n, t)| {
        format!(
            "\"{n}\": {{\"len\": {}, \"checksum\": {}, \"first\": {:?}}}",
            t.len(),
            checksum(t),
            &t[..4]
        )
    })
    .collect();
    s += &format!("     \"tensors\": {{{}}},\n", tensors.join(", "));
    s += &format!("     \"experts\": {:?},\n", r.experts);
    s += &format!("     \"weights\": {:?},\n", r.weights);
    s += &format!("     \"output\": {out:?}}}");
    s
}
