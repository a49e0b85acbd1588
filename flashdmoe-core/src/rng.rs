//! The seeded generator shared with the PyTorch baselines: splitmix64 streams per tensor.
//!
//! Tensor `id` under seed `s` is the splitmix64 stream whose state starts at
//! [`tensor_start`]`(s, id) = mix(s ^ mix(id))` ([`mix`] is the splitmix64 finaliser). Element
//! `n` (row-major) takes the stream's `(n + 1)`-th output `x` and becomes `(2u - 1) * scale`
//! with `u = (x >> 40) * 2^-24`, rounded to the dtype. Because splitmix64's state only advances
//! by a constant, element `n` is `mix(start + (n + 1) * GAMMA)`: any element can be computed
//! directly, which lets large tensors be generated in parallel with identical results.
//!
//! Hashing the id into the start keeps the tensors' streams apart: with a start of
//! `s + id * GAMMA` (the rule before), tensor `id`'s element `n` was tensor `id + 1`'s element
//! `n - 1`. The states of all streams lie on one cycle of 2^64 steps of `GAMMA` (odd); hashed
//! starts land on it at unrelated places, so two streams of `n` elements overlap only when their
//! starts happen to lie within `n` steps of each other, a chance of about `2n / 2^64`.
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

    /// The stream of tensor `id` under `seed` (starting at [`tensor_start`]).
    pub const fn for_tensor(seed: u64, id: u64) -> SplitMix64 {
        SplitMix64::new(tensor_start(seed, id))
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

/// The start state of tensor `id`'s stream under `seed`: `mix(seed ^ mix(id))`.
#[inline]
pub const fn tensor_start(seed: u64, id: u64) -> u64 {
    mix(seed ^ mix(id))
}

/// `(x >> 40) * 2^-24`: a splitmix64 output as an `f32` in `[0, 1)` (exact).
#[inline]
pub fn unit(x: u64) -> f32 {
    (x >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// `len` elements of tensor `id` under `seed`: `dtype.round((2u - 1) * scale)` (module doc).
pub fn tensor(seed: u64, id: u64, len: usize, scale: f32, dtype: DType) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    fill(&mut out, seed, id, scale, dtype);
    out
}

/// Fills `out` with the first `out.len()` elements of [`tensor`] (for buffers the caller
/// allocated, e.g. fallibly).
pub fn fill(out: &mut [f32], seed: u64, id: u64, scale: f32, dtype: DType) {
    fill_at(out, seed, id, 0, scale, dtype);
}

/// Fills `out` with elements `offset .. offset + out.len()` of [`tensor`], without computing
/// the ones before (module doc: any element can be computed directly). One expert's rows of a
/// stacked tensor are generated this way, bitwise equal to the same rows of the whole tensor.
pub fn fill_at(out: &mut [f32], seed: u64, id: u64, offset: u64, scale: f32, dtype: DType) {
    let start = tensor_start(seed, id).wrapping_add(offset.wrapping_mul(GAMMA));
    fill_rows(out, 1, 1, |first, block| {
        let mut state = start.wrapping_add((first as u64).wrapping_mul(GAMMA));
        for v in block.iter_mut() {
            state = state.wrapping_add(GAMMA);
            *v = dtype.round((2.0 * unit(mix(state)) - 1.0) * scale);
        }
    });
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
    fn tensor_start_by_hand() {
        // Seed 42, id 3, computed with Python integers outside this code:
        // mix(3) = 0x1E535EEDE31428F0; 42 ^ that = 0x1E535EEDE31428DA; mix of that is the start.
        assert_eq!(mix(3), 0x1E53_5EED_E314_28F0);
        assert_eq!(tensor_start(42, 3), 0xC751_9020_FA2E_3192);
        let mut r = SplitMix64::for_tensor(42, 3);
        assert_eq!(r.next(), 0x1EC4_5C3B_4F12_9A97);
        assert_eq!(r.next(), 0x6B2C_AD79_74EF_DD1F);
        // Values: x >> 40 = 0x1EC45C = 2016348, so 2u - 1 = (2 * 2016348 - 2^24) / 2^24 =
        // -12744520 / 2^24; then 0x6B2CAD = 7023789 gives -2729638 / 2^24.
        let t = tensor(42, 3, 2, 1.0, DType::F32);
        assert_eq!(t, [-12_744_520.0 / 16_777_216.0, -2_729_638.0 / 16_777_216.0]);
        // bf16, 8 significant bits: 12744520 / 2^16 = 194.47 -> 194 (step 2^-8 in [0.5, 1));
        // 2729638 / 2^14 = 166.60 -> 167 (step 2^-10 in [0.125, 0.25)).
        assert_eq!(tensor(42, 3, 2, 1.0, DType::Bf16), [-194.0 / 256.0, -167.0 / 1024.0]);
        // Seed 0, id 0 starts at mix(0) = 0: Vigna's reference stream.
        assert_eq!(tensor_start(0, 0), 0);
    }

    #[test]
    fn streams_of_different_ids_do_not_overlap() {
        // splitmix64's output is a bijection of its state, so two streams share an output only
        // where they share a state, i.e. where one is the other shifted. Disjoint output sets
        // over the first 1000 elements therefore rule out every alignment with shift below
        // 1000. (The old start `seed + id * GAMMA` failed this: id's output n + 1 was id + 1's
        // output n.)
        let ids = [0, 1, 2, 3, 4, 5, 6, 7, 1000, 1001, 1002, 1003];
        for seed in [0, 7, 42, u64::MAX] {
            let mut seen = std::collections::HashMap::new();
            for id in ids {
                let mut r = SplitMix64::for_tensor(seed, id);
                for n in 0..1000 {
                    if let Some(other) = seen.insert(r.next(), (id, n)) {
                        panic!("seed {seed}: id {id} element {n} repeats {other:?}");
                    }
                }
            }
        }
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
    fn a_slice_generated_at_an_offset_equals_that_slice_of_the_tensor() {
        let whole = tensor(5, 2, 10_000, 0.125, DType::Bf16);
        for (offset, len) in [(0, 10_000), (1, 17), (4_096, 4_096), (9_999, 1), (123, 0)] {
            let mut part = vec![0.0; len];
            fill_at(&mut part, 5, 2, offset as u64, 0.125, DType::Bf16);
            assert_eq!(part, whole[offset..][..len], "offset {offset}");
        }
    }

    #[test]
    fn values_lie_in_the_scaled_interval() {
        let t = tensor(1, 2, 10_000, 0.25, DType::F32);
        assert!(t.iter().all(|&v| (-0.25..0.25).contains(&v)));
        // Not degenerate: both halves of the interval are hit.
        assert!(t.iter().any(|&v| v > 0.2) && t.iter().any(|&v| v < -0.2));
    }
}
