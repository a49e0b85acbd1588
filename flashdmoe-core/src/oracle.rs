//! The CPU reference forward (the oracle) and the verification of a backend's output.
//!
//! The oracle computes one rank's output rows in `f64` accumulation, rounding to the dtype at
//! exactly the agreed points:
//!
//! 1. GEMM0: `u_i = x . up[e][i] (+ ub[e][i])` and, for SwiGLU, `g_i = x . gate[e][i]
//!    (+ gb[e][i])`, accumulated in `f64`; `h_i = act(u_i, g_i)`
//!    ([`crate::config::Activation::eval`]) is rounded to the dtype (the intermediate rows);
//! 2. GEMM1: `y_o = w * (h . down[e][o] (+ db[e][o]))` in `f64`, with `w` the slot's routing
//!    weight (the owner's GEMM1 epilogue applies it: the weight travels with the dispatched
//!    row), rounded to the dtype (the return rows);
//! 3. shared experts (when the config has them): steps 1-2 for the token with the shared
//!    SwiGLU (silu, no biases, intermediate size `S = count * inter`), `ys_o` rounded to the
//!    dtype; its scale `gs` is 1, or with Qwen's gate `gs = sigmoid(x . gate_row)`, the dot in
//!    `f64` rounded to `f32`, the sigmoid in `f32`;
//! 4. combine: `out_o = sum_j y_j,o (+ gs * ys_o)` over the token's kept slots in slot order
//!    (a plain sum: the weights are in the rows), then the shared term, in `f64`, rounded to
//!    the dtype. Dropped slots contribute nothing; a token whose slots are all dropped outputs
//!    its shared term alone (zeros without shared experts).
//!
//! (Rounding from `f64` goes through `f32`, as a stored `f32` accumulator would.)
//!
//! Only a token's own routing matters for its output (capacity is per source rank), so a rank
//! is checked against the oracle on its own, and a sample of its rows can be checked without
//! computing the others.
//!
//! [`verify`] compares a backend's forward with the oracle:
//!
//! * Routing: the backend's expert choice must equal the CPU router's ([`crate::routing`]),
//!   except near ties: slot `j` may hold expert `b` instead of the CPU's `c` when their CPU
//!   choice scores (the probabilities of a softmax router) differ by at most
//!   [`ROUTING_TIE_TOLERANCE`] relative to the larger (for a softmax, about that much difference
//!   in logits; relative to at least 1 where choice scores are logits or biased), which covers
//!   `f32` versus `f64` logit accumulation. With grouped top-k the backend may also have kept
//!   other groups than the CPU when their group scores tie within the same tolerance: its
//!   choice is then compared within the groups it kept. The backend's combine weights must be
//!   within [`WEIGHT_TOLERANCE`] of the weights the CPU computes for the backend's choice, and
//!   its packet rows (capacity drops) must be exactly those that choice implies. The
//!   reference output is then computed with the backend's choice and the CPU's weights for it.
//! * Output: every checked row must satisfy `max_o |out_o - ref_o| <= tol * max_o |ref_o|`,
//!   with `tol` the dtype's [`crate::dtype::DType::tolerance`] unless overridden; an all-zero
//!   reference row must be exactly zero.
//!
//! Invariant: the oracle never reads another rank's data and never depends on thread count;
//! the same inputs give bitwise the same reference.

mod routing_check;
#[cfg(test)]
mod tests;
mod verify;

use thiserror::Error;

pub use self::routing_check::{CheckedRouting, check_routing};
pub use self::verify::{
    FULL_CHECK_MACS, FULL_CHECK_ROWS, Failure, MAX_LISTED_FAILURES, RowId, Sample, VerifyOptions,
    VerifyReport, verify, verify_ranks,
};
use crate::config::{Activation, ConfigError, MoeConfig};
use crate::parallel::fill_rows;
use crate::routing::{DROPPED, RankRouting, RoutingError, check_len, sigmoid};
use crate::weights::{LayerWeights, WeightsError};

/// Largest accepted relative difference between the CPU probabilities of two experts a backend
/// may swap (a near tie). `f32` logit accumulation over `H` terms is off by well under `1e-5`.
pub const ROUTING_TIE_TOLERANCE: f32 = 1e-4;

/// Largest accepted absolute difference between a backend's combine weight and the CPU's.
pub const WEIGHT_TOLERANCE: f32 = 1e-4;
/// Why the oracle could not run (bad shapes); mismatches are reported, not errors.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum OracleError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The weights do not fit the config.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The input or routing is malformed.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// A requested token does not exist.
    #[error("token {token} out of range: the rank has {tokens} tokens")]
    Token {
        /// The token.
        token: u32,
        /// Tokens per rank.
        tokens: u32,
    },
}

/// The reference output rows of `tokens` (`[tokens.len()][hidden]`) of one rank with `input`
/// (`[tokens_per_rank][hidden]`) routed by `routing`.
pub fn reference_rows(
    config: &MoeConfig,
    weights: &LayerWeights,
    input: &[f32],
    routing: &RankRouting,
    tokens: &[u32],
) -> Result<Vec<f32>, OracleError> {
    weights.check_shapes(config)?;
    let (t, h, i) =
        (config.tokens_per_rank as usize, config.hidden as usize, config.inter as usize);
    check_len("input", input, t * h)?;
    check_routing_shape(config, routing)?;
    if let Some(&token) = tokens.iter().find(|&&tok| tok as usize >= t) {
        return Err(OracleError::Token { token, tokens: config.tokens_per_rank });
    }
    let k = config.top_k as usize;
    let gemms = if config.activation.is_gated() { 3 } else { 2 };
    let shared = shared_mlp(config, weights);
    let shared_cost = shared.as_ref().map_or(0, |m| 3 * h * m.inter);
    let mut out = vec![0.0f32; tokens.len() * h];
    fill_rows(&mut out, h, k * gemms * h * i + shared_cost, |first, block| {
        let mut scratch = ExpertScratch::new(config);
        let mut acc = vec![0.0f64; h];
        for (row, out_row) in block.chunks_exact_mut(h).enumerate() {
            let token = tokens[first + row] as usize;
            let x = &input[token * h..][..h];
            acc.fill(0.0);
            for j in 0..k {
                let slot = token * k + j;
                if routing.rows[slot] == DROPPED {
                    continue;
                }
                let mlp = expert_mlp(config, weights, routing.experts[slot] as usize);
                let y = scratch.forward(config, &mlp, x, routing.weights[slot] as f64);
                acc.iter_mut().zip(y).for_each(|(a, &v)| *a += v as f64);
            }
            if let Some(mlp) = &shared {
                let gs = shared_scale(weights, x) as f64;
                let y = scratch.forward(config, mlp, x, 1.0);
                acc.iter_mut().zip(y).for_each(|(a, &v)| *a += gs * v as f64);
            }
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = config.dtype.round(a as f32);
            }
        }
    });
    Ok(out)
}

/// The reference output of every token of one rank (`[tokens_per_rank][hidden]`).
pub fn reference_rank(
    config: &MoeConfig,
    weights: &LayerWeights,
    input: &[f32],
    routing: &RankRouting,
) -> Result<Vec<f32>, OracleError> {
    let tokens: Vec<u32> = (0..config.tokens_per_rank).collect();
    reference_rows(config, weights, input, routing, &tokens)
}

fn check_routing_shape(config: &MoeConfig, routing: &RankRouting) -> Result<(), RoutingError> {
    let pairs = config.tokens_per_rank as usize * config.top_k as usize;
    let lens = [
        ("routing.experts", routing.experts.len()),
        ("routing.weights", routing.weights.len()),
        ("routing.rows", routing.rows.len()),
    ];
    match lens.iter().find(|&&(_, n)| n != pairs) {
        Some(&(what, actual)) => Err(RoutingError::Shape { what, expected: pairs, actual }),
        None if routing.top_k != config.top_k => Err(RoutingError::Shape {
            what: "routing.top_k",
            expected: config.top_k as usize,
            actual: routing.top_k as usize,
        }),
        None => match routing.experts.iter().position(|&e| e >= config.experts) {
            Some(slot) => Err(RoutingError::BadChoice {
                token: (slot / config.top_k as usize) as u32,
                reason: format!(
                    "expert {} out of range ({} experts)",
                    routing.experts[slot], config.experts
                ),
            }),
            None => Ok(()),
        },
    }
}

/// One SwiGLU/relu/gelu MLP's tensors: a routed expert or the shared experts.
struct Mlp<'a> {
    /// Intermediate size.
    inter: usize,
    activation: Activation,
    /// `[inter][hidden]`.
    up: &'a [f32],
    /// `[inter][hidden]`, gated activations only.
    gate: Option<&'a [f32]>,
    /// `[hidden][inter]`.
    down: &'a [f32],
    up_bias: Option<&'a [f32]>,
    gate_bias: Option<&'a [f32]>,
    down_bias: Option<&'a [f32]>,
}

/// Routed expert `e`'s MLP.
fn expert_mlp<'a>(config: &MoeConfig, w: &'a LayerWeights, e: usize) -> Mlp<'a> {
    let (h, i) = (config.hidden as usize, config.inter as usize);
    let part = |t: &'a Option<Vec<f32>>, len: usize| t.as_deref().map(|t| &t[e * len..][..len]);
    Mlp {
        inter: i,
        activation: config.activation,
        up: &w.up[e * i * h..][..i * h],
        gate: part(&w.gate, i * h),
        down: &w.down[e * h * i..][..h * i],
        up_bias: part(&w.up_bias, i),
        gate_bias: part(&w.gate_bias, i),
        down_bias: part(&w.down_bias, h),
    }
}

/// The shared experts' MLP (a SwiGLU without biases), if the config has them.
fn shared_mlp<'a>(config: &MoeConfig, w: &'a LayerWeights) -> Option<Mlp<'a>> {
    let s = config.shared?;
    Some(Mlp {
        inter: s.total_inter() as usize,
        activation: Activation::SiluGated,
        up: w.shared_up.as_deref()?,
        gate: w.shared_gate.as_deref(),
        down: w.shared_down.as_deref()?,
        up_bias: None,
        gate_bias: None,
        down_bias: None,
    })
}

/// The scale `gs` of the shared experts' output for input row `x`: 1, or
/// `sigmoid(x . gate_row)` with Qwen2-MoE's sigmoid gate (the oracle's step 3).
pub fn shared_scale(weights: &LayerWeights, x: &[f32]) -> f32 {
    match &weights.shared_gate_row {
        Some(row) => {
            sigmoid(x.iter().zip(row).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32)
        }
        None => 1.0,
    }
}

/// Buffers for one MLP's forward on one row.
struct ExpertScratch {
    h: Vec<f32>,
    y: Vec<f32>,
}

impl ExpertScratch {
    fn new(config: &MoeConfig) -> ExpertScratch {
        let shared = config.shared.map_or(0, |s| s.total_inter() as usize);
        ExpertScratch {
            h: vec![0.0; (config.inter as usize).max(shared)],
            y: vec![0.0; config.hidden as usize],
        }
    }

    /// `y` (dtype-rounded, `[hidden]`) of `mlp` on row `x`, scaled by `w` before the rounding:
    /// steps 1-2 of the module doc.
    fn forward(&mut self, config: &MoeConfig, mlp: &Mlp, x: &[f32], w: f64) -> &[f32] {
        let (hd, id) = (config.hidden as usize, mlp.inter);
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum()
        };
        let bias = |b: Option<&[f32]>, idx: usize| b.map_or(0.0, |b| b[idx] as f64);
        for (i, h) in self.h[..id].iter_mut().enumerate() {
            let u = dot(x, &mlp.up[i * hd..][..hd]) + bias(mlp.up_bias, i);
            let g = match mlp.gate {
                Some(gate) => dot(x, &gate[i * hd..][..hd]) + bias(mlp.gate_bias, i),
                None => 0.0,
            };
            *h = config.dtype.round(mlp.activation.eval(u, g) as f32);
        }
        for (o, y) in self.y.iter_mut().enumerate() {
            let v = dot(&self.h[..id], &mlp.down[o * id..][..id]) + bias(mlp.down_bias, o);
            *y = config.dtype.round((w * v) as f32);
        }
        &self.y
    }
}
