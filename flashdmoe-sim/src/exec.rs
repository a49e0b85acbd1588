//! The simulator's tile math ([`SimExecutor`]) and the heap element format ([`Codec`]).
//!
//! Numerics, identical for every run and every processor count because each output element is
//! computed by one task in one fixed order:
//!
//! * dot products accumulate in `f32` over `k` ascending in [`LANES`] interleaved partial sums
//!   (lane `l` takes every `k` with `k % LANES == l`), added in a fixed tree at the end;
//! * GEMM0: `u = x . up + ub` (and `g = x . gate + gb` for SwiGLU), `h = act(u, g)` through
//!   core's [`Activation::eval`](flashdmoe_core::Activation::eval), rounded to the dtype when
//!   stored into the intermediate rows;
//! * GEMM1: `y = h . down + db`, rounded to the dtype when put into the source's return rows;
//! * Combine: `out = sum_j w_j * y_j` over the token's kept slots in slot order, in `f32`
//!   (each product rounded to `f32`, then added), plus the shared experts' `gs * ys` of the
//!   tile's columns when the config has them ([`SharedRows`]), rounded to the dtype.

use std::sync::atomic::{AtomicU64 as StatCounter, Ordering as StatOrdering};

use flashdmoe_core::routing::{DROPPED, sigmoid};
use flashdmoe_core::runtime::{RuntimeError, SymmetricHeap, TileExecutor};
use flashdmoe_core::sync::{Heartbeat, SharedBytes};
use flashdmoe_core::{Activation, DType, ExpertMap, MoeConfig, RankRouting, ShardWeights};
use flashdmoe_proto::{HeapLayout, Stage, TaskDescriptor, TaskKind};

/// Independent partial sums of a dot product (hidden and inter sizes are multiples of 64).
pub(crate) const LANES: usize = 8;

/// Converts between host `f32` values and the heap's element bytes (little-endian).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Codec(pub(crate) DType);

impl Codec {
    /// Bytes per element.
    pub(crate) fn width(self) -> usize {
        self.0.elem_bytes() as usize
    }

    /// Appends `values`, each rounded to the dtype (round to nearest even).
    pub(crate) fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        self.0.encode_into(values, out);
    }

    /// Decodes `bytes` into `out` (cleared first).
    pub(crate) fn decode(self, bytes: &[u8], out: &mut Vec<f32>) {
        out.clear();
        self.0.decode_into(bytes, out);
    }
}

/// `a . b` in the fixed order of the module doc; `a.len() == b.len()`, a multiple of [`LANES`].
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lanes;
    ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
}

/// Executes one rank's tile tasks against the simulated heap.
#[derive(Debug)]
pub(crate) struct SimExecutor<'a, H> {
    pub(crate) rank: u32,
    pub(crate) config: &'a MoeConfig,
    /// This rank's share of the weights: its experts, in local order, and the router and
    /// shared experts.
    pub(crate) weights: &'a ShardWeights,
    pub(crate) map: &'a ExpertMap,
    pub(crate) layout: &'a HeapLayout,
    pub(crate) heap: &'a H,
    /// This rank's routing (for the combine).
    pub(crate) routing: &'a RankRouting,
    /// This rank's `[tokens][hidden]` output in element format.
    pub(crate) output: &'a SharedBytes,
    /// This rank's shared-expert rows, set before the roles start (empty without shared
    /// experts).
    pub(crate) shared: &'a std::sync::OnceLock<SharedRows>,
    /// Bytes GEMM1 tasks put into sources' return regions.
    pub(crate) returned_bytes: StatCounter,
}

impl<H: SymmetricHeap> SimExecutor<'_, H> {
    fn codec(&self) -> Codec {
        Codec(self.config.dtype)
    }

    /// Reads `rows` consecutive rows of `width` elements at `offset` of this rank's heap.
    fn read_rows(&self, offset: u64, rows: u32, width: usize, out: &mut Vec<f32>) {
        let w = self.codec().width();
        let mut bytes = vec![0u8; width * w];
        let mut row = Vec::with_capacity(width);
        out.clear();
        for r in 0..rows as u64 {
            // SAFETY: the runtime hands this task over only after everything it reads was
            // published to this thread, and nobody writes these rows while the task runs.
            unsafe { self.heap.get(self.rank, offset + r * (width * w) as u64, &mut bytes) };
            self.codec().decode(&bytes, &mut row);
            out.extend_from_slice(&row);
        }
    }

    /// The task's expert's index in this rank's shard: its local index, which holds the
    /// global expert the map places there.
    fn expert(&self, task: &TaskDescriptor) -> Result<usize, RuntimeError> {
        let local = task.local_expert as usize;
        let held = self.weights.experts().get(local).copied();
        match self.map.global(self.rank, task.local_expert) {
            Some(global) if held == Some(global) => Ok(local),
            _ => Err(RuntimeError::Executor(format!(
                "rank {} has no local expert {} (its shard holds experts {:?})",
                self.rank,
                task.local_expert,
                self.weights.experts()
            ))),
        }
    }

    /// Encodes one output row segment and puts it at `offset` of `rank`'s heap.
    fn put_row(&self, rank: u32, offset: u64, values: &[f32], bytes: &mut Vec<u8>) {
        bytes.clear();
        self.codec().encode(values, bytes);
        // SAFETY: the task is the only writer of its output tile, and every reader of the tile
        // starts only after the task's completion is published (row-tile counter or return
        // signal, then the queue and a mailbox).
        unsafe { self.heap.put(rank, offset, bytes) };
    }

    fn gemm0(&self, task: &TaskDescriptor) -> Result<(), RuntimeError> {
        let (h, i) = (self.config.hidden as usize, self.config.inter as usize);
        let bn = self.layout.geometry().tile.bn as usize;
        let e = self.expert(task)?;
        let w = self.weights;
        let bias = |b: Option<&[f32]>, row: usize| b.map_or(0.0, |b| b[row]);
        let mut x = Vec::new();
        self.read_rows(task.input_offset, task.valid_rows, h, &mut x);
        let (mut tile, mut bytes) = (Vec::with_capacity(bn), Vec::new());
        // A ragged last column tile has fewer columns.
        let first = task.col_tile as usize * bn;
        let cols = self.layout.geometry().inter_cols(task.col_tile) as usize;
        for (r, x) in x.chunks_exact(h).enumerate() {
            tile.clear();
            for col in first..first + cols {
                let row = e * i + col;
                let up = dot(x, &w.up()[row * h..][..h]) + bias(w.up_bias(), row);
                let gate = match w.gate() {
                    Some(gate) => dot(x, &gate[row * h..][..h]) + bias(w.gate_bias(), row),
                    None => 0.0,
                };
                tile.push(self.config.activation.eval(up as f64, gate as f64) as f32);
            }
            let offset = task.output_offset + (r * i * self.codec().width()) as u64;
            self.put_row(self.rank, offset, &tile, &mut bytes);
        }
        Ok(())
    }

    fn gemm1(&self, task: &TaskDescriptor) -> Result<(), RuntimeError> {
        let (h, i) = (self.config.hidden as usize, self.config.inter as usize);
        let bn = self.layout.geometry().tile.bn_hidden as usize;
        let e = self.expert(task)?;
        let w = self.weights;
        let mut hid = Vec::new();
        self.read_rows(task.input_offset, task.valid_rows, i, &mut hid);
        let (mut tile, mut bytes) = (Vec::with_capacity(bn), Vec::new());
        let first = task.col_tile as usize * bn;
        let cols = self.layout.geometry().hidden_cols(task.col_tile) as usize;
        for (r, hrow) in hid.chunks_exact(i).enumerate() {
            // The row's routing weight, dispatched with it: the output leaves scaled.
            let packet_row = task.row_tile * self.layout.geometry().tile.bm + r as u32;
            let at =
                self.layout.dispatch_weight(task.source_rank, task.local_expert, packet_row)?;
            let mut wb = [0u8; 4];
            // SAFETY: the weight was put with its row before the dispatch signal this task's
            // GEMM0 acquired; nobody writes it again this forward.
            unsafe { self.heap.get(self.rank, at, &mut wb) };
            let weight = f32::from_le_bytes(wb);
            tile.clear();
            for col in first..first + cols {
                let row = e * h + col;
                let bias = w.down_bias().map_or(0.0, |b| b[row]);
                tile.push(weight * (dot(hrow, &w.down()[row * i..][..i]) + bias));
            }
            let offset = task.output_offset + (r * h * self.codec().width()) as u64;
            self.put_row(task.source_rank, offset, &tile, &mut bytes);
        }
        let put = task.valid_rows as u64 * cols as u64 * self.codec().width() as u64;
        self.returned_bytes.fetch_add(put, StatOrdering::Relaxed);
        Ok(())
    }

    fn combine(&self, task: &TaskDescriptor) -> Result<(), RuntimeError> {
        let (h, k) = (self.config.hidden as usize, self.config.top_k as usize);
        let g = self.layout.geometry();
        let bn = g.hidden_cols(task.col_tile) as usize; // fewer in a ragged last tile
        let width = self.codec().width();
        let first_col = task.col_tile * g.tile.bn_hidden;
        let (mut acc, mut y, mut bytes) = (vec![0.0f32; bn], Vec::new(), vec![0u8; bn * width]);
        for r in 0..task.valid_rows as usize {
            let token = (task.row_tile * g.tile.bm) as usize + r;
            acc.fill(0.0);
            for slot in token * k..(token + 1) * k {
                let row = self.routing.rows[slot];
                if row == DROPPED {
                    continue;
                }
                let (owner, le) = self.map.owner(self.routing.experts[slot]);
                let offset = self.layout.row(Stage::Return, owner, le, row, first_col)?;
                // SAFETY: the returned tile was published by its return signal, observed
                // before this task was queued; nobody writes it during this forward again.
                unsafe { self.heap.get(self.rank, offset, &mut bytes) };
                self.codec().decode(&bytes, &mut y);
                // A plain sum: the owner's GEMM1 scaled the row by its routing weight.
                acc.iter_mut().zip(&y).for_each(|(a, &v)| *a += v);
            }
            if let Some(shared) = self.shared.get() {
                shared.add_tile(self.config, self.weights, token, first_col as usize, &mut acc);
            }
            let mut out = Vec::with_capacity(bn * width);
            self.codec().encode(&acc, &mut out);
            let offset = task.output_offset as usize + r * h * width;
            // SAFETY: this task is the only writer of its output tile; the output is read only
            // after every role of the rank has finished.
            unsafe { self.output.write(offset, &out) };
        }
        Ok(())
    }
}

impl<H: SymmetricHeap> TileExecutor for SimExecutor<'_, H> {
    fn execute(&self, task: &TaskDescriptor) -> Result<(), RuntimeError> {
        match task.task_kind()? {
            TaskKind::Gemm0 => self.gemm0(task),
            TaskKind::Gemm1 => self.gemm1(task),
            TaskKind::Combine => self.combine(task),
        }
    }
}

/// One rank's shared-expert intermediate rows and scales.
///
/// Shared experts on the simulator: local work on every token of the rank, no dispatch.
///
/// A rank computes its shared experts' intermediate rows ([`SharedRows::compute`]: the shared
/// GEMM0 of every token) after its dispatch is out, while the routed rows travel, before its
/// roles start; each combine task then computes the shared GEMM1 of its own tile's columns
/// ([`SharedRows::add_tile`]) and adds it to the routed sum. So the shared work is done once
/// per token and column, and no task, signal or byte of the protocol changes.
///
/// Numerics (the oracle's rounding points, `f32` accumulation in the simulator's lane order,
/// [`dot`]): `h = silu(x . gate_s) * (x . up_s)` rounded to the dtype; `ys = h .
/// down_s` rounded to the dtype; the scale `gs` is 1 or `sigmoid(x . gate_row)` in `f32`; the
/// combine adds `gs * ys` after the routed slots.
#[derive(Debug)]
pub(crate) struct SharedRows {
    /// Intermediate size `S` of the shared SwiGLU.
    inter: usize,
    /// `[tokens][S]`, dtype-rounded.
    h: Vec<f32>,
    /// `[tokens]`: `gs` of each token.
    scale: Vec<f32>,
}

impl SharedRows {
    /// The rows of `input` (`[tokens][hidden]`), or `None` when the config has no shared
    /// experts. Beats `heartbeat` after every token: the rank's peers may be waiting for it.
    pub(crate) fn compute(
        config: &MoeConfig,
        weights: &ShardWeights,
        input: &[f32],
        heartbeat: &Heartbeat,
    ) -> Option<SharedRows> {
        let inter = config.shared?.total_inter() as usize;
        let h = config.hidden as usize;
        let (up, gate) = (weights.shared_up()?, weights.shared_gate()?);
        let tokens = input.len() / h;
        let mut rows = SharedRows { inter, h: Vec::with_capacity(tokens * inter), scale: vec![] };
        for x in input.chunks_exact(h) {
            for n in 0..inter {
                let u = dot(x, &up[n * h..][..h]);
                let g = dot(x, &gate[n * h..][..h]);
                let v = Activation::SiluGated.eval(u as f64, g as f64) as f32;
                rows.h.push(config.dtype.round(v));
            }
            let gs = weights.shared_gate_row().map_or(1.0, |row| sigmoid(dot(x, row)));
            rows.scale.push(gs);
            heartbeat.beat();
        }
        Some(rows)
    }

    /// `acc[c] += gs * ys[first_col + c]` for token `token`'s shared output columns
    /// `first_col ..` (as many as `acc` holds).
    pub(crate) fn add_tile(
        &self,
        config: &MoeConfig,
        weights: &ShardWeights,
        token: usize,
        first_col: usize,
        acc: &mut [f32],
    ) {
        let Some(down) = weights.shared_down() else { return };
        let s = self.inter;
        let h = &self.h[token * s..][..s];
        let gs = self.scale[token];
        for (c, a) in acc.iter_mut().enumerate() {
            let ys = config.dtype.round(dot(h, &down[(first_col + c) * s..][..s]));
            *a += gs * ys;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_rounds() {
        for dtype in DType::ALL {
            let c = Codec(dtype);
            let values = [1.0f32, -2.5, 0.1, 3.0e-3];
            let mut bytes = Vec::new();
            c.encode(&values, &mut bytes);
            assert_eq!(bytes.len(), values.len() * c.width());
            let mut back = Vec::new();
            c.decode(&bytes, &mut back);
            let rounded: Vec<f32> = values.iter().map(|&v| dtype.round(v)).collect();
            assert_eq!(back, rounded, "{dtype}");
        }
    }

    #[test]
    fn dot_is_the_lane_order() {
        let a: Vec<f32> = (0..16).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..16).map(|i| 1.0 - i as f32 * 0.25).collect();
        let mut lanes = [0.0f32; LANES];
        for k in 0..16 {
            lanes[k % LANES] += a[k] * b[k];
        }
        let want = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
            + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        assert_eq!(dot(&a, &b).to_bits(), want.to_bits());
    }
}
