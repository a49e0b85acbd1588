//! The simulator against the oracle: every dtype, activation and capacity mode, determinism,
//! back-to-back forwards, statistics and edge cases.

mod common;

use common::{check, run};
use flashdmoe_core::{Activation, CapacityPolicy, DType, MoeConfig, Placement};
use flashdmoe_sim::SimOptions;

fn small() -> MoeConfig {
    MoeConfig {
        world: 3,
        tokens_per_rank: 24,
        hidden: 64,
        inter: 128,
        experts: 5,
        top_k: 2,
        ..MoeConfig::default()
    }
}

#[test]
fn smoke() {
    let r = run(&small(), SimOptions::default(), 1);
    check(&r.layer, &r.weights, &r.inputs, &r.out);
}
