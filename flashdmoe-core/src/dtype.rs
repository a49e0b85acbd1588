//! Element types and their numerics: storage size, rounding, verification tolerance.
//!
//! Invariant: every host tensor of a layer (inputs, weights, outputs) holds `f32` values that
//! are exactly representable in the layer's [`DType`]; [`DType::round`] is the one function that
//! makes them so (round to nearest, ties to even, as `half` does and as CUDA's
//! `__float2bfloat16_rn` / `__float2half_rn` do). Rounding is idempotent.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};

use crate::parallel::fill_rows;

/// Element type of activations and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// bfloat16 storage, f32 accumulation (bf16 tensor cores on GPU).
    Bf16,
    /// IEEE half storage, f32 accumulation (f16 tensor cores on GPU).
    F16,
    /// f32 storage; TF32 tensor cores on GPU.
    F32,
    /// f32 storage and arithmetic without tensor cores (for verification).
    F32Exact,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 4] = [DType::Bf16, DType::F16, DType::F32, DType::F32Exact];

    /// Bytes of one stored element: 2 for bf16/f16, 4 for f32.
    pub const fn elem_bytes(self) -> u32 {
        match self {
            DType::Bf16 | DType::F16 => 2,
            DType::F32 | DType::F32Exact => 4,
        }
    }

    /// `v` rounded to the nearest value of this dtype (ties to even), as `f32`. Identity for
    /// the f32 dtypes. Out-of-range values become infinities, NaN stays NaN.
    #[inline]
    pub fn round(self, v: f32) -> f32 {
        match self {
            DType::Bf16 => bf16::from_f32(v).to_f32(),
            DType::F16 => f16::from_f32(v).to_f32(),
            DType::F32 | DType::F32Exact => v,
        }
    }

    /// Rounds every value of `values` in place (see [`DType::round`]).
    pub fn round_slice(self, values: &mut [f32]) {
        if matches!(self, DType::Bf16 | DType::F16) {
            values.iter_mut().for_each(|v| *v = self.round(*v));
        }
    }

    /// Whether `v` is exactly representable in this dtype.
    pub fn is_representable(self, v: f32) -> bool {
        let r = self.round(v);
        r.to_bits() == v.to_bits() || (r.is_nan() && v.is_nan())
    }

    /// Appends the little-endian storage bytes of `values` to `out`, each rounded to this
    /// dtype (see [`DType::round`]): the layout backends keep tensors in, in device memory and
    /// in the simulated heaps.
    pub fn encode_into(self, values: &[f32], out: &mut Vec<u8>) {
        out.reserve(values.len() * self.elem_bytes() as usize);
        match self {
            DType::Bf16 => values.iter().for_each(|&v| out.extend(bf16::from_f32(v).to_le_bytes())),
            DType::F16 => values.iter().for_each(|&v| out.extend(f16::from_f32(v).to_le_bytes())),
            DType::F32 | DType::F32Exact => {
                values.iter().for_each(|&v| out.extend(v.to_le_bytes()))
            }
        }
    }

    /// Writes the little-endian storage bytes of `values` into `out`, the bytes
    /// [`DType::encode_into`] appends, on several threads for large tensors (a host upload of
    /// a model's weights encodes gigabytes). Encodes `min(values.len(), out.len() / elem_bytes)`
    /// values; the rest of `out` is left as it was.
    pub fn encode_to(self, values: &[f32], out: &mut [u8]) {
        let eb = self.elem_bytes() as usize;
        let n = values.len().min(out.len() / eb);
        fill_rows(&mut out[..n * eb], eb, 4, |first, block| {
            let values = &values[first..];
            let elems = block.chunks_exact_mut(eb).zip(values);
            match self {
                DType::Bf16 => {
                    elems.for_each(|(b, &v)| b.copy_from_slice(&bf16::from_f32(v).to_le_bytes()))
                }
                DType::F16 => {
                    elems.for_each(|(b, &v)| b.copy_from_slice(&f16::from_f32(v).to_le_bytes()))
                }
                DType::F32 | DType::F32Exact => {
                    elems.for_each(|(b, &v)| b.copy_from_slice(&v.to_le_bytes()))
                }
            }
        });
    }

    /// Appends the `f32` values of little-endian storage bytes to `out` (a trailing partial
    /// element is ignored); the inverse of [`DType::encode_into`] for representable values.
    pub fn decode_into(self, bytes: &[u8], out: &mut Vec<f32>) {
        match self {
            DType::Bf16 => out
                .extend(bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::F16 => {
                out.extend(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()))
            }
            DType::F32 | DType::F32Exact => out.extend(
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }

    /// Verification tolerance: the largest accepted `|output - reference|`, relative to the
    /// largest reference magnitude of the same output row (see `oracle`).
    ///
    /// About four machine epsilons of the precision the GPU multiplies in: bf16 `4 * 2^-7`;
    /// f16 `4 * 2^-10`; f32 on TF32 tensor cores (10 mantissa bits) `4 * 2^-10`; exact f32,
    /// where only the f32-vs-f64 accumulation order differs, `2^-13`. The bound covers the
    /// agreed rounding points (h and y rounded to the dtype, so a backend's f32 accumulation
    /// may land one storage ulp away from the oracle's f64 one) with margin, while a wrong
    /// row, a missing slot or a wrong weight exceeds it by orders of magnitude.
    pub const fn tolerance(self) -> f64 {
        match self {
            DType::Bf16 => 1.0 / 32.0,
            DType::F16 | DType::F32 => 1.0 / 256.0,
            DType::F32Exact => 1.0 / 8192.0,
        }
    }

    /// The name used in config files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::F32Exact => "f32-exact",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`DType`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?} (expected bf16, f16, f32 or f32-exact)")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;

    /// Parses [`DType::name`]s, case-insensitively; also accepts `bfloat16`, `float16`, `fp16`,
    /// `half`, `float32`, `fp32`, `tf32` (= f32) and `f32_exact`.
    fn from_str(s: &str) -> Result<DType, UnknownDType> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            "f32" | "fp32" | "float32" | "tf32" => Ok(DType::F32),
            "f32-exact" | "f32_exact" => Ok(DType::F32Exact),
            _ => Err(UnknownDType(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_to_writes_encode_into_s_bytes_on_threads() {
        // 1.5 M values: above the parallel threshold, blocks split mid-tensor.
        let values: Vec<f32> = (0..1_500_001).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        for dtype in DType::ALL {
            let mut want = Vec::new();
            dtype.encode_into(&values, &mut want);
            let mut got = vec![0xAB; want.len() + 3];
            dtype.encode_to(&values, &mut got);
            assert_eq!(&got[..want.len()], &want[..], "{dtype:?}");
            assert_eq!(got[want.len()..], [0xAB; 3], "{dtype:?}: the tail is left as it was");
            // A short output takes the values that fit.
            let mut short = vec![0u8; 5];
            dtype.encode_to(&values, &mut short);
            let fit = 5 / dtype.elem_bytes() as usize * dtype.elem_bytes() as usize;
            assert_eq!(&short[..fit], &want[..fit], "{dtype:?}");
        }
    }

    #[test]
    fn encode_decode_round_trip_and_byte_layout() {
        let values = [1.0f32, -2.5, 0.1, 65504.0];
        for dtype in DType::ALL {
            let mut bytes = Vec::new();
            dtype.encode_into(&values, &mut bytes);
            assert_eq!(bytes.len(), values.len() * dtype.elem_bytes() as usize);
            let mut back = Vec::new();
            dtype.decode_into(&bytes, &mut back);
            let rounded: Vec<f32> = values.iter().map(|&v| dtype.round(v)).collect();
            assert_eq!(back, rounded, "{dtype:?}");
        }
        // bf16 1.0 is 0x3F80, little-endian.
        let mut bytes = Vec::new();
        DType::Bf16.encode_into(&[1.0], &mut bytes);
        assert_eq!(bytes, [0x80, 0x3F]);
    }

    #[test]
    fn rounding_is_nearest_even_and_idempotent() {
        // bf16 has 8 significant bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> even (1).
        assert_eq!(DType::Bf16.round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(DType::Bf16.round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        // f16 has 11 significant bits.
        assert_eq!(DType::F16.round(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(DType::F16.round(65520.0), f32::INFINITY);
        assert_eq!(DType::F32.round(0.1), 0.1);
        for d in DType::ALL {
            let r = d.round(0.123_456_79);
            assert_eq!(d.round(r), r);
            assert!(d.is_representable(r));
        }
        assert!(!DType::Bf16.is_representable(0.1));
        assert!(DType::F32Exact.is_representable(0.1));
    }

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>(), Ok(d));
            assert_eq!(d.elem_bytes() as usize, if d.name().starts_with("f32") { 4 } else { 2 });
        }
        assert_eq!("BFloat16".parse::<DType>(), Ok(DType::Bf16));
        assert!("int8".parse::<DType>().is_err());
    }

    #[test]
    fn round_slice_matches_round() {
        let mut v = vec![0.1, -2.7, 1e-9, 3.0e38];
        let expect: Vec<f32> = v.iter().map(|&x| DType::F16.round(x)).collect();
        DType::F16.round_slice(&mut v);
        assert_eq!(v, expect);
    }
}
