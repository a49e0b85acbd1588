//! The MoE kernel's specialisation: which `-D` defines a config compiles to, the tile and the
//! tile engine the kernel uses for it, and the representative variants CI compile-checks.
//!
//! Two engines run the expert GEMMs ([`TileEngine`]): the Hopper engine (wgmma fed by TMA,
//! producer/consumer warpgroups, 384 threads a block; `sm_90a` only), which a layer on an
//! H100/H200 tries first, and the portable mma.sync tiles (256 threads a block; sm_80 and
//! newer), which every other GPU runs and which back the Hopper engine up.
//!
//! Invariants:
//! * Shapes (H, I, E, k), dtype, activation, bias, renormalisation and the task tile are
//!   compile-time in the kernel (`FDM_*` defines); tokens per rank, capacity, world size and
//!   placement stay run-time, so one compilation serves every batch size of a model. A layer
//!   with shared experts runs them as `m` virtual experts a rank (core's `virtual_experts`):
//!   its protocol's `E' = E + P m` experts and `k + m` slots are compile-time too, so its
//!   kernel is specialised for its world size as well.
//! * [`MoeSpec::smem_bytes`] is the dynamic shared memory the kernel needs; the kernel
//!   `static_assert`s that `FDM_SMEM_BYTES` (passed from here) covers its tile configs, so the
//!   host and device cannot disagree.

//!
//! The parts (files under `spec/`): `choice` (the engine, combine, pair and tile choices),
//! `computed` (which layers the kernel computes), `router` (the router's math and A1's jobs),
//! `tile` (the task tile's sizes), `variants` (what CI compile-checks); here the
//! specialisation itself ([`MoeSpec`]: its candidates, defines, label and shared memory) and
//! [`compile_first`].

mod choice;
mod computed;
mod router;
mod tile;
mod variants;

pub use choice::{CombineForm, EngineChoice, PairChoice, TileChoice, TileEngine};
pub use computed::{COMPUTED_FEATURES, MAX_GROUPS, check_computed, computes};
pub use router::{RouterSpec, router_cols, router_rows, router_split};
pub use tile::{GEMM0_GROUP_BYTES, bk, gemm0_group};
pub use variants::{check_layer, chosen_tile_kinds, shared_kinds, variants};

use flashdmoe_core::virtual_experts::VirtualExperts;
use flashdmoe_core::{Activation, DType, MoeConfig, SharedGate};
use flashdmoe_proto::TileShape;

use crate::arch::Arch;
use crate::engine::{ENGINE_THREADS, SMEM_LIMIT, WgmmaTile};
use crate::error::CudaError;
use crate::jit::{Compiled, Jit};
use crate::kernels::{Defines, KernelVariant, MOE, Targets};
use router::layer_router_split;
use tile::{covers, gemm0_weight_bytes, hopper_bn, widest_bn};

/// Threads per block of the MoE kernel on the mma.sync engine (the tile library's 8 warps).
pub const MMA_SYNC_THREADS: u32 = 256;

/// Tokens per routing chunk (`FDM_CHUNK`): the unit of the deterministic position count.
pub const ROUTING_CHUNK: u32 = 128;

/// Pipeline stages of every mma.sync tile config the kernel instantiates.
const STAGES: u32 = 4;

/// One specialisation of the MoE kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MoeSpec {
    /// Element type.
    pub dtype: DType,
    /// Activation.
    pub activation: Activation,
    /// Expert biases.
    pub bias: bool,
    /// Renormalised combine weights.
    pub renormalize: bool,
    /// The router's scoring, biases, groups and scaling.
    pub router: RouterSpec,
    /// Hidden size H.
    pub hidden: u32,
    /// Intermediate size I.
    pub inter: u32,
    /// Experts of the protocol `E'` (`FDM_E`: packets, tables, placement): the router's `E`,
    /// plus the shared experts' `P m` virtual experts (core's `virtual_experts`).
    pub experts: u32,
    /// Experts the router scores `E` (`FDM_ROUTER_E`: the router GEMM and its math).
    pub router_experts: u32,
    /// Experts per token k the router chooses (`FDM_TOPK`).
    pub top_k: u32,
    /// Slots a token `k + m` (`FDM_SLOTS`): the router's, then the `m` parts of the shared
    /// experts (`FDM_SHARED = m`).
    pub slots: u32,
    /// The shared experts' sigmoid gate (`FDM_SHARED_GATE`, Qwen's `shared_expert_gate`).
    pub shared_gate: bool,
    /// Task tile.
    pub tile: TileShape,
    /// The engine that runs the tiles.
    pub engine: TileEngine,
    /// K parts of a router job (`FDM_ROUTER_SPLIT`, a power of two, 1 = none): A1 runs
    /// `row tiles x column tiles x router_split` jobs into as many partial logit arrays,
    /// which A2 sums in a fixed order ([`router_split`]).
    pub router_split: u32,
    /// Rows of a router job: the router tile's BM (`FDM_ROUTER_ROWS`, 64 or 128;
    /// [`router_rows`]).
    pub router_rows: u32,
    /// How combine tasks read the returned rows ([`Self::with_combine`] keeps `Streamed` only
    /// where it applies).
    pub combine: CombineForm,
    /// Paired GEMM0 tasks (`FDM_PAIRS`, [`Self::with_pairs`]): the kernel runs in 2-CTA
    /// clusters, and the two processors of a cluster compute row tiles 2p and 2p + 1 of one
    /// column tile together, each loading half of every weight tile and multicasting it, so
    /// an expert's weights are read once for two row tiles (docs/dev/paired-tasks.md).
    pub pairs: bool,
}

impl MoeSpec {
    /// The specialisation for `config` on a GPU with `processors` processor blocks: `bm` = 64
    /// when the average packet is under 128 rows (small batches waste less of a tile), else
    /// 128; `bn` the widest that divides H and I (multiples of 64 by config validation), halved
    /// while the GEMM0 tasks would not fill two waves of processors (on the Hopper engine: the
    /// width whose waves of bytes are fewest, `hopper_bn`).
    ///
    /// Shared experts count as their virtual experts when they split into them
    /// ([`VirtualExperts::of`]); a layer whose shared experts do not is refused by
    /// [`check_computed`] before any spec is chosen.
    pub fn for_config(config: &MoeConfig, processors: u32) -> MoeSpec {
        Self::sized(config, processors, false)
    }

    /// [`Self::for_config`], or with `hopper` the Hopper engine's tile shape, which differs
    /// twice:
    /// - Ragged column tiles: where H or I is no multiple of the widest tile, a wider tile
    ///   whose last column tile is ragged and wastes at most 1/16 of the output (the Hopper
    ///   engine masks it; gpt-oss's 2880 then takes 128-column tiles, 22.5 of them, instead
    ///   of 64).
    /// - Experts whose GEMM0 weights overflow their share of the L2 ([`GEMM0_GROUP_BYTES`])
    ///   take 64-row tiles only where the average packet fits one (elsewhere: under 128 rows).
    ///   A 128-row tile whose second 64 rows are empty does not multiply them
    ///   (`tile_wgmma.cuh` `consume`), while an expert spread over two 64-row tiles reads its
    ///   weights twice, from memory when they do not stay in L2: Kimi-K2 (~95 rows an expert
    ///   at T 4096, 56 MiB of GEMM0 weights) is bound by those reads (perf-notes v29 (g)).
    ///   Small experts keep 64-row tiles (the 128x64 image of the GPU check's small shared
    ///   layers spills: [`shared_kinds`]).
    fn sized(config: &MoeConfig, processors: u32, hopper: bool) -> MoeSpec {
        let virtual_experts = VirtualExperts::of(config).ok().flatten();
        let (experts, slots) =
            virtual_experts.map_or((config.experts, config.top_k), |v| (v.experts(), v.slots()));
        let avg_rows = config.tokens_per_rank as u64 * slots as u64 / experts.max(1) as u64;
        let one_tile =
            if hopper && gemm0_weight_bytes(config) > GEMM0_GROUP_BYTES { 65 } else { 128 };
        let bm = if avg_rows < one_tile { 64 } else { 128 };
        let widest =
            widest_bn(config.activation, config.dtype, config.hidden, config.inter, hopper);
        let row_tiles = experts as u64 * avg_rows.div_ceil(bm as u64).max(1);
        let bn = if hopper {
            let nb = if config.activation.is_gated() { 2 } else { 1 };
            hopper_bn(widest, nb, config.inter, row_tiles, avg_rows.min(bm as u64), processors)
        } else {
            // Small batches are weight-bandwidth bound: more, narrower tasks read the weights
            // with more SMs at once.
            let mut bn = widest;
            while bn > 64
                && row_tiles * u64::from(config.inter.div_ceil(bn)) < 2 * u64::from(processors)
            {
                bn /= 2;
            }
            bn
        };
        let router_rows =
            router_rows(config.tokens_per_rank, config.experts, config.dtype, processors);
        MoeSpec {
            dtype: config.dtype,
            activation: config.activation,
            bias: config.bias,
            renormalize: config.renormalize,
            router: RouterSpec::of(&config.routing),
            hidden: config.hidden,
            inter: config.inter,
            experts,
            router_experts: config.experts,
            top_k: config.top_k,
            slots,
            shared_gate: virtual_experts.is_some()
                && config.shared.is_some_and(|s| s.gate == SharedGate::Sigmoid),
            tile: TileShape::new(bm, bn, bk(config.dtype))
                .with_gemm0_group(gemm0_group(config, bn)),
            engine: TileEngine::MmaSync,
            router_split: layer_router_split(config, processors, router_rows),
            router_rows,
            combine: CombineForm::Registers,
            pairs: false,
        }
    }

    /// This specialisation with combine tasks in `form`, where it applies: `Streamed` needs the
    /// Hopper engine, 2-byte elements, 4+ slots a token and a token's slot segments within one
    /// pipeline stage (`kernels/combine_stream.cuh`, whose static_assert checks the same);
    /// elsewhere the registers' form.
    pub fn with_combine(self, form: CombineForm) -> MoeSpec {
        let streams = match (form, self.engine) {
            (CombineForm::Streamed, TileEngine::Wgmma(t)) => {
                let stage = t.bm * 128 + t.nb * t.bn * 128;
                let segment = self.tile.bn_hidden * self.dtype.elem_bytes();
                self.dtype.elem_bytes() == 2 && self.slots >= 4 && self.slots * segment <= stage
            }
            _ => false,
        };
        let combine = if streams { CombineForm::Streamed } else { CombineForm::Registers };
        MoeSpec { combine, ..self }
    }

    /// This specialisation with paired GEMM0 tasks (`pairs`), or why it cannot have them: the
    /// Hopper engine's cooperative tile, whose B tiles split into two halves of whole 8-row
    /// swizzle atoms (bn a multiple of 16). Whether a layer's blocks can pair (even blocks per
    /// rank) is the launch's to check (`CudaBackend`).
    pub fn with_pairs(self) -> Result<MoeSpec, String> {
        match self.engine {
            TileEngine::Wgmma(t) if !t.pingpong && t.bn % 16 == 0 => {
                Ok(MoeSpec { pairs: true, ..self })
            }
            TileEngine::Wgmma(t) => Err(format!(
                "paired tasks need the Hopper engine's cooperative tile with bn a multiple of 16 \
                 (this layer's: {}x{}{})",
                t.bm,
                t.bn,
                if t.pingpong { ", ping-pong" } else { "" }
            )),
            TileEngine::MmaSync => {
                Err("paired tasks run on the Hopper engine (sm_90a), not mma.sync".into())
            }
        }
    }

    /// Rows of a weight tile's TMA box: the tile's columns, or half of them with paired tasks
    /// (each CTA of a cluster loads one half of every B tile; a solo task loads both halves).
    pub fn weight_box_rows(&self) -> u32 {
        if self.pairs { self.tile.bn / 2 } else { self.tile.bn }
    }

    /// This Hopper specialisation with half its epilogue's staged bytes, if the engine takes
    /// that (at least 128) and it fits (`None` on the mma.sync engine).
    pub fn with_narrower_staging(&self) -> Option<MoeSpec> {
        let TileEngine::Wgmma(t) = self.engine else { return None };
        self.with_engine_tile(WgmmaTile { stage_bytes: t.stage_bytes / 2, ..t })
    }

    /// This specialisation on the Hopper engine's `tile`, if the engine takes it and it fits.
    fn with_engine_tile(&self, tile: WgmmaTile) -> Option<MoeSpec> {
        let spec = MoeSpec { engine: TileEngine::Wgmma(tile), ..*self };
        (tile.unsupported().is_none() && spec.smem_bytes() <= SMEM_LIMIT).then_some(spec)
    }

    /// The same tile on the Hopper engine, with the deepest pipeline that fits; `None` for
    /// exact f32 (no tensor cores) or a tile the engine does not support. A gated layer's
    /// GEMM1 (and combine) tiles are twice as wide as its GEMM0 tiles where that divides H
    /// ([`TileShape::bn_hidden`]): a gated GEMM0 tile reads two weight tiles of `bn` rows a
    /// stage, so a GEMM1 tile reading the two `bn`-row halves of `2 bn` down-weight rows takes
    /// the same shared memory and registers, and halves the GEMM1 and combine tasks
    /// (perf-notes v18). Not for gpt-oss's experts: with their clamped SwiGLU and biases the
    /// wide image spills (20 bytes at H 2048), and their H (2880) is no multiple of 256 anyway.
    pub fn on_hopper(&self) -> Option<MoeSpec> {
        if self.dtype == DType::F32Exact {
            return None;
        }
        let nb = if self.activation.is_gated() { 2 } else { 1 };
        let (eb, bm, bn) = (self.dtype.elem_bytes(), self.tile.bm, self.tile.bn);
        let oss = matches!(self.activation, Activation::SwigluOss(_));
        let wide = nb == 2 && !oss && self.hidden.is_multiple_of(2 * bn);
        let bn_hidden = if wide { 2 * bn } else { bn };
        let with = |limit| {
            let tile = WgmmaTile::deepest(eb, bm, bn, nb, limit)?;
            Some(MoeSpec {
                engine: TileEngine::Wgmma(tile),
                tile: self.tile.with_bn_hidden(bn_hidden),
                ..*self
            })
        };
        // A large top-k's combine slots may not fit in the staging buffer and need room of
        // their own: then a shallower pipeline.
        let spec = with(SMEM_LIMIT)?;
        if spec.smem_bytes() <= SMEM_LIMIT {
            return Some(spec);
        }
        with(SMEM_LIMIT.checked_sub(bm * self.slots * 16)?).filter(|s| s.smem_bytes() <= SMEM_LIMIT)
    }

    /// The Hopper engine's specialisation of `config` with the caller's tile in place of the
    /// chosen one (everything else as [`Self::candidates`] would choose it), or why there is
    /// none: a GPU other than sm_90, exact f32 (no tensor cores), `bm` not 64, 128 or 256,
    /// `bn` not a multiple of 64 up to 256 or not covering H and I (a ragged last column tile
    /// may waste at most 1/16), or a tile the engine cannot hold in shared memory and
    /// registers. Whether it compiles without spills is [`compile_first`]'s to say.
    pub fn with_tile(
        config: &MoeConfig,
        processors: u32,
        arch: Arch,
        choice: TileChoice,
    ) -> Result<MoeSpec, String> {
        let TileChoice { bm, bn, stages } = choice;
        if arch.major != 9 {
            return Err(format!(
                "a chosen tile runs on the Hopper engine, which needs sm_90, not {arch}"
            ));
        }
        if !matches!(bm, 64 | 128 | 256) {
            return Err(format!("{choice}: rows must be 64, 128 or 256"));
        }
        // 192 columns are a wgmma shape (the tile bench runs them), not a MoE tile: the combine
        // maps a row's 16-byte pieces onto the consumers' 256 threads (combine.cuh,
        // combine_stream.cuh), so a row must be a power of two of them.
        if !matches!(bn, 64 | 128 | 256) {
            return Err(format!(
                "{choice}: columns must be 64, 128 or 256 (the combine's threads split a row \
                 in a power of two of 16-byte pieces)"
            ));
        }
        for (name, n) in [("hidden", config.hidden), ("inter", config.inter)] {
            if !covers(n, bn, true) {
                return Err(format!(
                    "{choice}: {bn}-column tiles do not cover {name} = {n} (a ragged last tile may waste at most 1/16)"
                ));
            }
        }
        let base = MoeSpec::sized(config, processors, true);
        let tile =
            TileShape::new(bm, bn, bk(config.dtype)).with_gemm0_group(gemm0_group(config, bn));
        let spec = MoeSpec { tile, ..base }.on_hopper().ok_or_else(|| {
            format!(
                "{choice}: the Hopper engine has no such tile for a {} {} layer of top-{} ({} slots) \
                 within {SMEM_LIMIT} bytes of shared memory and its registers",
                config.dtype.name(),
                config.activation.name(),
                config.top_k,
                base.slots
            )
        })?;
        match stages {
            None => Ok(spec),
            Some(stages) => spec.with_stages(stages).ok_or_else(|| {
                format!(
                    "{choice}: {stages} stages do not fit this layer's tile in {SMEM_LIMIT} bytes of \
                     shared memory with any epilogue staging (the engine takes 2..=8 stages; the \
                     deepest that fits is {})",
                    (2..=8).rev().find(|&n| spec.with_stages(n).is_some()).unwrap_or(spec.stages())
                )
            }),
        }
    }

    /// This Hopper specialisation with `stages` pipeline stages and the widest epilogue
    /// staging that fits beside them (`None` on the mma.sync engine, or when none fits).
    pub fn with_stages(&self, stages: u32) -> Option<MoeSpec> {
        let TileEngine::Wgmma(t) = self.engine else { return None };
        [512, 256, 128]
            .into_iter()
            .find_map(|stage_bytes| self.with_engine_tile(WgmmaTile { stages, stage_bytes, ..t }))
    }

    /// Pipeline stages of this specialisation's engine (the mma.sync engine's fixed depth).
    pub fn stages(&self) -> u32 {
        match self.engine {
            TileEngine::Wgmma(t) => t.stages,
            TileEngine::MmaSync => STAGES,
        }
    }

    /// The specialisations to try for `config` on a GPU of architecture `arch` with
    /// `processors` processor blocks, in order of preference: on Hopper (sm_90) the Hopper
    /// engine's ([`Self::on_hopper`]); then [`Self::for_config`]; then (when that has 128-row
    /// tiles) the same with 64-row tiles, whose smaller accumulators leave ptxas room when the
    /// wide tile spills (see [`compile_first`]).
    pub fn candidates(config: &MoeConfig, processors: u32, arch: Arch) -> Vec<MoeSpec> {
        let first = MoeSpec::for_config(config, processors);
        let mut out = Vec::new();
        if arch.major == 9 {
            let hopper = MoeSpec::sized(config, processors, true).on_hopper();
            out.extend(hopper);
            // 128-row router jobs of 128 columns (E > 64 at large T) leave the kernel's
            // phase A at the edge of its 168 registers: the paper layer's T16384 E128 image
            // spilled 8 bytes (the thread index) and ran on mma.sync, 1.71 ms against ~1.2
            // (run 118). The variant's own fallback (`variant`, FDM_FRESH_TID) now compiles it;
            // should that spill too, the same tile with 64-row router jobs (A1 in two waves,
            // run 119: 1.169 ms) comes next, before mma.sync.
            out.extend(hopper.filter(|h| h.router_rows == 128).map(|h| MoeSpec {
                router_rows: 64,
                router_split: layer_router_split(config, processors, 64),
                ..h
            }));
            // Then each of those with half the epilogue's staged bytes (fewer accumulators
            // staged at once, fewer copy-out stores in flight a thread), before mma.sync (~1.5x
            // slower, run 118): a safety net. While a branch in the consumers' hand-off was not
            // provably warp-uniform, the paper layers' images at E >= 64 spilled 24 bytes
            // through their fallbacks and compiled clean this way (perf-notes v38 (d)).
            let hopper_specs = out.clone();
            out.extend(hopper_specs.iter().filter_map(MoeSpec::with_narrower_staging));
        }
        out.push(first);
        if first.tile.bm == 128 {
            out.push(MoeSpec { tile: TileShape { bm: 64, ..first.tile }, ..first });
        }
        out
    }

    /// The architecture to compile this specialisation for on a device of architecture
    /// `device` (the Hopper engine needs the `sm_90a` features).
    pub fn arch_for(&self, device: Arch) -> Arch {
        match self.engine {
            TileEngine::Wgmma(_) => Arch::SM90A,
            TileEngine::MmaSync => device,
        }
    }

    /// Threads per block.
    pub fn block_threads(&self) -> u32 {
        match self.engine {
            TileEngine::Wgmma(_) => ENGINE_THREADS,
            TileEngine::MmaSync => MMA_SYNC_THREADS,
        }
    }

    fn mode(&self) -> u32 {
        match self.dtype {
            DType::Bf16 => 0,
            DType::F16 => 1,
            DType::F32 => 2,
            DType::F32Exact => 3,
        }
    }

    /// Dynamic shared memory per block: the largest of the kernel's tile configs (the router
    /// tile, [`router_rows`] x [`router_cols`]; on mma.sync GEMM0, dual for SwiGLU, and GEMM1, each `max(pipeline, f32
    /// store staging)`; on the Hopper engine its whole block), and at least the OS block's
    /// state.
    pub fn smem_bytes(&self) -> u32 {
        let row_bytes = 128; // BK * element size, by construction of `bk`
        let tile = |bm: u32, bn: u32, nb: u32| {
            let pipe = STAGES * (bm * row_bytes + nb * bn * row_bytes);
            let staging = bm * (bn + 8) * 4;
            pipe.max(staging)
        };
        let gated = if self.activation.is_gated() { 2 } else { 1 };
        let (bm, bn) = (self.tile.bm, self.tile.bn);
        let router = tile(self.router_rows, router_cols(self.router_experts), 1);
        // A combine task on the Hopper engine stages its slots (16 bytes per row and slot of
        // the token tile; combine.cuh).
        let slots = bm * self.slots * 16;
        match self.engine {
            // In the epilogue's staging buffer when they fit, else past the engine's memory.
            TileEngine::Wgmma(engine) => {
                let staged = bm * engine.stage_bytes.min(bn * self.dtype.elem_bytes());
                let extra = if slots <= staged { 0 } else { slots };
                (engine.smem_bytes() + extra).max(router)
            }
            TileEngine::MmaSync => tile(bm, bn, gated).max(tile(bm, bn, 1)).max(router),
        }
    }

    /// The `-D` defines of this specialisation.
    pub fn defines(&self) -> Defines {
        let act = match self.activation {
            Activation::Relu => 0,
            Activation::Gelu => 1,
            Activation::SiluGated => 2,
            Activation::SwigluOss(_) => 3,
        };
        let mut defines = Defines::new();
        if let Activation::SwigluOss(p) = self.activation {
            // The kernel computes in f32: alpha and the limit as the f32 nearest core's f64.
            defines = defines
                .set("FDM_OSS_ALPHA_BITS", format!("{:#010x}u", (p.alpha as f32).to_bits()))
                .set("FDM_OSS_LIMIT_BITS", format!("{:#010x}u", (p.limit as f32).to_bits()));
        }
        let defines = self
            .router
            .defines(defines)
            .set("FDM_MODE", self.mode())
            .set("FDM_ACT", act)
            .set("FDM_BIAS", u32::from(self.bias))
            .set("FDM_RENORM", u32::from(self.renormalize))
            .set("FDM_H", self.hidden)
            .set("FDM_I", self.inter)
            .set("FDM_E", self.experts)
            .set("FDM_ROUTER_E", self.router_experts)
            .set("FDM_TOPK", self.top_k)
            .set("FDM_SLOTS", self.slots)
            .set("FDM_SHARED", self.slots - self.top_k)
            .set("FDM_SHARED_GATE", u32::from(self.shared_gate))
            .set("FDM_BM", self.tile.bm)
            .set("FDM_BN", self.tile.bn)
            .set("FDM_BNH", self.tile.bn_hidden)
            .set("FDM_SMEM_BYTES", self.smem_bytes())
            .set("FDM_CHUNK", ROUTING_CHUNK)
            .set("FDM_ROUTER_SPLIT", self.router_split)
            .set("FDM_ROUTER_ROWS", self.router_rows)
            .set("FDM_ROUTER_COLS", router_cols(self.router_experts));
        // Only where streamed, so the other specialisations' defines (and cache keys) stay.
        let defines = match self.combine {
            CombineForm::Streamed => defines.set("FDM_COMBINE_STREAM", 1),
            CombineForm::Registers => defines,
        };
        let defines =
            if self.pairs { defines.set("FDM_PAIRS", 1).set("FDM_CLUSTER", 2) } else { defines };
        match self.engine {
            TileEngine::Wgmma(engine) => {
                let defines = engine.defines(defines.set("FDM_ENGINE", 1));
                // A streamed combine's producer walks the slot table beside the GEMM loads:
                // with 88 registers it spilled 16 bytes at 64 accumulators a consumer thread
                // (the GPU check's top-8 layer, 128x64 SwiGLU), with 96 none; consumers of 64
                // accumulators keep room at 200.
                if self.combine == CombineForm::Streamed && engine.accumulators() <= 64 {
                    defines.set("FDM_PRODUCER_REGS", 96).set("FDM_CONSUMER_REGS", 200)
                } else {
                    defines
                }
            }
            TileEngine::MmaSync => defines.set("FDM_ENGINE", 0),
        }
    }

    /// A short label, e.g. `bf16-swiglu-bias-H4096-I14336-E8-k2-128x128`.
    pub fn label(&self) -> String {
        let dtype = match self.dtype {
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "tf32",
            DType::F32Exact => "f32exact",
        };
        let act = match self.activation {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::SiluGated => "swiglu",
            Activation::SwigluOss(_) => "swiglu-oss",
        };
        let engine = match self.engine {
            // `-e<bytes>`: an epilogue staging narrower than a tile row (up to 512 bytes) allows:
            // a spill's twin (`candidates`).
            TileEngine::Wgmma(t) if t.stage_bytes < (t.bn * t.elem_bytes).min(512) => {
                format!("-wgmma-s{}-e{}", t.stages, t.stage_bytes)
            }
            TileEngine::Wgmma(t) => format!("-wgmma-s{}", t.stages),
            TileEngine::MmaSync => String::new(),
        };
        let split = match self.router_split {
            1 => String::new(),
            n => format!("-rs{n}"),
        };
        let rows = match self.router_rows {
            64 => String::new(),
            n => format!("-rr{n}"),
        };
        // Shared experts: `-sh<m>p<P>` (m parts on each of P ranks), `g` with the sigmoid gate.
        let shared = match self.slots - self.top_k {
            0 => String::new(),
            m => format!(
                "-sh{m}p{}{}",
                (self.experts - self.router_experts) / m,
                if self.shared_gate { "g" } else { "" }
            ),
        };
        // GEMM1 tiles wider than GEMM0's: `-w<bn_hidden>`; GEMM0 tasks in column groups:
        // `-cg<columns>`.
        let wide = match self.tile.bn_hidden {
            w if w == self.tile.bn => String::new(),
            w => format!("-w{w}"),
        };
        let wide = match self.tile.gemm0_group {
            0 => wide,
            g => format!("{wide}-cg{g}"),
        };
        format!(
            "{dtype}-{act}{}{}-H{}-I{}-E{}-k{}{shared}-{}x{}{wide}{engine}{split}{rows}{}",
            if self.bias { "-bias" } else { "" },
            self.router.label(),
            self.hidden,
            self.inter,
            self.router_experts,
            self.top_k,
            self.tile.bm,
            self.tile.bn,
            if self.combine == CombineForm::Streamed { "-cs" } else { "" }
        ) + if self.pairs { "-pairs" } else { "" }
    }

    /// This specialisation as a compile-checkable variant.
    pub fn variant(&self) -> KernelVariant {
        match self.engine {
            // Where ptxas spills, the thread index read afresh at every use (config.cuh
            // FDM_FRESH_TID: the spilled value was its copy held from the kernel's start).
            TileEngine::Wgmma(_) => KernelVariant {
                label: self.label(),
                source: MOE,
                defines: self.defines(),
                fallback: Some(self.defines().flag("FDM_FRESH_TID")),
                targets: Targets::Hopper,
            },
            // Without register-pipelined GEMM0 fragments, the fallback for specs whose widest
            // (SwiGLU dual-B) tile spills.
            TileEngine::MmaSync => KernelVariant {
                label: self.label(),
                source: MOE,
                defines: self.defines(),
                fallback: Some(self.defines().set("FDM_FRAG_PIPE", 0)),
                targets: Targets::Portable,
            },
        }
    }
}

/// `candidates` (in order of preference) with combine tasks in `form` where it applies, each
/// followed by its twin in the registers' form: a streamed image that spills even through its
/// variant's fallback makes [`compile_first`] fall back to the same tile, not to the next tile
/// or engine.
pub fn combine_candidates(candidates: Vec<MoeSpec>, form: CombineForm) -> Vec<MoeSpec> {
    candidates
        .into_iter()
        .flat_map(|s| {
            let chosen = s.with_combine(form);
            [Some(chosen), (chosen != s).then_some(s)].into_iter().flatten()
        })
        .collect()
}

/// The specialisation [`compile_first`] chose, its image, and the candidates before it that
/// spilled (label and ptxas's account), which a report should name: a fallback runs correctly
/// but slower.
#[derive(Debug)]
pub struct Chosen {
    /// The specialisation that compiled.
    pub spec: MoeSpec,
    /// Its image.
    pub compiled: Compiled,
    /// The candidates before it that spilled: label, and the spill error.
    pub skipped: Vec<(String, CudaError)>,
}

/// Compiles the first of `candidates` (each through [`Jit::compile_variant`], so with its
/// fallback defines) that compiles without register spills, for a device of architecture
/// `arch` (each candidate for [`MoeSpec::arch_for`] it); any other error stops the search.
/// Errors with the last spill when every candidate spills.
pub fn compile_first(jit: &Jit, arch: Arch, candidates: &[MoeSpec]) -> Result<Chosen, CudaError> {
    let mut skipped = Vec::new();
    for spec in candidates {
        match jit.compile_variant(&spec.variant(), spec.arch_for(arch)) {
            Ok(compiled) => return Ok(Chosen { spec: *spec, compiled, skipped }),
            Err(e @ CudaError::Spills { .. }) => skipped.push((spec.label(), e)),
            Err(e) => return Err(e),
        }
    }
    Err(skipped.pop().map(|(_, e)| e).unwrap_or_else(|| CudaError::InvalidDefine {
        name: "candidates".into(),
        reason: "no kernel specialisation to compile",
    }))
}

/// Processor blocks of an H200 (132 SMs, one OS block): the specialisation CI checks presets at.
pub const H200_PROCESSORS: u32 = 131;

#[cfg(test)]
mod tests;
