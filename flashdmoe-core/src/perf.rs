//! Performance floors and timing statistics (the measurement rules of `docs/performance.md`).
//!
//! * Floors: the physical lower bound of one layer forward on one GPU,
//!   `max(FLOPs / rate, bytes / bandwidth)` ([`floor_ms`]), with [`layer_flops`] =
//!   `4 T k H I` (`6` for gated experts) expert GEMMs + `2 T H E` router (+ `6 T H S` for shared
//!   experts of total intermediate size `S`, + `2 T H` for their sigmoid gate), and
//!   [`floor_bytes`] = every touched expert's weights read once (2 matrices of `H x I`, 3 for
//!   gated experts) + the shared experts' `3 H S` (+ `H`) + the input read and the output
//!   written. Rates and bandwidth are the H200 ceilings of `docs/performance.md`
//!   ([`matmul_rate`], [`DEVICE_BANDWIDTH`]).
//! * Timing statistics: [`TimeSummary`] (median, p10, p90, min, max) with quantiles by linear
//!   interpolation between closest ranks (numpy's default).
//!
//! Invariants:
//!
//! * The formulas, ceilings and quantile rule are those of the PyTorch baselines'
//!   `bench/baselines/common.py` (`flops`, `floor_ms`, `summarize`), so a floor or a median
//!   means the same number on both sides of a comparison: change both or neither.
//! * FLOPs are nominal per rank: dropped slots are still counted (`docs/performance.md`), so
//!   the floor does not depend on routing; only the weight bytes do, through the touched-expert
//!   count.
//! * Every quantity is in the unit its name says (`_ms` milliseconds, FLOPs, bytes,
//!   FLOP/s, bytes/s); nothing here reads a clock.

use crate::config::{ConfigError, MoeConfig, SharedGate};
use crate::dtype::DType;
use crate::routing::RankRouting;

/// Device memory bandwidth of an H200 (bytes/s, measured device copy, `docs/performance.md`).
pub const DEVICE_BANDWIDTH: f64 = 4.3e12;

/// Dense matrix-multiply rate of an H200 for `dtype` (FLOP/s, `docs/performance.md`): bf16/f16
/// tensor cores 790 T, TF32 (our `f32`) half of it, f32 without tensor cores 67 T.
pub const fn matmul_rate(dtype: DType) -> f64 {
    match dtype {
        DType::Bf16 | DType::F16 => 790e12,
        DType::F32 => 395e12,
        DType::F32Exact => 67e12,
    }
}

/// Weight matrices of one expert: 3 for gated experts (gate, up, down), else 2.
fn matrices(config: &MoeConfig) -> f64 {
    if config.activation.is_gated() { 3.0 } else { 2.0 }
}

/// The shared experts' weights, as elements: `3 H S` (+ `H` for the sigmoid gate's row).
fn shared_elements(config: &MoeConfig) -> f64 {
    config.shared.map_or(0.0, |s| {
        let h = config.hidden as f64;
        3.0 * h * s.total_inter() as f64 + if s.gate == SharedGate::Sigmoid { h } else { 0.0 }
    })
}

/// Nominal FLOPs of one rank's forward: `2 * matrices * T k H I` for the experts plus
/// `2 T H E` for the router plus `2 T` per shared-expert weight (module doc).
pub fn layer_flops(config: &MoeConfig) -> f64 {
    let (t, h, i) = (config.tokens_per_rank as f64, config.hidden as f64, config.inter as f64);
    let (e, k) = (config.experts as f64, config.top_k as f64);
    2.0 * matrices(config) * t * k * h * i + 2.0 * t * h * e + 2.0 * t * shared_elements(config)
}

/// Bytes one rank's forward must move at least: the weights of `experts_touched` experts and
/// of the shared experts read once plus its input read and output written (`T x H` each), in
/// the config's dtype.
pub fn floor_bytes(config: &MoeConfig, experts_touched: u32) -> f64 {
    let (t, h, i) = (config.tokens_per_rank as f64, config.hidden as f64, config.inter as f64);
    let elem = config.dtype.elem_bytes() as f64;
    let experts = experts_touched as f64 * matrices(config) * h * i;
    (experts + shared_elements(config) + 2.0 * t * h) * elem
}

/// The floor of one rank's forward in milliseconds:
/// `max(layer_flops / matmul_rate, floor_bytes / DEVICE_BANDWIDTH)`.
pub fn floor_ms(config: &MoeConfig, experts_touched: u32) -> f64 {
    let compute = layer_flops(config) / matmul_rate(config.dtype);
    let memory = floor_bytes(config, experts_touched) / DEVICE_BANDWIDTH;
    compute.max(memory) * 1e3
}

/// Experts whose weights a GPU must read in this forward: for each rank, the experts it owns
/// that received at least one kept row from any source rank (`routings`, one per source);
/// the largest count over the ranks (the slowest GPU's floor). On one rank: the experts with
/// a kept token.
pub fn experts_touched<'a>(
    config: &MoeConfig,
    routings: impl IntoIterator<Item = &'a RankRouting>,
) -> Result<u32, ConfigError> {
    let map = config.expert_map()?;
    let mut touched = vec![false; config.experts as usize];
    for routing in routings {
        for (t, tokens) in touched.iter_mut().zip(&routing.expert_tokens) {
            *t |= !tokens.is_empty();
        }
    }
    let per_rank = (0..config.world)
        .map(|rank| map.experts_of(rank).iter().filter(|&&e| touched[e as usize]).count() as u32);
    Ok(per_rank.max().unwrap_or(0))
}

/// Median, 10th and 90th percentiles, minimum and maximum of a set of times (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeSummary {
    /// 50th percentile.
    pub median_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl TimeSummary {
    /// The summary of `times_ms`; `None` when it is empty or holds a negative or non-finite
    /// time (there is no meaningful summary of those).
    pub fn of(times_ms: &[f64]) -> Option<TimeSummary> {
        if times_ms.is_empty() || times_ms.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
            return None;
        }
        let mut sorted = times_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(TimeSummary {
            median_ms: quantile(&sorted, 0.5),
            p10_ms: quantile(&sorted, 0.1),
            p90_ms: quantile(&sorted, 0.9),
            min_ms: sorted[0],
            max_ms: sorted[sorted.len() - 1],
        })
    }
}

/// The `q`-quantile (`0 <= q <= 1`) of ascending, non-empty `sorted` values by linear
/// interpolation between the closest ranks: position `q * (n - 1)`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets;
    use crate::config::{CapacityPolicy, Placement};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
    }

    #[test]
    fn paper_floor_is_compute_bound_at_t16384() {
        let c = presets::paper(16384, 8);
        let flops = 4.0 * 16384.0 * 2.0 * 2048.0 * 2048.0 + 2.0 * 16384.0 * 2048.0 * 8.0;
        assert_eq!(layer_flops(&c), flops);
        // 550.292684800 GFLOP at 790 TFLOP/s (the recorded runs print 0.697 ms).
        assert!(close(floor_ms(&c, 8), flops / 790e12 * 1e3));
        assert!((floor_ms(&c, 8) - 0.696573).abs() < 1e-6);
    }

    #[test]
    fn small_batch_floor_is_weight_bound() {
        let c = presets::paper(128, 8);
        // 8 experts x 2 matrices x 2048 x 2048 x 2 bytes + 2 x 128 x 2048 x 2 bytes.
        let bytes = 8.0 * 2.0 * 2048.0 * 2048.0 * 2.0 + 2.0 * 128.0 * 2048.0 * 2.0;
        assert_eq!(floor_bytes(&c, 8), bytes);
        assert!(close(floor_ms(&c, 8), bytes / 4.3e12 * 1e3));
        // 0.03145728 ms, as gpu-check and the baselines recorded for paper-t128-e8.
        assert!((floor_ms(&c, 8) - 0.03145728).abs() < 1e-12);
        // Fewer touched experts, lower floor.
        assert!(floor_ms(&c, 4) < floor_ms(&c, 8));
    }

    #[test]
    fn swiglu_counts_three_matrices_and_dtypes_their_rates() {
        let m = presets::preset("mixtral-8x7b").unwrap(); // T 4096, SwiGLU
        let flops = 6.0 * 4096.0 * 2.0 * 4096.0 * 14336.0 + 2.0 * 4096.0 * 4096.0 * 8.0;
        assert_eq!(layer_flops(&m), flops);
        // The recorded run 5 printed 3.654 ms for this preset.
        assert!((floor_ms(&m, 8) - 3.65378).abs() < 1e-5);
        let bytes = 8.0 * 3.0 * 4096.0 * 14336.0 * 2.0 + 2.0 * 4096.0 * 4096.0 * 2.0;
        assert_eq!(floor_bytes(&m, 8), bytes);
        let mut tf32 = presets::paper(16384, 32);
        tf32.dtype = DType::F32;
        assert!(close(floor_ms(&tf32, 32), layer_flops(&tf32) / 395e12 * 1e3));
        tf32.dtype = DType::F32Exact;
        assert!(close(floor_ms(&tf32, 32), layer_flops(&tf32) / 67e12 * 1e3));
        assert_eq!(matmul_rate(DType::F16), matmul_rate(DType::Bf16));
    }

    #[test]
    fn shared_experts_and_gpt_oss_experts_count() {
        let v3 = presets::preset("deepseek-v3").unwrap(); // T 4096, H 7168, I 2048, 1 x 2048
        let (t, h) = (4096.0, 7168.0);
        let routed = 6.0 * t * 8.0 * h * 2048.0 + 2.0 * t * h * 256.0;
        assert_eq!(layer_flops(&v3), routed + 6.0 * t * h * 2048.0);
        let bytes = (8.0 * 3.0 * h * 2048.0 + 3.0 * h * 2048.0 + 2.0 * t * h) * 2.0;
        assert_eq!(floor_bytes(&v3, 8), bytes);
        // Qwen's gate row: 2 T H more FLOPs, H more weights.
        let q = presets::preset("qwen1.5-moe-a2.7b").unwrap();
        let r = presets::preset("qwen1.5-moe-a2.7b-routed").unwrap();
        assert_eq!(layer_flops(&q) - layer_flops(&r), 2.0 * 4096.0 * 2048.0 * (3.0 * 5632.0 + 1.0));
        // gpt-oss's experts are gated: three matrices, as the -shape preset's.
        let oss = presets::preset("gpt-oss-20b").unwrap();
        let shape = presets::preset("gpt-oss-20b-shape").unwrap();
        assert_eq!(layer_flops(&oss), layer_flops(&shape));
        assert_eq!(floor_bytes(&oss, 32), floor_bytes(&shape, 32));
    }

    #[test]
    fn touched_experts_are_counted_per_owner_rank() {
        let mut c = MoeConfig {
            world: 2,
            tokens_per_rank: 4,
            experts: 4,
            top_k: 1,
            capacity: CapacityPolicy::Dropless,
            ..MoeConfig::default()
        };
        // Rank 0 routes to experts 0 and 1, rank 1 to expert 3: owners (contiguous, 2 per
        // rank) rank 0 {0, 1} both touched, rank 1 {2, 3} one touched -> max 2.
        let r0 = RankRouting::from_choices(&c, vec![0, 1, 0, 1], vec![1.0; 4]).unwrap();
        let r1 = RankRouting::from_choices(&c, vec![3, 3, 3, 3], vec![1.0; 4]).unwrap();
        assert_eq!(experts_touched(&c, [&r0, &r1]).unwrap(), 2);
        assert_eq!(experts_touched(&c, [&r1]).unwrap(), 1);
        // A table placing experts 0 and 3 on rank 1: both touched there -> 2.
        c.placement = Placement::Table(vec![1, 0, 0, 1]);
        assert_eq!(experts_touched(&c, [&r0, &r1]).unwrap(), 2);
        c.world = 1;
        c.placement = Placement::Contiguous;
        let solo = RankRouting::from_choices(&c, vec![0, 2, 2, 0], vec![1.0; 4]).unwrap();
        assert_eq!(experts_touched(&c, [&solo]).unwrap(), 2);
        c.world = 0;
        assert!(experts_touched(&c, [&solo]).is_err());
    }

    #[test]
    fn summary_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [10, 50, 90]) = [1.3, 2.5, 3.7].
        let s = TimeSummary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert!(close(s.p10_ms, 1.3) && close(s.median_ms, 2.5) && close(s.p90_ms, 3.7));
        assert_eq!((s.min_ms, s.max_ms), (1.0, 4.0));
        let one = TimeSummary::of(&[0.5]).unwrap();
        assert_eq!((one.p10_ms, one.median_ms, one.p90_ms), (0.5, 0.5, 0.5));
        // Eleven values 0..=10: every decile is a sample.
        let v: Vec<f64> = (0..=10).rev().map(f64::from).collect();
        let s = TimeSummary::of(&v).unwrap();
        assert_eq!((s.p10_ms, s.median_ms, s.p90_ms), (1.0, 5.0, 9.0));
    }

    #[test]
    fn summary_rejects_what_is_not_a_time() {
        assert_eq!(TimeSummary::of(&[]), None);
        assert_eq!(TimeSummary::of(&[1.0, f64::NAN]), None);
        assert_eq!(TimeSummary::of(&[1.0, f64::INFINITY]), None);
        assert_eq!(TimeSummary::of(&[-1.0, 2.0]), None);
    }
}
