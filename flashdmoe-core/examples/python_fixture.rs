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
//! slots survive capacity, and the oracle's output (`reference_rank`). The test
//! `tests/python_fixture.rs` fails when the committed file differs from what this prints.

use flashdmoe_core::config::{Activation, CapacityPolicy, MoeConfig, Placement};
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
    s += &format!("  \"output\": {out:?}\n}}\n");
    s
}
