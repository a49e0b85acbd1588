//! The Hopper tile engine on its own: `kernels/tile_bench.cu`, a persistent GEMM built the
//! way the MoE kernel's processors use the engine (producer warpgroup + task ring + consumer
//! warpgroups, gathered A rows, B through TMA, fused epilogue, staged stores), checked against
//! an f64 reference and timed. `examples/tile-bench.rs` is its command line; the GPU check
//! runs it too.
//!
//! Every run checks before it times: fresh random inputs (never zeros), the output poisoned
//! first (all bytes 0xFF, a NaN in every dtype), every valid element written, the rows past
//! `m` untouched, sampled rows against the f64 reference (relative Frobenius error; every
//! column up to N 4096, ~2048 spread columns past it).

use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use flashdmoe_core::DType;
use flashdmoe_core::rng::SplitMix64;

use crate::arch::Arch;
use crate::device::Device;
use crate::engine::{ENGINE_THREADS, WgmmaTile};
use crate::error::{CudaError, Result, driver};
use crate::jit::Jit;
use crate::kernels::{Defines, KernelVariant, TILE_BENCH, Targets};
use crate::launch::{Kernel, LaunchShape};
use crate::tma::{TensorMap, swizzled_tiles};

/// Minimum wall time of warm-up launches before timing.
const WARMUP: Duration = Duration::from_millis(300);

/// The fused epilogue of a bench run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `acc`.
    Plain,
    /// `relu(acc + bias[col])`.
    BiasRelu,
    /// `silu(acc_gate) * acc_up` (two B operands).
    SwiGlu,
}

/// The raster group's row tiles unless a configuration says otherwise.
pub const DEFAULT_GROUP_M: u32 = 16;

/// One bench configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchConfig {
    /// Bf16, F16, or F32 (tf32 tensor cores).
    pub dtype: DType,
    /// Tile rows (64, 128 or 256).
    pub bm: u32,
    /// Tile columns per B operand.
    pub bn: u32,
    /// Pipeline stages.
    pub stages: u32,
    /// Output rows.
    pub m: u32,
    /// Output columns.
    pub n: u32,
    /// Reduction length.
    pub k: u32,
    /// Epilogue (SwiGLU uses two B operands).
    pub epilogue: Epilogue,
    /// A rows gathered through a random permutation (the MoE's no-self-copy path).
    pub gather: bool,
    /// A's rows contiguous and each k-tile of them one TMA box (`FDM_TMA_A`), not 16-byte
    /// `cp.async` copies a row (what an expert's rows copied together would allow; not with
    /// `gather`).
    pub tma_a: bool,
    /// wgmma k-tiles a consumer keeps in flight while issuing the next (0 or 1).
    pub in_flight: u32,
    /// Bytes of a row the epilogue stages at a time (`FDM_STAGE_COLS`: 128 = one
    /// 128-byte chunk; the whole row of the tile leaves no room for a fourth stage).
    pub stage_bytes: u32,
    /// Ping-pong consumers (`FDM_PINGPONG`): each warpgroup computes whole `bm` x `bn` tiles
    /// (bm 128), the two in turn, one's epilogue under the other's main loop; the tile is a
    /// warpgroup's, so a 128x128 ping-pong tile does the work of half a cooperative 128x256.
    pub pingpong: bool,
    /// 2-CTA clusters sharing every B tile (`FDM_CLUSTER=2`): the two CTAs of a cluster compute
    /// two row tiles of the same columns, each loads half of every B tile and multicasts it to
    /// both (cuBLAS's arrangement: 0.0078 bytes a FLOP out of L2 against 0.0117 for a 128x256
    /// tile alone; docs/dev/tile-bytes-per-flop.md). Tiles go by a static schedule of row-tile
    /// pairs; `m` must be a multiple of `2 bm`.
    pub cluster: bool,
    /// With `cluster`: every fourth pair of a cluster split, its CTA of rank 1 computing both
    /// row tiles alone (B loaded whole, releases counted for both CTAs) while rank 0 computes
    /// none, and the two CTAs' pipelines re-aligned before each pair (`FDM_CLUSTER_MIXED`;
    /// the first step of docs/dev/paired-tasks.md: solo and paired tasks on one set of
    /// barriers). Label ` c2m`.
    pub cluster_mixed: bool,
    /// Row tiles a raster group walks before the next (16; label ` g<n>` otherwise): at 16
    /// the row tiles of one column tile run at once on neighbouring SMs and share B through
    /// L2; at 1 every column tile of row tile 0 comes first, so a second row tile reads B
    /// again from HBM, as an expert's row tiles do in the MoE kernel (perf-notes v29 (d)). A
    /// 2-CTA cluster's pairs walk `group_m / 2` pairs.
    pub group_m: u32,
    /// How B is stored and loaded ([`BLayout`]; row-major by TMA boxes unless labelled).
    pub b_layout: BLayout,
}

/// B's storage and load path in the tile bench (perf-notes v45, v46).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BLayout {
    /// Row-major, loaded by TMA boxes whose rows are 128 bytes of `bn` different rows of B.
    #[default]
    RowMajor,
    /// As tiles (`FDM_B_TILED`; label ` bt`): each k-tile of a column tile, `bn` rows x 128
    /// bytes, contiguous and already in the 128-byte swizzle's order ([`swizzled_tiles`]),
    /// loaded by one bulk copy (in a 2-CTA cluster each CTA's half by a multicast bulk copy).
    TilesBulk,
    /// The same tiles through a tensor map of 128-byte rows without swizzle
    /// ([`TensorMap::tiles`]; `FDM_TILED_MAP`, label ` btm`): the row-major path's boxes and
    /// multicast over contiguous rows.
    TilesMap,
}

impl BenchConfig {
    fn nb(&self) -> u32 {
        if self.epilogue == Epilogue::SwiGlu { 2 } else { 1 }
    }

    fn mode(&self) -> u32 {
        match self.dtype {
            DType::Bf16 => 0,
            DType::F16 => 1,
            _ => 2,
        }
    }

    /// A short label, e.g. `bf16 128x256 s3 m16384 n2048 k2048 plain`.
    pub fn label(&self) -> String {
        let epi = match self.epilogue {
            Epilogue::Plain => "plain",
            Epilogue::BiasRelu => "bias-relu",
            Epilogue::SwiGlu => "swiglu",
        };
        let dtype = if self.dtype == DType::F32 { "tf32" } else { self.dtype.name() };
        format!(
            "{dtype} {}x{}{}{} s{}{} m{} n{} k{} {epi}",
            self.bm,
            self.bn,
            if self.gather { " gather" } else { "" },
            if self.tma_a { " tma-a" } else { "" },
            self.stages,
            if self.in_flight == 0 { " w0".to_string() } else { String::new() }
                + &if self.stage_bytes == 128 {
                    String::new()
                } else {
                    format!(" e{}", self.stage_bytes)
                }
                + if self.pingpong { " pp" } else { "" }
                + match (self.cluster, self.cluster_mixed) {
                    (true, true) => " c2m",
                    (true, false) => " c2",
                    _ => "",
                }
                + &if self.group_m == DEFAULT_GROUP_M {
                    String::new()
                } else {
                    format!(" g{}", self.group_m)
                }
                + match self.b_layout {
                    BLayout::RowMajor => "",
                    BLayout::TilesBulk => " bt",
                    BLayout::TilesMap => " btm",
                },
            self.m,
            self.n,
            self.k
        )
    }

    /// The engine tile of this configuration.
    pub fn tile(&self) -> WgmmaTile {
        WgmmaTile {
            elem_bytes: self.dtype.elem_bytes(),
            bm: self.bm,
            bn: self.bn,
            nb: self.nb(),
            stages: self.stages,
            stage_bytes: self.stage_bytes,
            pingpong: self.pingpong,
        }
    }

    /// The compile variant (CI compile-checks these for sm_90a).
    pub fn variant(&self) -> KernelVariant {
        let defines = Defines::new()
            .set("FDM_MODE", self.mode())
            .set("FDM_BM", self.bm)
            .set("FDM_BN", self.bn)
            .set("FDM_NB", self.nb())
            .set("FDM_EPILOGUE", self.epilogue as u32)
            .set("FDM_WGMMA_IN_FLIGHT", self.in_flight)
            .set("FDM_TMA_A", u32::from(self.tma_a))
            .set("FDM_CLUSTER", if self.cluster { 2 } else { 1 })
            .set("FDM_CLUSTER_MIXED", u32::from(self.cluster_mixed));
        let defines = match self.b_layout {
            BLayout::RowMajor => defines,
            BLayout::TilesBulk => defines.set("FDM_B_TILED", 1),
            BLayout::TilesMap => defines.set("FDM_B_TILED", 1).set("FDM_TILED_MAP", 1),
        };
        KernelVariant {
            label: format!("tile-bench-{}", self.label().replace(' ', "-")),
            source: TILE_BENCH,
            defines: self.tile().defines(defines),
            fallback: None,
            targets: Targets::Hopper,
        }
    }

    /// Dynamic shared memory of a block.
    pub fn smem_bytes(&self) -> u32 {
        self.tile().smem_bytes()
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(CudaError::InvalidLaunch { entry: TILE_BENCH.entry.into(), reason })
        };
        let kbk = 128 / self.dtype.elem_bytes();
        if !matches!(self.dtype, DType::Bf16 | DType::F16 | DType::F32) {
            return bad(format!("dtype {} has no tensor-core engine", self.dtype.name()));
        }
        if let Some(why) = self.tile().unsupported() {
            return bad(why);
        }
        if self.m == 0 || self.n == 0 || !self.n.is_multiple_of(self.bn) {
            return bad(format!("n {} must be a positive multiple of bn {}", self.n, self.bn));
        }
        if self.k == 0 || !self.k.is_multiple_of(kbk) {
            return bad(format!("k {} must be a positive multiple of {kbk}", self.k));
        }
        if self.in_flight > 1 {
            return bad(format!("in_flight {} (0 or 1)", self.in_flight));
        }
        if self.tma_a && self.gather {
            return bad("tma_a loads contiguous rows: it cannot gather".into());
        }
        if self.cluster_mixed && !self.cluster {
            return bad(
                "cluster_mixed mixes solo tiles among a 2-CTA cluster's pairs: it needs cluster"
                    .into(),
            );
        }
        if self.cluster && (self.pingpong || !self.m.div_ceil(self.bm).is_multiple_of(2)) {
            return bad(format!(
                "a 2-CTA cluster takes row tiles in pairs: m {} must make an even number of \
                 row tiles of bm {} (the last may be partial), and its consumers cooperative \
                 (not ping-pong)",
                self.m, self.bm
            ));
        }
        if self.group_m == 0 {
            return bad("group_m must be at least 1".into());
        }
        Ok(())
    }
}

/// Mirrors `fdm_tile_bench_params` in `kernels/tile_bench.cu`.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(128))]
struct BenchParams {
    b0: TensorMap,
    b1: TensorMap,
    a_map: TensorMap,
    a: u64,
    a_index: u64,
    c: u64,
    bias: u64,
    lda: u64,
    ldc: u64,
    tile_counter: u64,
    m: u32,
    n: u32,
    k: u32,
    epilogue: u32,
    group_m: u32,
    pad0: u32,
    b_tiled0: u64,
    b_tiled1: u64,
    pad: [u32; 8],
}

// SAFETY: integers and tensor maps only; the layout has no padding (asserted below: every
// field ends where the next begins and the size is a multiple of the alignment).
unsafe impl Zeroable for BenchParams {}
// SAFETY: as above.
unsafe impl Pod for BenchParams {}

const _: () = assert!(size_of::<BenchParams>() == 512);
const _: () = assert!(std::mem::offset_of!(BenchParams, a) == 384);
const _: () = assert!(std::mem::offset_of!(BenchParams, tile_counter) == 432);
const _: () = assert!(std::mem::offset_of!(BenchParams, group_m) == 456);
const _: () = assert!(std::mem::offset_of!(BenchParams, b_tiled0) == 464);
const _: () = assert!(std::mem::offset_of!(BenchParams, b_tiled1) == 472);

/// What a bench run measured.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// The configuration.
    pub config: BenchConfig,
    /// Median time of one GEMM.
    pub median: Duration,
    /// Fastest and slowest timed GEMM.
    pub min: Duration,
    /// Slowest timed GEMM.
    pub max: Duration,
    /// Achieved rate (2 m n k per B operand over the median), TFLOP/s.
    pub tflops: f64,
    /// Relative Frobenius error of the sampled rows against the f64 reference.
    pub rel_err: f64,
    /// Rows checked against the reference.
    pub rows_checked: usize,
    /// Registers per thread at entry (ptxas).
    pub registers: Option<u32>,
}

/// The error allowed on the sampled rows: output rounding of the dtype plus the reduction.
fn threshold(dtype: DType) -> f64 {
    match dtype {
        DType::Bf16 => 8e-3,
        DType::F16 => 2e-3,
        _ => 4e-3,
    }
}

fn random(rng: &mut SplitMix64, len: usize, dtype: DType) -> Vec<f32> {
    (0..len).map(|_| dtype.round(2.0 * rng.next_unit() - 1.0)).collect()
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Compiles, checks and times one configuration on `device` (sm_90a only).
pub fn run(
    jit: &Jit,
    device: &Device,
    config: &BenchConfig,
    iters: u32,
    seed: u64,
) -> Result<BenchResult> {
    config.check()?;
    let _range = nvtx::LocalRange::new(c"flashdmoe::tile_bench");
    let compiled = jit.compile_variant(&config.variant(), Arch::SM90A)?;
    let kernel = Kernel::load(device, &compiled.cubin, config.smem_bytes())?;
    let shape = kernel.cooperative_shape(ENGINE_THREADS)?;
    let (m, n, k) = (config.m as usize, config.n as usize, config.k as usize);
    let dtype = config.dtype;
    let elem = dtype.elem_bytes() as usize;
    let mut rng = SplitMix64::for_tensor(seed, 0xB0);
    let a = random(&mut rng, m * k, dtype);
    let b: Vec<Vec<f32>> = (0..config.nb()).map(|_| random(&mut rng, n * k, dtype)).collect();
    let bias = random(&mut rng, n, dtype);
    // A gathered through a random permutation of its rows (Fisher-Yates).
    let mut index: Vec<u32> = (0..m as u32).collect();
    if config.gather {
        for i in (1..m).rev() {
            index.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
    }

    let stream = device.stream();
    let enc = |v: &[f32]| {
        let mut out = Vec::new();
        dtype.encode_into(v, &mut out);
        out
    };
    let up = |bytes: &[u8]| stream.clone_htod(bytes).map_err(driver("cuMemcpyHtoDAsync"));
    let a_dev = up(&enc(&a))?;
    let b_dev = b.iter().map(|b| up(&enc(b))).collect::<Result<Vec<_>>>()?;
    let bn = config.bn as usize;
    let b_tiled_dev = if config.b_layout != BLayout::RowMajor {
        b.iter().map(|b| up(&swizzled_tiles(&enc(b), bn, k * elem))).collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let bias_dev = up(&enc(&bias))?;
    let index_dev = stream.clone_htod(&index).map_err(driver("cuMemcpyHtoDAsync"))?;
    // Output with BM rows of slack after m, all poisoned.
    let c_rows = m + config.bm as usize;
    let c_dev = up(&vec![0xFFu8; c_rows * n * elem])?;
    // Counter i belongs to launch i; launch 1 (the warm-ups) reuses its counter, reset before
    // each.
    let counters = iters as usize + 2;
    let mut counter_dev: CudaSlice<u32> =
        stream.alloc_zeros(counters).map_err(driver("cuMemAllocAsync"))?;

    let ptr = |s: &CudaSlice<u8>| s.device_ptr(stream).0;
    // B in boxes of bn rows, or of bn / 2 in a 2-CTA cluster (each CTA loads half a tile).
    let b_box = if config.cluster { config.bn / 2 } else { config.bn };
    let map = |s: &CudaSlice<u8>| {
        TensorMap::tiled_2d(device, dtype, ptr(s), n as u64, k as u64, (k * elem) as u64, b_box)
    };
    let tiles_map =
        |s: &CudaSlice<u8>| TensorMap::tiles(device, dtype, ptr(s), (n * k * elem) as u64, b_box);
    let (b0, b1) = if config.b_layout == BLayout::TilesMap {
        let b0 = tiles_map(&b_tiled_dev[0])?;
        (b0, if config.nb() == 2 { tiles_map(&b_tiled_dev[1])? } else { b0 })
    } else {
        let b0 = map(&b_dev[0])?;
        (b0, if config.nb() == 2 { map(&b_dev[1])? } else { b0 })
    };
    // A [m, k] in boxes of bm rows (rows past m read as zeros); unused without tma_a.
    let a_map = if config.tma_a {
        TensorMap::tiled_2d(
            device,
            dtype,
            ptr(&a_dev),
            m as u64,
            k as u64,
            (k * elem) as u64,
            config.bm,
        )?
    } else {
        b0
    };
    let counter_base = counter_dev.device_ptr_mut(stream).0;
    let params = |i: usize| BenchParams {
        b0,
        b1,
        a_map,
        a: ptr(&a_dev),
        a_index: if config.gather { index_dev.device_ptr(stream).0 } else { 0 },
        c: ptr(&c_dev),
        bias: ptr(&bias_dev),
        lda: k as u64,
        ldc: n as u64,
        tile_counter: counter_base + 4 * i as u64,
        m: config.m,
        n: config.n,
        k: config.k,
        epilogue: config.epilogue as u32,
        group_m: config.group_m,
        pad0: 0,
        b_tiled0: b_tiled_dev.first().map_or(0, &ptr),
        b_tiled1: b_tiled_dev.get(1).map_or(0, &ptr),
        pad: [0; 8],
    };
    // A clustered image (`__cluster_dims__`) launches plainly: its blocks wait only on their
    // cluster's peer, which the hardware schedules with it; an even grid of whole clusters.
    let grid = if config.cluster { shape.grid / 2 * 2 } else { shape.grid };
    let launch = |i: usize| {
        let shape = LaunchShape { grid, block: ENGINE_THREADS };
        // SAFETY: `BenchParams` mirrors the kernel's parameter block (asserted on both
        // sides); every address names a live allocation of this function sized for the
        // config (A m x k, B n x k each, bias n, C (m + bm) x n, the counters), all alive
        // until the stream is synchronised below. A clustered kernel's blocks wait on their
        // cluster's peer only (co-scheduled by the hardware), never on other clusters.
        unsafe {
            if config.cluster {
                kernel.launch_plain(stream, shape, &params(i))
            } else {
                kernel.launch_cooperative(stream, shape, &params(i))
            }
        }
    };

    // Correctness: one launch on the poisoned output.
    launch(0)?;
    device.synchronize()?;
    let out_bytes = stream.clone_dtoh(&c_dev).map_err(driver("cuMemcpyDtoHAsync"))?;
    let fail =
        |reason: String| Err(CudaError::SelftestFailed { ordinal: device.ordinal(), reason });
    let row_bytes = n * elem;
    if let Some(r) = (0..m).find(|&r| {
        out_bytes[r * row_bytes..(r + 1) * row_bytes]
            .chunks_exact(elem)
            .any(|e| e.iter().all(|&x| x == 0xFF))
    }) {
        return fail(format!("{}: row {r} has unwritten (poisoned) elements", config.label()));
    }
    if out_bytes[m * row_bytes..].iter().any(|&x| x != 0xFF) {
        return fail(format!("{}: the kernel wrote past row {m}", config.label()));
    }
    let mut out = Vec::new();
    dtype.decode_into(&out_bytes[..m * row_bytes], &mut out);
    // Sampled rows: the first, the last, and random ones.
    let mut rows: Vec<usize> = vec![0, m - 1];
    rows.extend((0..62).map(|_| (rng.next() % m as u64) as usize));
    // Every column up to 4096 of them; past that (the weight-streaming shapes, N 32768-65536
    // at K 7168) an even spread of ~2048 and the last, so the f64 reference stays ~1 G MAC.
    let cols: Vec<usize> = if n <= 4096 {
        (0..n).collect()
    } else {
        (0..n).step_by(n / 2048).chain(std::iter::once(n - 1)).collect()
    };
    let (mut err2, mut ref2) = (0.0f64, 0.0f64);
    for &r in &rows {
        let arow = &a[index[r] as usize * k..][..k];
        for &col in &cols {
            let dot = |b: &[f32]| -> f64 {
                b[col * k..][..k].iter().zip(arow).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
            };
            let v0 = dot(&b[0]);
            let want = match config.epilogue {
                Epilogue::Plain => v0,
                Epilogue::BiasRelu => (v0 + f64::from(bias[col])).max(0.0),
                Epilogue::SwiGlu => silu(v0) * dot(&b[1]),
            };
            let got = f64::from(out[r * n + col]);
            if !got.is_finite() {
                return fail(format!("{}: row {r} col {col} is {got}", config.label()));
            }
            err2 += (got - want) * (got - want);
            ref2 += want * want;
        }
    }
    let rel_err = (err2 / ref2.max(f64::MIN_POSITIVE)).sqrt();
    if rel_err > threshold(dtype) {
        return fail(format!(
            "{}: relative error {rel_err:.3e} over {} sampled rows exceeds {:.1e}",
            config.label(),
            rows.len(),
            threshold(dtype)
        ));
    }

    // Timing: warm-up launches for at least WARMUP of wall time (the clocks ramp up from
    // idle), then `iters` launches between events, one event pair each.
    let warm = std::time::Instant::now();
    while warm.elapsed() < WARMUP {
        for _ in 0..10 {
            stream
                .memset_zeros(&mut counter_dev.slice_mut(1..2))
                .map_err(driver("cuMemsetD8Async"))?;
            launch(1)?;
        }
        device.synchronize()?;
    }
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut times = Vec::with_capacity(iters as usize);
    for i in 0..iters as usize {
        let start = stream.record_event(flags).map_err(driver("cuEventRecord"))?;
        launch(2 + i)?;
        let end = stream.record_event(flags).map_err(driver("cuEventRecord"))?;
        end.synchronize().map_err(driver("cuEventSynchronize"))?;
        let ms = start.elapsed_ms(&end).map_err(driver("cuEventElapsedTime"))?;
        times.push(Duration::from_secs_f64(f64::from(ms) / 1e3));
    }
    times.sort();
    let median = times[times.len() / 2];
    let flops = 2.0 * m as f64 * n as f64 * k as f64 * f64::from(config.nb());
    Ok(BenchResult {
        config: *config,
        median,
        min: times[0],
        max: times[times.len() - 1],
        tflops: flops / median.as_secs_f64() / 1e12,
        rel_err,
        rows_checked: rows.len(),
        registers: compiled.cubin.report().entry(TILE_BENCH.entry).and_then(|f| f.registers),
    })
}

/// The configurations CI compile-checks and the GPU check runs: the engine's tiles as the
/// MoE kernel uses them, plus f16 and tf32.
pub fn suite() -> Vec<BenchConfig> {
    let c = |dtype, bm, bn, stages, epilogue, gather, m| BenchConfig {
        dtype,
        bm,
        bn,
        stages,
        m,
        n: 2048,
        k: 2048,
        epilogue,
        gather,
        tma_a: false,
        in_flight: 1,
        stage_bytes: 128,
        pingpong: false,
        cluster: false,
        cluster_mixed: false,
        group_m: DEFAULT_GROUP_M,
        b_layout: BLayout::RowMajor,
    };
    use BLayout::*;
    use Epilogue::*;
    let staged = |stage_bytes, stages| BenchConfig {
        stage_bytes,
        ..c(DType::Bf16, 128, 256, stages, Plain, false, 16384)
    };
    // DeepSeek-V3's gated GEMM0 tile (K = H = 7168) over 128 column tiles of weights.
    let dsv3 =
        |m| BenchConfig { n: 32768, k: 7168, ..c(DType::Bf16, 128, 128, 4, SwiGlu, true, m) };
    // A ping-pong 128x128 at Qwen3's GEMM1 shape (N 2048, K 768).
    let pingpong = |stages, stage_bytes, epilogue, gather, m| BenchConfig {
        n: 2048,
        k: 768,
        stage_bytes,
        pingpong: true,
        ..c(DType::Bf16, 128, 128, stages, epilogue, gather, m)
    };
    vec![
        c(DType::Bf16, 128, 256, 4, Plain, false, 16384),
        staged(256, 4),
        staged(512, 3),
        BenchConfig { in_flight: 0, ..staged(256, 4) },
        c(DType::Bf16, 128, 256, 4, BiasRelu, true, 16384 - 37),
        c(DType::Bf16, 128, 128, 4, SwiGlu, true, 8192 - 5),
        c(DType::Bf16, 128, 128, 4, Plain, false, 16384),
        c(DType::Bf16, 64, 256, 4, BiasRelu, true, 1000),
        c(DType::Bf16, 64, 128, 4, SwiGlu, false, 300),
        c(DType::F16, 128, 256, 4, Plain, true, 4096 + 3),
        c(DType::F32, 128, 128, 4, Plain, false, 4096 - 1),
        // Steady state: 4096 tiles of K 4096 (31 waves), so the launch, the first wave's fill
        // and the last wave's tail weigh ~3% instead of the ~25% of the 2048^2 shapes above
        // (perf-notes v15: the kernel's tiles run ~25 µs, the bench's shapes ~33 µs a tile).
        BenchConfig { n: 8192, k: 4096, ..staged(512, 3) },
        // The same with a fourth stage and the tile staged in two 256-byte halves (what fits
        // beside four stages: v16 measured 4 stages with 128-byte chunks, not these).
        BenchConfig { n: 8192, k: 4096, ..staged(256, 4) },
        // The gated layers' GEMM0 at the steady state (2048 tiles of K 4096, A gathered).
        BenchConfig { n: 4096, k: 4096, ..c(DType::Bf16, 128, 128, 4, SwiGlu, true, 16384) },
        // 256x192 tiles (two 64-row slabs a consumer warpgroup; 0.0089 B/FLOP against
        // 0.0117: docs/dev/tile-bytes-per-flop.md) at the steady state, beside the 128x256
        // tile on the same shape (N 7680: a multiple of both 192 and 256).
        BenchConfig { n: 7680, k: 4096, ..c(DType::Bf16, 256, 192, 3, Plain, false, 16384) },
        BenchConfig { n: 7680, k: 4096, ..staged(512, 3) },
        BenchConfig { n: 7680, k: 4096, ..c(DType::Bf16, 256, 192, 3, BiasRelu, true, 16384 - 37) },
        // Weight streaming as DeepSeek-V3's and Kimi-K2's experts see it (issue 16: 1-2 row
        // tiles an expert, their layers at ~1.9x the weight-read floor): one row tile, K 7168,
        // every tile its own weights, ~0.94 GB of B a call (~0.2 ms at HBM's 4.8 TB/s). The
        // time gives the rate the engine streams weights at: the gated GEMM0's image (DeepSeek's
        // tile) and the plain 128x256 one; both reuse images above (M, N, K are run-time).
        BenchConfig { n: 32768, k: 7168, ..c(DType::Bf16, 128, 128, 4, SwiGlu, true, 128) },
        BenchConfig { n: 65536, k: 7168, m: 128, ..staged(512, 3) },
        // An expert of 129-256 rows (DeepSeek-V3: 97 of its 243 routed experts at T 4096,
        // perf-notes v29 (d)) as two 128-row tiles that each read the weights, against one
        // 256x64 tile (two 64-row slabs a warpgroup, B read once; an empty slab skipped): 256
        // and 150 rows.
        BenchConfig { n: 32768, k: 7168, ..c(DType::Bf16, 128, 128, 4, SwiGlu, true, 256) },
        BenchConfig { n: 32768, k: 7168, ..c(DType::Bf16, 128, 128, 4, SwiGlu, true, 150) },
        BenchConfig { n: 32768, k: 7168, ..c(DType::Bf16, 256, 64, 3, SwiGlu, true, 256) },
        BenchConfig { n: 32768, k: 7168, ..c(DType::Bf16, 256, 64, 3, SwiGlu, true, 150) },
        // The same expert with its rows contiguous (copied together, as a packet's are) and A
        // as one TMA box a k-tile: run 91 put the 256x64 tile's loss on its 4096 `cp.async` a
        // stage (perf-notes v30 (a)). Beside it the contiguous rows by `cp.async` (is it the
        // gather or the copies?) and 128x128 with TMA A (the reference tile, same loads).
        BenchConfig {
            n: 32768,
            k: 7168,
            tma_a: true,
            ..c(DType::Bf16, 256, 64, 3, SwiGlu, false, 256)
        },
        BenchConfig {
            n: 32768,
            k: 7168,
            tma_a: true,
            ..c(DType::Bf16, 256, 64, 3, SwiGlu, false, 150)
        },
        BenchConfig { n: 32768, k: 7168, ..c(DType::Bf16, 256, 64, 3, SwiGlu, false, 256) },
        BenchConfig {
            n: 32768,
            k: 7168,
            tma_a: true,
            ..c(DType::Bf16, 128, 128, 4, SwiGlu, false, 256)
        },
        // Ping-pong consumers (docs/dev/pingpong-gemm1.md) against the cooperative 128x256 at
        // a short K (Qwen3's GEMM1: K = I = 768, N = H = 2048; 4096 cooperative tiles, 31
        // waves), whose epilogue is a third of a task in the MoE kernel, and at K 4096 (v21:
        // ping-pong lost 5% there). A ping-pong tile is one warpgroup's 128x128.
        BenchConfig { n: 2048, k: 768, m: 65536, ..staged(256, 4) },
        pingpong(6, 128, Plain, false, 65536),
        pingpong(4, 256, Plain, false, 65536),
        pingpong(6, 128, BiasRelu, true, 65536 - 37),
        BenchConfig { n: 8192, k: 4096, ..pingpong(6, 128, Plain, false, 16384) },
        // Run 131: ping-pong 128x128 at 369 TFLOP/s against the cooperative 128x256's 663 at K
        // 4096. Which half of the tile's change is it? The cooperative 128x128 (two 64x128
        // warpgroups: the same bytes a FLOP as ping-pong's tile, no turn-taking), and ping-pong
        // with A by one TMA box a k-tile (the producer's 128 threads' cp.async out of the way).
        BenchConfig { n: 8192, k: 4096, ..c(DType::Bf16, 128, 128, 4, Plain, false, 16384) },
        BenchConfig { n: 8192, k: 4096, tma_a: true, ..pingpong(6, 128, Plain, false, 16384) },
        // Run 135: ping-pong 7% behind at K 768 with A by cp.async, and at K 4096 12% (6% with
        // A by TMA). The MoE kernel's GEMM1 loads A by TMA (perf-notes v33): both forms so, at
        // both K.
        BenchConfig { n: 2048, k: 768, m: 65536, tma_a: true, ..staged(256, 4) },
        BenchConfig { tma_a: true, ..pingpong(6, 128, Plain, false, 65536) },
        BenchConfig { n: 8192, k: 4096, tma_a: true, ..staged(512, 3) },
        // 256x192 (0.0089 B/FLOP against 128x256's 0.0117) lost 21% to its producer's
        // `cp.async` rows (v28 (a)); with A by TMA, as GEMM1's rows come, is the tile's byte
        // saving worth anything? Beside the 128x256 by TMA on the same shape.
        BenchConfig {
            n: 7680,
            k: 4096,
            tma_a: true,
            ..c(DType::Bf16, 256, 192, 3, Plain, false, 16384)
        },
        BenchConfig { n: 7680, k: 4096, tma_a: true, ..staged(512, 3) },
        // 2-CTA clusters multicasting B, beside the same tiles alone: −16% while each remote
        // release compiled to a GPU-scope fence (run 139), level without it, short and
        // sustained (run 141; perf-notes v41 (a), (b)).
        BenchConfig { n: 8192, k: 4096, cluster: true, ..staged(128, 4) },
        BenchConfig { n: 8192, k: 4096, cluster: true, tma_a: true, ..staged(128, 4) },
        BenchConfig { n: 8192, k: 4096, tma_a: true, ..staged(128, 4) },
        BenchConfig { n: 8192, k: 4096, cluster: true, tma_a: true, ..staged(512, 3) },
        // Solo tiles among the pairs, the pipelines re-aligned before each pair (the first
        // step of docs/dev/paired-tasks.md): correct first (the f64 check), then what the
        // re-alignment and the split pairs' imbalance cost against the 4-stage c2 above.
        BenchConfig {
            n: 8192,
            k: 4096,
            cluster: true,
            cluster_mixed: true,
            tma_a: true,
            ..staged(128, 4)
        },
        // The paired tasks' prize where it is claimed (docs/dev/paired-tasks.md): DeepSeek-V3's
        // gated GEMM0 tile on an expert of two row tiles (256 rows, or 150: one full and one
        // ragged), its row tiles a wave apart (g1: the second reads B from HBM again, as in
        // the MoE kernel) against the two as a cluster's pair (B read once, multicast).
        // Beside them: `m256` above at g16 (the row tiles side by side, sharing B in L2).
        BenchConfig { group_m: 1, ..dsv3(256) },
        BenchConfig { group_m: 1, cluster: true, ..dsv3(256) },
        BenchConfig { group_m: 1, ..dsv3(150) },
        BenchConfig { group_m: 1, cluster: true, ..dsv3(150) },
        // B as tiles, a k-tile's bn rows contiguous and pre-swizzled, one bulk copy each
        // (`b_tiled`, perf-notes v45), beside the same shapes from row-major B by TMA boxes:
        // DeepSeek-V3's GEMM0 streaming (the two weight-streaming configs above), and a
        // short K streamed as T16384 E128's tasks stream it (K 2048, two row tiles sharing
        // each weight tile, 128 MiB of B: more than L2).
        BenchConfig { b_layout: TilesBulk, ..dsv3(128) },
        BenchConfig { n: 65536, k: 7168, m: 128, b_layout: TilesBulk, ..staged(512, 3) },
        BenchConfig { n: 32768, k: 2048, m: 256, ..staged(256, 4) },
        BenchConfig { n: 32768, k: 2048, m: 256, b_layout: TilesBulk, ..staged(256, 4) },
        // One row tile a weight tile at K 2048, every weight read once from HBM (64 MiB of B:
        // T128 E8's GEMM0, the small-batch target), both forms: run 170's K 2048 case shared
        // each weight tile between two row tiles through L2.
        BenchConfig { n: 16384, k: 2048, m: 128, ..staged(256, 4) },
        BenchConfig { n: 16384, k: 2048, m: 128, b_layout: TilesBulk, ..staged(256, 4) },
        // The tiles through a tensor map of 128-byte rows (`TilesMap`) against one bulk copy,
        // alone and as a 2-CTA cluster's pair: run 171 made DeepSeek-V3's paired GEMM0 main
        // loop 8% slower with each CTA's half by a multicast bulk copy, its unpaired ones 4%
        // faster with bulk copies (perf-notes v46).
        BenchConfig { b_layout: TilesMap, ..dsv3(128) },
        BenchConfig { group_m: 1, cluster: true, b_layout: TilesBulk, ..dsv3(256) },
        BenchConfig { group_m: 1, cluster: true, b_layout: TilesMap, ..dsv3(256) },
        BenchConfig { n: 65536, k: 7168, m: 128, b_layout: TilesMap, ..staged(512, 3) },
        BenchConfig { n: 16384, k: 2048, m: 128, b_layout: TilesMap, ..staged(256, 4) },
        // An expert under 64 rows (130 of DeepSeek-V3's 256: perf-notes v46 (e)) in a 128-row
        // tile against a 64-row one, both 4 stages, the weights from HBM (one row tile): run
        // 165 timed such GEMM0 main loops at 79.4 against 70.4 µs in the MoE kernel.
        dsv3(48),
        BenchConfig { bm: 64, ..dsv3(48) },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SMEM_LIMIT;

    #[test]
    fn suite_configs_are_valid_and_fit_an_h200_block() {
        for c in suite() {
            c.check().unwrap();
            assert!(c.smem_bytes() <= SMEM_LIMIT, "{} needs {} bytes", c.label(), c.smem_bytes());
        }
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let mut c = suite()[0];
        c.n = 100;
        assert!(matches!(c.check(), Err(CudaError::InvalidLaunch { .. })));
        c = suite()[0];
        c.dtype = DType::F32Exact;
        assert!(c.check().is_err());
        c = suite()[0];
        c.bn = 96;
        assert!(c.check().is_err());
        // A 2-CTA cluster takes row tiles in pairs, with cooperative consumers.
        c = BenchConfig { cluster: true, ..suite()[0] };
        c.check().unwrap();
        c.m = 3 * c.bm;
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("even number of row tiles"), "{err}");
        c.m = 3 * c.bm + 1; // four row tiles, the last of one row
        c.check().unwrap();
        c.group_m = 0;
        assert!(c.check().unwrap_err().to_string().contains("group_m"));
        c = BenchConfig { cluster: true, ..suite().into_iter().find(|c| c.pingpong).unwrap() };
        assert!(c.check().is_err());
        // Solo tiles among the pairs only in a cluster; labelled apart.
        c = BenchConfig { cluster_mixed: true, ..suite()[0] };
        assert!(c.check().unwrap_err().to_string().contains("needs cluster"));
        c.cluster = true;
        c.check().unwrap();
        assert!(c.label().contains(" c2m"), "{}", c.label());
        // Tiled B: one CTA's whole tiles, labelled apart.
        c = BenchConfig { b_layout: BLayout::TilesBulk, ..suite()[0] };
        c.check().unwrap();
        assert!(c.label().contains(" s4 bt m"), "{}", c.label());
        c.b_layout = BLayout::TilesMap;
        assert!(c.label().contains(" s4 btm m"), "{}", c.label());
        assert!(format!("{:?}", c.variant().defines).contains("FDM_TILED_MAP"));
        // Both tile forms take a 2-CTA cluster (each CTA loads and multicasts half a tile).
        c.cluster = true;
        c.check().unwrap();
        assert!(c.label().contains(" c2 btm m"), "{}", c.label());
    }
}
