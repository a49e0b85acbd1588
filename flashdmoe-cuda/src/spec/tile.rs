//! The task tile's sizes: the K step, the widest output tile, the Hopper engine's GEMM0 width,
//! and GEMM0's column groups.

use flashdmoe_core::{Activation, DType, MoeConfig};

/// Weight bytes a group of GEMM0 column tiles may read ([`gemm0_group`]): about a quarter of
/// an H200's L2 (50-60 MB; an A100's is 40), leaving the rest to the group's A rows, the other
/// tasks' operands and the outputs.
pub const GEMM0_GROUP_BYTES: u64 = 12 << 20;

/// How many GEMM0 column tiles of `bn` columns a group holds ([`flashdmoe_proto::TileShape::gemm0_group`]): 0
/// (row tile by row tile, every column at once) where an expert's whole GEMM0 weights fit in
/// [`GEMM0_GROUP_BYTES`], else as many as fit (at least one). Published row tile by row tile,
/// a packet of R row tiles reads its expert's weights R times, and weights that do not fit in
/// L2 come from memory each time: Mixtral-8x7B's gate and up (224 MiB an expert, 8 row tiles
/// at T = 4096) ran its GEMM0 tiles at ~520 TFLOP/s while its GEMM1 (whose row tiles share
/// each weight tile while it is cached) ran at ~670 (perf-notes v24).
pub fn gemm0_group(config: &MoeConfig, bn: u32) -> u32 {
    let tile_bytes = gemm0_weight_bytes(config) / u64::from(config.inter.max(1)) * u64::from(bn);
    let columns = config.inter.div_ceil(bn.max(1));
    let group = (GEMM0_GROUP_BYTES / tile_bytes.max(1)).max(1);
    if group >= u64::from(columns) { 0 } else { group as u32 }
}

/// Bytes of one expert's GEMM0 weights (gate and up for gated experts, else up).
pub(super) fn gemm0_weight_bytes(config: &MoeConfig) -> u64 {
    let operands: u64 = if config.activation.is_gated() { 2 } else { 1 };
    operands
        * u64::from(config.inter)
        * u64::from(config.hidden)
        * u64::from(config.dtype.elem_bytes())
}

/// The widest output tile dividing H and I: 256 (the tile library's fastest, 128x256) unless
/// the experts are gated (two B tiles of 256 would not fit in shared memory), else 128, else
/// 64. Gated f32 experts stop at 64: their dual 128x128 accumulators need more than the 255
/// registers a thread has (ptxas spills).
pub(super) fn widest_bn(
    activation: Activation,
    dtype: DType,
    hidden: u32,
    inter: u32,
    ragged: bool,
) -> u32 {
    let fits = |bn: u32| covers(hidden, bn, ragged) && covers(inter, bn, ragged);
    let gated = activation.is_gated();
    let widest = match (gated, dtype.elem_bytes()) {
        (false, _) => 256,
        (true, 2) => 128,
        (true, _) => 64,
    };
    [256, 128].into_iter().find(|&bn| bn <= widest && fits(bn)).unwrap_or(64)
}

/// The Hopper engine's GEMM0 tile width: of `widest`, its halves down to 64, the one whose
/// GEMM0 phase would take least by bytes an SM receives: waves of tasks (`row_tiles` x
/// column tiles over `processors`) times a task's bytes per K row (`nb` weight tiles of `bn`
/// columns and its `a_rows` rows of A, the average packet's up to a tile); the wider on a tie.
/// A small batch's task is bound by what its SM receives (run 177: a T128 task ~38 GB/s, its
/// rows re-read by every column tile), a large one's by its FLOPs, which the same count ranks
/// alike (waves x bn). Runs 178-179 at T128 against the rule before it (bn halved while the
/// tasks filled under two waves), alternated: E8 64x128 against 64x64 −3%, E16 64x256 against
/// 64x64 −6%, E32 64x256 against 64x128 −5% (perf-notes v47 (c)).
pub(super) fn hopper_bn(
    widest: u32,
    nb: u32,
    inter: u32,
    row_tiles: u64,
    a_rows: u64,
    processors: u32,
) -> u32 {
    let cost = |bn: u32| {
        let tasks = row_tiles * u64::from(inter.div_ceil(bn));
        tasks.div_ceil(u64::from(processors.max(1))) * (u64::from(nb * bn) + a_rows)
    };
    let mut best = widest;
    let mut bn = widest / 2;
    while bn >= 64 {
        if cost(bn) < cost(best) {
            best = bn;
        }
        bn /= 2;
    }
    best
}

/// Whether column tiles of `bn` cover an output of `n` columns: exactly, or with a `ragged`
/// last tile that computes at most 1/16 of the output in vain.
pub(super) fn covers(n: u32, bn: u32, ragged: bool) -> bool {
    n.is_multiple_of(bn) || (ragged && u64::from(n.div_ceil(bn) * bn - n) * 16 <= u64::from(n))
}

/// K step of the tile library for a dtype: one 128-byte shared-memory row.
pub fn bk(dtype: DType) -> u32 {
    128 / dtype.elem_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::spec::MoeSpec;
    use flashdmoe_core::config::presets;

    #[test]
    fn gemm0_tasks_go_in_column_groups_only_where_an_experts_weights_overflow_l2() {
        let group = |name: &str| {
            let spec = MoeSpec::candidates(&presets::preset(name).unwrap(), 131, Arch::SM90)[0];
            (spec.tile.gemm0_group, spec.label())
        };
        // The paper layer (8 MiB of up weights an expert) and Qwen3 (6 MiB of gate and up) fit:
        // row tile by row tile, as before, and their labels do not change.
        for name in ["paper-t16384-e8", "paper-t4096-e128", "qwen3-30b-a3b", "olmoe-1b-7b"] {
            let (g, label) = group(name);
            assert_eq!(g, 0, "{name}: {label}");
            assert!(!label.contains("-cg"), "{label}");
        }
        // Mixtral: 2 MiB of gate and up a 128-column tile, 112 tiles: groups of 6.
        let (g, label) = group("mixtral-8x7b");
        assert_eq!(g, 6, "{label}");
        assert!(label.contains("-128x128-w256-cg6-wgmma"), "{label}");
        // The rule itself: as many column tiles as fit in the budget, at least one.
        let paper = presets::preset("paper-t4096-e8").unwrap();
        assert_eq!(gemm0_group(&paper, 256), 0);
        let huge = MoeConfig { hidden: 1 << 16, inter: 1 << 16, ..paper };
        assert_eq!(gemm0_group(&huge, 256), 1);
    }
}
