//! The router's specialisation: its math ([`RouterSpec`]) and the size of A1's jobs (rows,
//! columns and K parts of the router tile).

use flashdmoe_core::config::{GroupScore, Groups, Routing, Scoring};
use flashdmoe_core::{DType, MoeConfig};

use super::tile::bk;
use crate::kernels::Defines;

/// The router's math a specialisation compiles in (core's [`Routing`], with the scaling factor
/// as the `f32` the kernel multiplies by, so the spec stays `Eq` and `Hash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouterSpec {
    /// How logits become scores.
    pub scoring: Scoring,
    /// A bias on the logits.
    pub router_bias: bool,
    /// A bias on the choice scores.
    pub selection_bias: bool,
    /// Grouped top-k.
    pub groups: Option<Groups>,
    /// Bits of the `f32` routed scaling factor (`1.0f32.to_bits()` for none).
    pub scaling_bits: u32,
}

impl RouterSpec {
    /// The paper's router: softmax, no biases, groups or scaling.
    pub const PAPER: RouterSpec = RouterSpec::of(&Routing::SOFTMAX);

    /// The specialisation of `routing` (its scaling rounded to `f32`, as the oracle applies it).
    pub const fn of(routing: &Routing) -> RouterSpec {
        RouterSpec {
            scoring: routing.scoring,
            router_bias: routing.router_bias,
            selection_bias: routing.selection_bias,
            groups: routing.groups,
            scaling_bits: (routing.scaling as f32).to_bits(),
        }
    }

    /// The router's `FDM_*` defines (config.cuh).
    pub(super) fn defines(&self, defines: Defines) -> Defines {
        let scoring = match self.scoring {
            Scoring::Softmax => 0,
            Scoring::Sigmoid => 1,
            Scoring::TopKSoftmax => 2,
        };
        let (count, keep, top2) = match self.groups {
            Some(g) => (g.count, g.keep, u32::from(g.score == GroupScore::Top2Sum)),
            None => (0, 0, 0),
        };
        defines
            .set("FDM_SCORING", scoring)
            .set("FDM_ROUTER_BIAS", u32::from(self.router_bias))
            .set("FDM_SEL_BIAS", u32::from(self.selection_bias))
            .set("FDM_GROUPS", count)
            .set("FDM_GROUP_KEEP", keep)
            .set("FDM_GROUP_SCORE", top2)
            .set("FDM_SCALING_BITS", format!("{:#010x}u", self.scaling_bits))
    }

    /// A label part, empty for the paper's router: e.g. `-sigmoid-rb-sb-g8k4t2-x2.5`.
    pub(super) fn label(&self) -> String {
        let mut out = String::new();
        if self.scoring != Scoring::Softmax {
            out.push('-');
            out.push_str(self.scoring.name());
        }
        if self.router_bias {
            out.push_str("-rb");
        }
        if self.selection_bias {
            out.push_str("-sb");
        }
        if let Some(g) = self.groups {
            let score = match g.score {
                GroupScore::Max => "max",
                GroupScore::Top2Sum => "t2",
            };
            out.push_str(&format!("-g{}k{}{score}", g.count, g.keep));
        }
        if self.scaling_bits != 1.0f32.to_bits() {
            out.push_str(&format!("-x{}", f32::from_bits(self.scaling_bits)));
        }
        out
    }
}

/// Rows of a layer's router jobs: 64, or 128 when 64-row jobs would take more than one wave of
/// `processors` and the router runs on 2-byte tensor cores. A router job's time is not
/// proportional to its rows (a 64-row job over K = 2048 takes ~14 µs whatever T is,
/// docs/dev/perf-notes.md v10), so T16384's 256 jobs in two waves (33 µs of A1) become 128 in
/// one. The f32 routers (TF32 and exact f32 layers) keep 64 rows: their tile is twice as
/// heavy in registers.
pub fn router_rows(tokens: u32, experts: u32, dtype: DType, processors: u32) -> u32 {
    let jobs = u64::from(tokens.div_ceil(64)) * u64::from(router_col_tiles(experts));
    if dtype.elem_bytes() == 2 && jobs > u64::from(processors) { 128 } else { 64 }
}

/// Columns of the router tile (`FDM_ROUTER_COLS`): 32 for a router of at most 32 experts, 64
/// up to 64, else 128. The router's columns are its experts: at E = 8 a 64-column tile spent
/// seven eighths of its mma work on padding (~9 µs of a T16384 job's ~24:
/// docs/dev/perf-notes.md lever 6a), and above 64 experts every column tile is a job that reads
/// its rows of x again (T16384 E128's A1 took 46 µs against E8's 26, run 57): 128 columns read
/// x half as often as 64 (DeepSeek-V3's 256 experts: twice instead of four times).
pub fn router_cols(router_experts: u32) -> u32 {
    match router_experts {
        0..=32 => 32,
        33..=64 => 64,
        _ => 128,
    }
}

/// Column tiles of a router of `router_experts` experts: the jobs a row tile of tokens makes.
fn router_col_tiles(router_experts: u32) -> u32 {
    router_experts.div_ceil(router_cols(router_experts))
}

/// The K split of a layer's router jobs: a 64x64 router job over K = 2048 takes ~14 µs
/// whatever T is (docs/dev/perf-notes.md v10), so when a layer's row tiles leave most
/// processors idle, each job's K is split in two as long as the jobs still fit one wave of
/// `processors` and each part keeps at least 4 k-steps of `bk`; at most 8 parts. Fixed per
/// layer (from its `tokens_per_rank`, not a call's tokens), so a token's logits, summed in
/// the same order, do not depend on how many tokens a call carries.
pub fn router_split(
    tokens: u32,
    experts: u32,
    hidden: u32,
    bk: u32,
    processors: u32,
    rows: u32,
) -> u32 {
    let jobs = u64::from(tokens.div_ceil(rows)) * u64::from(router_col_tiles(experts));
    let mut split = 1u32;
    while split < 8
        && jobs * u64::from(split) * 2 <= u64::from(processors)
        && hidden.is_multiple_of(bk * split * 2)
        && hidden / (split * 2) >= 4 * bk
    {
        split *= 2;
    }
    split
}

/// [`router_split`] of `config`'s layer with router jobs of `rows` rows.
pub(super) fn layer_router_split(config: &MoeConfig, processors: u32, rows: u32) -> u32 {
    router_split(
        config.tokens_per_rank,
        config.experts,
        config.hidden,
        bk(config.dtype),
        processors,
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{H200_PROCESSORS, MoeSpec};
    use flashdmoe_core::config::presets;

    #[test]
    fn router_jobs_split_k_while_they_fill_less_than_a_wave() {
        let h200 = H200_PROCESSORS;
        // The paper layer (H 2048, bf16: k-steps of 64): T128 E8 has 2 jobs, T4096 64,
        // T16384 256.
        assert_eq!(router_split(128, 8, 2048, 64, h200, 64), 8);
        assert_eq!(router_split(4096, 8, 2048, 64, h200, 64), 2);
        assert_eq!(router_split(16384, 8, 2048, 64, h200, 128), 1);
        // E 128 is one 128-column tile (router_cols): T4096 has 64 jobs, split in two like E8;
        // E 256 is two: 128 jobs already.
        assert_eq!(router_split(4096, 128, 2048, 64, h200, 64), 2);
        assert_eq!(router_split(4096, 256, 2048, 64, h200, 64), 1);
        // Each part keeps at least 4 k-steps and divides H: H 512 stops at 2, H 2880 (45
        // k-steps) is not split.
        assert_eq!(router_split(128, 8, 512, 64, h200, 64), 2);
        assert_eq!(router_split(128, 8, 2880, 64, h200, 64), 1);
        // The label names a split.
        let config =
            MoeConfig { tokens_per_rank: 128, hidden: 2048, inter: 2048, ..MoeConfig::default() };
        let spec = MoeSpec::for_config(&config, h200);
        assert_eq!(spec.router_split, 8);
        assert!(spec.label().ends_with("-rs8"), "{}", spec.label());
    }

    #[test]
    fn router_jobs_take_128_rows_when_64_would_need_two_waves() {
        let h200 = H200_PROCESSORS;
        assert_eq!(router_rows(128, 8, DType::Bf16, h200), 64);
        // T8192 E8: 128 jobs of 64 rows, one wave of 131 processors.
        assert_eq!(router_rows(8192, 8, DType::Bf16, h200), 64);
        assert_eq!(router_rows(16384, 8, DType::Bf16, h200), 128);
        assert_eq!(router_rows(16384, 8, DType::F16, h200), 128);
        // T4096 E128: one 128-column tile (router_cols), 64 jobs; E256: two, 128 jobs (one
        // wave); E384: three, 192 jobs of 64 rows (two waves), so 128 rows.
        assert_eq!(router_rows(4096, 128, DType::Bf16, h200), 64);
        assert_eq!(router_rows(4096, 256, DType::Bf16, h200), 64);
        assert_eq!(router_rows(4096, 384, DType::Bf16, h200), 128);
        // The f32 routers keep 64 rows.
        assert_eq!(router_rows(16384, 8, DType::F32, h200), 64);
        assert_eq!(router_rows(16384, 8, DType::F32Exact, h200), 64);
        let config = presets::preset("paper-t16384-e8").unwrap();
        let spec = MoeSpec::for_config(&config, h200);
        assert_eq!((spec.router_rows, spec.router_split), (128, 1));
        assert!(spec.label().ends_with("-rr128"), "{}", spec.label());
    }

    #[test]
    fn router_tile_is_32_columns_up_to_32_experts_64_up_to_64_else_128() {
        assert_eq!(router_cols(8), 32);
        assert_eq!(router_cols(32), 32);
        assert_eq!(router_cols(33), 64);
        assert_eq!(router_cols(64), 64);
        assert_eq!(router_cols(128), 128);
        assert_eq!(router_cols(384), 128);
    }
}
