//! The seeded generator shared with the PyTorch baselines: splitmix64 streams per tensor.
//!
//! Tensor `id` under seed `s` is the splitmix64 stream whose state starts at
//! `s + id * 0x9E3779B97F4A7C15` (wrapping). Element `n` (row-major) takes the stream's
//! `(n + 1)`-th output `x` and becomes `(2u - 1) * scale` with `u = (x >> 40) * 2^-24`, rounded
//! to the dtype. Because splitmix64's state only advances by a constant, element `n` is
//! `mix(start + (n + 1) * GAMMA)`: any element can be computed directly, which lets large
//! tensors be generated in parallel with identical results.
//!
//! Invariant: this file and `bench/baselines/common.py` define the same numbers; change both or
//! neither.

use crate::dtype::DType;
use crate::parallel::fill_rows;

/// The splitmix64 increment (the golden-ratio constant).
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 output function applied to an advanced state.
#[inline]
pub const fn mix(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A splitmix64 stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream starting at `state`.
    pub const fn new(state: u64) -> SplitMix64 {
        SplitMix64 { state }
    }

    /// The stream of tensor `id` under `seed`.
    pub const fn for_tensor(seed: u64, id: u64) -> SplitMix64 {
        SplitMix64::new(seed.wrapping_add(id.wrapping_mul(GAMMA)))
    }

    /// The next output.
    #[allow(clippy::should_implement_trait)] // an infinite stream, not an Iterator of options
    pub fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// The next output mapped to `[0, 1)` with 24 random bits.
    pub fn next_unit(&mut self) -> f32 {
        unit(self.next())
    }
}

/// `(x >> 40) * 2^-24`: a splitmix64 output as an `f32` in `[0, 1)` (exact).
#[inline]
pub fn unit(x: u64) -> f32 {
    (x >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// `len` elements of tensor `id` under `seed`: `dtype.round((2u - 1) * scale)` (module doc).
pub fn tensor(seed: u64, id: u64, len: usize, scale: f32, dtype: DType) -> Vec<f32> {
    let start = seed.wrapping_add(id.wrapping_mul(GAMMA));
    let mut out = vec![0.0f32; len];
    fill_rows(&mut out, 1, 1, |first, block| {
        let mut state = start.wrapping_add((first as u64).wrapping_mul(GAMMA));
        for v in block.iter_mut() {
            state = state.wrapping_add(GAMMA);
            *v = dtype.round((2.0 * unit(mix(state)) - 1.0) * scale);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // Reference outputs of splitmix64 seeded with 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn tensor_matches_the_sequential_stream() {
        let mut r = SplitMix64::for_tensor(42, 3);
        let expect: Vec<f32> = (0..100).map(|_| (2.0 * r.next_unit() - 1.0) * 0.5).collect();
        assert_eq!(tensor(42, 3, 100, 0.5, DType::F32), expect);
        let rounded: Vec<f32> = expect.iter().map(|&v| DType::Bf16.round(v)).collect();
        assert_eq!(tensor(42, 3, 100, 0.5, DType::Bf16), rounded);
    }

    #[test]
    fn parallel_generation_equals_sequential() {
        let len = (1 << 22) + 12_345;
        let t = tensor(7, 1000, len, 1.0, DType::F32);
        let mut r = SplitMix64::for_tensor(7, 1000);
        assert!(t.iter().all(|&v| v == 2.0 * r.next_unit() - 1.0));
    }

    #[test]
    fn values_lie_in_the_scaled_interval() {
        let t = tensor(1, 2, 10_000, 0.25, DType::F32);
        assert!(t.iter().all(|&v| (-0.25..0.25).contains(&v)));
        // Not degenerate: both halves of the interval are hit.
        assert!(t.iter().any(|&v| v > 0.2) && t.iter().any(|&v| v < -0.2));
    }
}
