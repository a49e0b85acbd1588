//! The Hopper tile engine (`kernels/tile_wgmma.cuh`) as the host sees it: which tiles it
//! supports, the shared memory a block needs for one, and how deep its pipeline can be.
//!
//! Invariant: [`WgmmaTile::smem_bytes`] mirrors `Engine::kSmemBytes`; kernels built on the
//! engine `static_assert` that the host's `FDM_SMEM_BYTES` covers it, so an under-estimate is a
//! compile error, never an out-of-bounds shared-memory access.

use crate::kernels::Defines;

/// Threads of an engine block: one producer and two consumer warpgroups.
pub const ENGINE_THREADS: u32 = 384;

/// Static shared memory the kernels may declare beside their dynamic shared memory (every
/// variant declares at most 128 bytes; `tests/nvrtc_compile.rs` holds them to this).
pub const STATIC_SMEM_RESERVE: u32 = 1024;

/// Dynamic shared memory a block may use on an H100/H200 (227 KiB opt-in), less the kernels'
/// static shared variables.
pub const SMEM_LIMIT: u32 = 232_448 - STATIC_SMEM_RESERVE;

/// Bytes of one task-ring slot (`Engine::kRingPayload`).
const RING_PAYLOAD: u32 = 128;

/// One configuration of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WgmmaTile {
    /// Element bytes (2: bf16/f16; 4: f32 on tf32 tensor cores).
    pub elem_bytes: u32,
    /// Tile rows: 64, 128 or 256.
    pub bm: u32,
    /// Tile columns per B operand.
    pub bn: u32,
    /// B operands: 1, or 2 for SwiGLU's gate and up.
    pub nb: u32,
    /// Pipeline stages.
    pub stages: u32,
    /// Bytes of a row the epilogue stages at a time (128, 256 or 512; `FDM_STAGE_COLS`).
    pub stage_bytes: u32,
    /// Each consumer warpgroup owns whole tiles, the two in turn (`FDM_PINGPONG`; 128-row
    /// tiles; the tile bench only so far: docs/dev/pingpong-gemm1.md). `false`: both
    /// warpgroups share every tile (the cooperative engine).
    pub pingpong: bool,
}

impl WgmmaTile {
    /// Why the engine cannot run this tile, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if !matches!(self.elem_bytes, 2 | 4) {
            return Some(format!("{}-byte elements (2 or 4)", self.elem_bytes));
        }
        if !matches!(self.bm, 64 | 128 | 256) {
            return Some(format!("bm {} (64, 128 or 256)", self.bm));
        }
        if !matches!(self.nb, 1 | 2) {
            return Some(format!("{} B operands (1 or 2)", self.nb));
        }
        if self.pingpong && self.bm != 128 {
            return Some(format!(
                "bm {} with ping-pong warpgroups (128: both slabs a warpgroup)",
                self.bm
            ));
        }
        let per_group = self.group_cols();
        if ![32, 64, 128, 192, 256].contains(&per_group) {
            return Some(format!(
                "bn {} gives {per_group} columns per warpgroup (32, 64, 128, 192 or 256)",
                self.bn
            ));
        }
        // A consumer thread holds slabs x columns / 2 accumulators a B operand; past 192 the
        // consumers' registers (at most 232 with a 40-register producer) cannot hold them.
        let accumulators = self.accumulators();
        if accumulators > 192 {
            return Some(format!("{accumulators} accumulators a consumer thread (at most 192)"));
        }
        let chunk_cols = self.bn.min(self.stage_bytes / self.elem_bytes);
        if !matches!(self.stage_bytes, 128 | 256 | 512)
            || self.bn * self.elem_bytes < self.stage_bytes
            || !self.bn.is_multiple_of(chunk_cols)
        {
            return Some(format!(
                "stage_bytes {} (128, 256 or 512, at most a tile row)",
                self.stage_bytes
            ));
        }
        if !(2..=8).contains(&self.stages) {
            return Some(format!("{} stages (2..=8)", self.stages));
        }
        None
    }

    /// f32 accumulators a consumer thread holds: slabs x its columns / 2, a B operand each.
    pub fn accumulators(&self) -> u32 {
        self.slabs() * self.group_cols() / 2 * self.nb
    }

    /// 64-row slabs a consumer warpgroup owns (`Engine::kSlabs`): 2 for 256-row tiles and
    /// for a ping-pong warpgroup's whole 128-row tile.
    pub fn slabs(&self) -> u32 {
        if self.bm == 256 || self.pingpong { 2 } else { 1 }
    }

    /// Columns a consumer warpgroup owns (`Engine::kN`): the tile's, or half of them when a
    /// 64-row tile splits its columns between the two warpgroups; all of them (ping-pong).
    pub fn group_cols(&self) -> u32 {
        if self.pingpong {
            return self.bn;
        }
        let wg_m = self.bm / (64 * self.slabs());
        self.bn * wg_m / 2
    }

    /// Dynamic shared memory of a block (mirrors `Engine::kSmemBytes`).
    pub fn smem_bytes(&self) -> u32 {
        let round = |x: u32, a: u32| x.div_ceil(a) * a;
        let stage = self.bm * 128 + self.nb * self.bn * 128;
        let chunk_cols = self.bn.min(self.stage_bytes / self.elem_bytes);
        // One staging buffer, or one a warpgroup (ping-pong: `Engine::kStagingBytes`).
        let staging = self.bm * chunk_cols * self.elem_bytes * if self.pingpong { 2 } else { 1 };
        let barriers = round(self.stages * stage + staging, 16);
        let ring = round(barriers + 8 * (2 * self.stages + 4), 64);
        // Tiles of more than 128 rows keep the producer's row indices in shared memory
        // (`Engine::kRowTableBytes`: a word a row and producer thread chunk).
        let row_table = if self.bm > 128 { self.bm / 16 * 128 * 4 } else { 0 };
        ring + 2 * RING_PAYLOAD + row_table + 1024
    }

    /// The pipeline and epilogue staging of a tile that fit in `limit` bytes: the widest
    /// staged bytes (512, 256, 128, as wide as a tile row allows) that leave room for
    /// [`Self::MIN_STAGES`] stages, at the most stages they leave room for; failing that, the
    /// deepest pipeline that fits at all. On an H200 a 128x256 bf16 tile gets 4 stages and
    /// 256-byte staging (whole-row staging leaves room for 3): level in the tile bench with B
    /// in L2, faster in the MoE kernel where B streams from HBM (T4096 E32 -4.5%, T16384 E128
    /// -2.5%; perf-notes v41 (c)); a 64x256 tile keeps whole-row staging at 4 stages (5 with
    /// 256-byte staging measured level to 1% slower); a small tile (64x64 at T = 128) gets 8,
    /// because its tasks stream weights and the bytes in flight bound their rate (perf-notes
    /// v23).
    pub fn deepest(elem_bytes: u32, bm: u32, bn: u32, nb: u32, limit: u32) -> Option<WgmmaTile> {
        let at = |stages, stage_bytes| {
            let t = WgmmaTile { elem_bytes, bm, bn, nb, stages, stage_bytes, pingpong: false };
            (t.unsupported().is_none() && t.smem_bytes() <= limit).then_some(t)
        };
        let widths = [512, 256, 128];
        let deepest_at = |stage_bytes| (2..=8).rev().find_map(|stages| at(stages, stage_bytes));
        widths.into_iter().filter_map(deepest_at).find(|t| t.stages >= Self::MIN_STAGES).or_else(
            || (2..=8).rev().find_map(|stages| widths.into_iter().find_map(|b| at(stages, b))),
        )
    }

    /// Stages [`Self::deepest`] gives up staging width for.
    pub const MIN_STAGES: u32 = 4;

    /// The engine's `-D` defines of this tile (the caller sets the shape's own). More than
    /// 128 accumulators a consumer thread (256x192: 192) take CUTLASS's split of the
    /// registers, 40 for the producer and 232 for the consumers: only a producer that keeps
    /// few values (the tile bench's; the MoE kernel's needs 88, `kProducerRegs`) fits in 40.
    /// Two slabs of 32 columns and two B operands (256x64 SwiGLU: 128) keep the default split.
    pub fn defines(&self, defines: Defines) -> Defines {
        let defines =
            defines.set("FDM_STAGES", self.stages).set("FDM_STAGE_COLS", self.stage_bytes);
        let defines = if self.pingpong { defines.set("FDM_PINGPONG", 1) } else { defines };
        if self.accumulators() > 128 {
            defines.set("FDM_PRODUCER_REGS", 40).set("FDM_CONSUMER_REGS", 232)
        } else {
            defines
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepest_tiles_fit_and_prefer_stages_to_wide_staging() {
        let t = WgmmaTile::deepest(2, 128, 256, 1, SMEM_LIMIT).unwrap();
        assert_eq!((t.stages, t.stage_bytes), (4, 256));
        // The widest staging that fits beside the depth.
        // A 64x256 tile keeps whole-row staging at 4 stages (5 would need 256-byte staging).
        let t = WgmmaTile::deepest(2, 64, 256, 1, SMEM_LIMIT).unwrap();
        assert_eq!((t.stages, t.stage_bytes), (4, 512));
        // 200 000 bytes hold no 4 stages (192 KiB and at least 16 of staging), nor 3 with
        // whole-row staging (144 + 64 KiB): 3 with 256-byte staging.
        let t = WgmmaTile::deepest(2, 128, 256, 1, 200_000).unwrap();
        assert_eq!((t.stages, t.stage_bytes), (3, 256));
        let swiglu = WgmmaTile::deepest(2, 128, 128, 2, SMEM_LIMIT).unwrap();
        assert_eq!((swiglu.stages, swiglu.stage_bytes), (4, 256));
        // Small tiles stream weights: as many stages as the engine takes.
        let small = WgmmaTile::deepest(2, 64, 64, 1, SMEM_LIMIT).unwrap();
        assert_eq!((small.stages, small.stage_bytes), (8, 128));
        for (eb, bm, bn, nb) in
            [(2, 64, 64, 1), (2, 64, 256, 2), (4, 128, 256, 1), (4, 128, 128, 2)]
        {
            let t = WgmmaTile::deepest(eb, bm, bn, nb, SMEM_LIMIT).unwrap();
            assert!(t.smem_bytes() <= SMEM_LIMIT && t.stages >= 2, "{t:?}");
        }
    }

    #[test]
    fn unsupported_tiles_say_why() {
        let ok = WgmmaTile {
            elem_bytes: 2,
            bm: 128,
            bn: 256,
            nb: 1,
            stages: 3,
            stage_bytes: 512,
            pingpong: false,
        };
        assert_eq!(ok.unsupported(), None);
        assert!(WgmmaTile { bm: 96, ..ok }.unsupported().unwrap().contains("bm 96"));
        // 256-row tiles: two slabs a warpgroup, so at most 192 columns (192 accumulators).
        let big = WgmmaTile { bm: 256, bn: 192, stage_bytes: 128, ..ok };
        assert_eq!(big.unsupported(), None);
        assert_eq!((big.slabs(), big.group_cols()), (2, 192));
        assert!(WgmmaTile { bn: 256, ..big }.unsupported().unwrap().contains("256 accumulators"));
        // Staged chunks must divide the tile's columns (192 is no multiple of 128).
        assert!(WgmmaTile { stage_bytes: 256, ..big }.unsupported().is_some());
        assert!(WgmmaTile::deepest(2, 256, 192, 1, SMEM_LIMIT).unwrap().stages >= 3);
        assert!(WgmmaTile { bn: 96, ..ok }.unsupported().unwrap().contains("bn 96"));
        assert!(WgmmaTile { bn: 32, stage_bytes: 128, ..ok }.unsupported().is_some());
        assert!(WgmmaTile { stages: 1, ..ok }.unsupported().is_some());
        // Ping-pong: a warpgroup owns a whole 128-row tile (two slabs, every column), so 128
        // columns are 128 accumulators and 256 too many; other heights are refused.
        let pp = WgmmaTile { bn: 128, stages: 6, stage_bytes: 256, pingpong: true, ..ok };
        assert_eq!(pp.unsupported(), None);
        assert_eq!((pp.slabs(), pp.group_cols(), pp.accumulators()), (2, 128, 128));
        assert!(WgmmaTile { bn: 256, ..pp }.unsupported().unwrap().contains("256 accumulators"));
        assert!(WgmmaTile { bm: 64, ..pp }.unsupported().unwrap().contains("ping-pong"));
        // Two staging buffers: 6 stages of 32 KiB and 2 x 32 KiB of staging fit no H200 block,
        // 6 stages with 128-byte staging do.
        assert!(pp.smem_bytes() > SMEM_LIMIT);
        assert!(WgmmaTile { stage_bytes: 128, ..pp }.smem_bytes() <= SMEM_LIMIT);
        assert_eq!(
            WgmmaTile { stage_bytes: 128, ..pp }.smem_bytes()
                - WgmmaTile { stage_bytes: 128, pingpong: false, ..pp }.smem_bytes(),
            128 * 128
        );
    }
}
