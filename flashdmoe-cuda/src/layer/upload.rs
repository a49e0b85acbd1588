//! One GPU's share of a layer on the device: its buffers, the weights of its ranks' experts in
//! weight slots (rank-major, a rank's routed experts then its parts of the shared experts:
//! core's `virtual_experts`), the router and its biases, the shared gate row, and the expert
//! tables, each tensor encoded to the dtype on the host's threads through a staging buffer.

use std::sync::Arc;

use bytemuck::Zeroable;
use cudarc::driver::{CudaSlice, CudaStream};
use flashdmoe_core::config::ExpertMap;
use flashdmoe_core::weights::SharedParts;
use flashdmoe_core::{BackendError, DType, LayerWeights};
use flashdmoe_proto::HeapLayout;

use super::{Gpu, Heaps, Plan, device_ptr};
use crate::device::Device;
use crate::launch::{Kernel, LaunchShape};
use crate::params::{Diag, INTER_MAPS, KernelParams};
use crate::spec::TileEngine;
use crate::tma::TensorMap;

/// Allocates one GPU's buffers and uploads the weights (the layer's, and its shared experts
/// as parts: `weights.1`) and tables.
pub(super) fn upload(
    plan: &Plan,
    device: Device,
    (kernel, shape): (Kernel, LaunchShape),
    first_rank: u32,
    weights: (&LayerWeights, Option<&SharedParts>),
    nccl_heap: Option<crate::nccl::SymmetricHeap>,
) -> Result<Gpu, BackendError> {
    let (weights, shared) = weights;
    let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::upload");
    let stream = device.stream().clone();
    let cfg = &plan.config;
    let r = plan.ranks_per_gpu as usize;
    let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
    let rows =
        r * cfg.tokens_per_rank as usize * cfg.hidden as usize * cfg.dtype.elem_bytes() as usize;
    let heaps = match nccl_heap {
        // Zeroed by `SymmetricHeap::new`.
        Some(heap) => Heaps::Nccl(heap),
        None => Heaps::Local(
            stream.alloc_zeros::<u8>(r * plan.layout.total_bytes() as usize).map_err(d)?,
        ),
    };
    let scratch = stream.alloc_zeros::<u8>(r * plan.scratch_bytes as usize).map_err(d)?;
    let x = stream.alloc_zeros::<u8>(rows.max(16)).map_err(d)?;
    let y = stream.alloc_zeros::<u8>(rows.max(16)).map_err(d)?;
    let diag = stream.alloc_zeros::<u8>(std::mem::size_of::<Diag>()).map_err(d)?;
    // The router, its biases and the shared gate row whole; of the experts' tensors only this
    // GPU's ranks' experts, in weight-slot order (`weight_slots`): a rank's routed experts,
    // then its parts of the shared experts.
    let slots = weight_slots(plan, first_rank);
    let e = cfg.experts as usize;
    let m = |s: &SharedParts| s.parts as usize;
    let up = shared.map(|s| (&s.up[..], m(s)));
    let gate = shared.map(|s| (&s.gate[..], m(s)));
    let down = shared.map(|s| (&s.down[..], m(s)));
    let tensors = [
        Some(vec![Some(&weights.router[..])]),
        Some(gather(&weights.up, e, up, &slots)),
        weights.gate.as_deref().map(|v| gather(v, e, gate, &slots)),
        Some(gather(&weights.down, e, down, &slots)),
        weights.up_bias.as_deref().map(|v| gather(v, e, None, &slots)),
        weights.gate_bias.as_deref().map(|v| gather(v, e, None, &slots)),
        weights.down_bias.as_deref().map(|v| gather(v, e, None, &slots)),
        weights.router_bias.as_deref().map(|v| vec![Some(v)]),
        weights.selection_bias.as_deref().map(|v| vec![Some(v)]),
        weights.shared_gate_row.as_deref().map(|v| vec![Some(v)]),
    ];
    // A tile of zeroed slack after each tensor: the epilogue of a ragged last column tile
    // reads the biases of its masked columns (never stored) past the last expert's end
    // (`processor_wgmma.cuh` gemm_consume), in bounds.
    let slack = plan.spec.tile.bn_hidden.max(plan.spec.tile.bn) as usize;
    let weights = tensors
        .into_iter()
        .map(|t| t.map(|parts| upload_parts(&stream, cfg.dtype, &parts, slack)).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    // Tables over the protocol's experts (the shared experts' parts included).
    let map = &plan.map;
    let owners: Vec<u32> = (0..plan.protocol.experts).map(|e| map.owner(e).0).collect();
    let locals: Vec<u32> = (0..plan.protocol.experts).map(|e| map.owner(e).1).collect();
    let le = plan.layout.geometry().local_experts;
    let l2g: Vec<u32> = (0..cfg.world)
        .flat_map(|r| (0..le).map(move |l| map.global(r, l).unwrap_or(u32::MAX)))
        .collect();
    let counts: Vec<u32> = (0..cfg.world).map(|r| map.experts_of(r).len() as u32).collect();
    let tables = [
        stream.clone_htod(&owners).map_err(d)?,
        stream.clone_htod(&locals).map_err(d)?,
        stream.clone_htod(&l2g).map_err(d)?,
        stream.clone_htod(&counts).map_err(d)?,
    ];
    // The Hopper engine reads each expert matrix in boxes of bn rows x 128 bytes of K (bn / 2
    // rows with paired tasks: MoeSpec::weight_box_rows): up and gate as [slots * I][H], down
    // as [slots * H][I].
    let mut tmaps = [TensorMap::zeroed(); 3];
    if let TileEngine::Wgmma(_) = plan.spec.engine {
        let (e, h, i) = (slots.len() as u64, cfg.hidden as u64, cfg.inter as u64);
        let eb = cfg.dtype.elem_bytes() as u64;
        let bn = plan.spec.weight_box_rows();
        let map = |slot: usize, rows: u64, cols: u64| -> Result<TensorMap, BackendError> {
            let Some(w) = &weights[slot] else { return Ok(TensorMap::zeroed()) };
            let address = device_ptr(w, &stream);
            Ok(TensorMap::tiled_2d(&device, cfg.dtype, address, rows, cols, cols * eb, bn)?)
        };
        tmaps = [map(1, e * i, h)?, map(2, e * i, h)?, map(3, e * h, i)?];
    }
    let rank_heap = |r| heaps.rank_ptr(&stream, plan.layout.total_bytes(), r);
    let (lp, g) = (plan.layout.params(), plan.layout.geometry());
    let inter_maps = row_maps(
        plan,
        &device,
        rank_heap,
        packet_rows_tensor(&plan.layout, lp.intermediate_rows, g.inter),
    );
    let return_maps = row_maps(
        plan,
        &device,
        rank_heap,
        packet_rows_tensor(&plan.layout, lp.return_rows, g.hidden),
    );
    Ok(Gpu {
        device,
        kernel,
        shape,
        first_rank,
        heaps,
        scratch,
        x,
        y,
        diag,
        weights,
        tables,
        tmaps,
        inter_maps,
        return_maps,
        epoch_word: stream.alloc_zeros::<u32>(1).map_err(d)?,
        given: stream
            .alloc_zeros::<u8>(r * cfg.tokens_per_rank as usize * cfg.top_k as usize * 8)
            .map_err(d)?,
        params: KernelParams::zeroed(),
    })
}

/// Maps of one region of rows of each of the first [`INTER_MAPS`] local ranks' heaps (at
/// `rank_heap(rank)`; `tensor`: offset, rows, columns, row stride in bytes), in boxes of a
/// tile's rows and 128 bytes with the 128-byte swizzle, and how many are valid: all of them or,
/// when one breaks the TMA's rules (a row not a multiple of 16 bytes, a misaligned region),
/// none, and the kernel takes its slower path, never a wrong one. Two regions are mapped
/// (`packet_rows_tensor`): the intermediate rows (GEMM1 loads its A through them; without them
/// it copies its A with `cp.async`) and the return rows (the experiment `FDM_TMA_STORE_GEMM1`
/// stores GEMM1's tiles through them; without them the threads store).
fn row_maps(
    plan: &Plan,
    device: &Device,
    rank_heap: impl Fn(u32) -> u64,
    (start, rows, cols, stride): (u64, u64, u64, u64),
) -> ([TensorMap; INTER_MAPS], u32) {
    let mut maps = [TensorMap::zeroed(); INTER_MAPS];
    if !matches!(plan.spec.engine, TileEngine::Wgmma(_)) {
        return (maps, 0);
    }
    let (dtype, box_rows) = (plan.config.dtype, plan.spec.tile.bm);
    let ranks = (plan.ranks_per_gpu as usize).min(INTER_MAPS);
    for (r, map) in maps.iter_mut().enumerate().take(ranks) {
        let address = rank_heap(r as u32) + start;
        match TensorMap::tiled_2d(device, dtype, address, rows, cols, stride, box_rows) {
            Ok(m) => *map = m,
            Err(_) => return ([TensorMap::zeroed(); INTER_MAPS], 0),
        }
    }
    (maps, ranks as u32)
}

/// A region of a rank's packet rows as the 2-D tensor its row map covers: (offset in the heap,
/// rows, columns, row stride in bytes) of the rows of `width` elements from heap offset
/// `start`. Row `(rank * local_experts + local_expert) * capacity + row` is the layout's row of
/// (rank, local expert, row): for the intermediate rows (`intermediate_rows`, I wide: GEMM1's A
/// map) its `intermediate_row(source, ..)`, the row the kernel derives from a GEMM1 task's
/// `input_offset`; for the return rows (`return_rows`, H wide) its `row(Stage::Return, owner,
/// ..)`, the row it derives from a GEMM1 task's `output_offset` (`processor_wgmma.cuh`).
fn packet_rows_tensor(layout: &HeapLayout, start: u64, width: u32) -> (u64, u64, u64, u64) {
    let g = layout.geometry();
    let rows = u64::from(g.world) * u64::from(g.local_experts) * u64::from(g.capacity);
    let cols = u64::from(width);
    (start, rows, cols, cols * u64::from(g.elem_bytes))
}

/// The global expert in each weight slot of the GPU whose first rank is `first_rank`: its
/// ranks' experts, rank-major, [`ExpertMap::local_experts`] slots a rank (`None` past the
/// experts a rank owns), in the protocol's numbering (a rank's shared-expert parts after its
/// routed experts). The kernel finds an expert's weights at `heap.cuh`'s `weight_slot`.
fn weight_slots(plan: &Plan, first_rank: u32) -> Vec<Option<u32>> {
    slots_of(&plan.map, first_rank, plan.ranks_per_gpu)
}

fn slots_of(map: &ExpertMap, first_rank: u32, ranks: u32) -> Vec<Option<u32>> {
    let le = map.local_experts();
    (first_rank..first_rank + ranks)
        .flat_map(|rank| (0..le).map(move |l| map.global(rank, l)))
        .collect()
}

/// The experts of `slots` from a `[experts][...]` tensor, slot after slot (`None`, zeros on the
/// device, for an empty slot): views, nothing copied. A virtual expert `e >= experts` (a
/// shared-expert part, core's `virtual_experts`: part `(e - experts) % m`) comes from
/// `shared`, the `[m][...]` parts and `m`, or is `None` without them (no shared biases).
fn gather<'a>(
    values: &'a [f32],
    experts: usize,
    shared: Option<(&'a [f32], usize)>,
    slots: &[Option<u32>],
) -> Vec<Option<&'a [f32]>> {
    let per = values.len() / experts.max(1);
    let part = |e: usize| {
        let (parts, m) = shared?;
        let per = parts.len() / m.max(1);
        parts.get((e - experts) % m.max(1) * per..).map(|p| &p[..per])
    };
    slots
        .iter()
        .map(|slot| match slot.map(|e| e as usize) {
            Some(e) if e < experts => Some(&values[e * per..][..per]),
            Some(e) => part(e),
            None => None,
        })
        .collect()
}

/// Bytes of host memory one upload step encodes into before copying them to the device.
const STAGING_BYTES: usize = 64 << 20;

/// One device tensor from equal-sized `parts` (one per weight slot; `None` stays zero), each
/// encoded to `dtype` on the host's threads through a staging buffer of at most
/// [`STAGING_BYTES`]: no host copy of the tensor (a DeepSeek-V3 layer's experts are 45 GB of
/// `f32`; gathering and encoding them whole on one thread took 160 s).
fn upload_parts(
    stream: &Arc<CudaStream>,
    dtype: DType,
    parts: &[Option<&[f32]>],
    slack: usize,
) -> Result<CudaSlice<u8>, BackendError> {
    let d = |e: cudarc::driver::DriverError| BackendError::Device(e.to_string());
    let eb = dtype.elem_bytes() as usize;
    let per = parts.iter().flatten().map(|p| p.len()).max().unwrap_or(0);
    let mut dst = stream.alloc_zeros::<u8>(((parts.len() * per + slack) * eb).max(1)).map_err(d)?;
    let chunk = (STAGING_BYTES / eb).max(1);
    let mut staging = vec![0u8; chunk.min(per) * eb];
    for (i, part) in parts.iter().enumerate() {
        let Some(values) = part else { continue };
        for (c, piece) in values.chunks(chunk).enumerate() {
            let bytes = &mut staging[..piece.len() * eb];
            dtype.encode_to(piece, bytes);
            let at = (i * per + c * chunk) * eb;
            // A copy from pageable memory returns once the bytes are staged by the driver, so
            // the buffer may be refilled at once.
            stream.memcpy_htod(&*bytes, &mut dst.slice_mut(at..at + bytes.len())).map_err(d)?;
        }
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use flashdmoe_core::MoeConfig;
    use flashdmoe_core::virtual_experts::VirtualExperts;
    use flashdmoe_proto::{Geometry, TileShape};

    use super::*;

    #[test]
    fn a_gpu_holds_the_experts_of_its_ranks_in_slot_order() {
        use flashdmoe_core::config::Placement;
        // 3 ranks with 2, 1 and 1 experts (a table); 2 slots a rank.
        let c = MoeConfig {
            world: 3,
            experts: 4,
            top_k: 1,
            placement: Placement::Table(vec![2, 0, 1, 0]),
            ..MoeConfig::default()
        };
        let map = c.expert_map().unwrap();
        assert_eq!(slots_of(&map, 0, 3), [Some(1), Some(3), Some(2), None, Some(0), None]);
        // Two GPUs of virtual ranks: the second holds rank 2's expert only.
        assert_eq!(slots_of(&map, 2, 1), [Some(0), None]);
        // Expert e's values are [e * 10, e * 10 + 1]: slot order, `None` for empty slots.
        let values: Vec<f32> =
            (0..4).flat_map(|e| [e as f32 * 10.0, e as f32 * 10.0 + 1.0]).collect();
        assert_eq!(
            gather(&values, 4, None, &slots_of(&map, 1, 2)),
            [Some(&[20.0, 21.0][..]), None, Some(&[0.0, 1.0][..]), None]
        );
    }

    #[test]
    fn a_rank_s_slots_hold_its_routed_experts_then_its_parts_of_the_shared_experts() {
        use flashdmoe_core::config::{Activation, Placement, SharedExperts, SharedGate};
        // Two ranks holding experts {1} and {0, 2, 3}, shared experts of 2 x 64 (m = 2): rank
        // r's parts are experts 4 + 2r + j, after its routed ones.
        let c = MoeConfig {
            world: 2,
            tokens_per_rank: 4,
            hidden: 64,
            inter: 64,
            experts: 4,
            top_k: 2,
            activation: Activation::SiluGated,
            capacity: flashdmoe_core::CapacityPolicy::Dropless,
            placement: Placement::Table(vec![1, 0, 1, 1]),
            shared: Some(SharedExperts { count: 2, inter: 64, gate: SharedGate::None }),
            ..MoeConfig::default()
        };
        let v = VirtualExperts::of(&c).unwrap().unwrap();
        let map = v.protocol_config(&c).unwrap().expert_map().unwrap();
        let slots = slots_of(&map, 0, 2);
        assert_eq!(
            slots,
            [Some(1), Some(4), Some(5), None, None, Some(0), Some(2), Some(3), Some(6), Some(7)]
        );
        // The uploaded slabs: each slot's up projection is its routed expert's, or the
        // matching part of the shared experts (rows [j I, (j + 1) I) of their up projection),
        // and the parts' down projections put together are the shared down projection.
        let w = LayerWeights::generate(&c, 2).unwrap();
        let parts = w.shared_parts(&c).unwrap().unwrap();
        let shared_up = w.shared_up.as_ref().unwrap();
        let per = 64 * 64;
        let up = gather(&w.up, 4, Some((&parts.up, 2)), &slots);
        for (slot, (got, expert)) in up.iter().zip(&slots).enumerate() {
            let want = match expert {
                Some(e @ 0..4) => Some(&w.up[*e as usize * per..][..per]),
                Some(e) => Some(&shared_up[(*e as usize - 4) % 2 * per..][..per]),
                None => None,
            };
            assert_eq!(*got, want, "slot {slot}");
        }
        let down = gather(&w.down, 4, Some((&parts.down, 2)), &slots);
        let shared_down = w.shared_down.as_ref().unwrap(); // [H][S], S = 128
        let (p0, p1) = (down[1].unwrap(), down[2].unwrap()); // rank 0's parts 0 and 1
        for row in 0..64 {
            assert_eq!(&shared_down[row * 128..][..64], &p0[row * 64..][..64], "row {row}");
            assert_eq!(&shared_down[row * 128 + 64..][..64], &p1[row * 64..][..64], "row {row}");
        }
        // The same parts on both ranks (replicated), and no shared biases.
        assert_eq!(down[1], down[8]);
        assert!(gather(&w.down, 4, None, &slots)[1].is_none());
    }

    #[test]
    fn uploads_encode_the_kernel_s_element_layout() {
        // The kernel reads bf16 as its upper 16 bits of the f32, little-endian.
        let mut bytes = [0u8; 4];
        DType::Bf16.encode_to(&[1.0, -2.0], &mut bytes);
        assert_eq!(bytes, [0x80, 0x3F, 0x00, 0xC0]);
        DType::F32.encode_to(&[1.0], &mut bytes);
        assert_eq!(bytes, 1.0f32.to_le_bytes());
    }

    /// A layout of 3 ranks x 2 local experts x 9 rows a packet, H 64, I 96, bf16.
    fn small_layout() -> HeapLayout {
        HeapLayout::new(Geometry {
            world: 3,
            local_experts: 2,
            tokens: 40,
            capacity: 9,
            hidden: 64,
            inter: 96,
            elem_bytes: 2,
            tile: TileShape::new(4, 8, 8),
        })
        .unwrap()
    }

    /// A row map's tensor (`tensor`: offset, rows, columns, row stride) numbers the rows of
    /// `layout` as the kernel does: the layout's offset of (rank, local expert, row, column 0),
    /// `row_at`, is the tensor's row `(rank * 2 + local expert) * 9 + row` (the kernel divides
    /// the offset past the tensor's start by a row's bytes), column c is c elements on (the
    /// box's inner coordinate), and the tensor ends inside the rank's heap.
    fn assert_numbering(
        layout: &HeapLayout,
        (start, rows, cols, stride): (u64, u64, u64, u64),
        width: u64,
        row_at: impl Fn(u32, u32, u32, u32) -> u64,
    ) {
        assert_eq!((cols, stride, rows), (width, width * 2, 3 * 2 * 9));
        for rank in 0..3 {
            for le in 0..2 {
                for row in 0..9 {
                    let offset = row_at(rank, le, row, 0);
                    assert_eq!((offset - start) % stride, 0);
                    assert_eq!((offset - start) / stride, u64::from((rank * 2 + le) * 9 + row));
                    assert_eq!(row_at(rank, le, row, 5), offset + 10);
                }
            }
        }
        assert!(start + rows * stride <= layout.total_bytes());
    }

    /// GEMM1's A map: a GEMM1 task's `input_offset` (the layout's intermediate row of (source,
    /// local expert, row)) is the map's row the kernel derives.
    #[test]
    fn the_intermediate_map_numbers_rows_as_the_layout_and_the_kernel_do() {
        let layout = small_layout();
        let start = layout.params().intermediate_rows;
        assert_numbering(
            &layout,
            packet_rows_tensor(&layout, start, 96),
            96,
            |source, le, row, col| layout.intermediate_row(source, le, row, col).unwrap(),
        );
    }

    /// The experiment FDM_TMA_STORE_GEMM1's map: a GEMM1 task's `output_offset` (the layout's
    /// return row of (owner, local expert, row)) is the map's row the kernel derives.
    #[test]
    fn the_return_map_numbers_rows_as_the_layout_and_the_kernel_do() {
        let layout = small_layout();
        let start = layout.params().return_rows;
        assert_numbering(
            &layout,
            packet_rows_tensor(&layout, start, 64),
            64,
            |owner, le, row, col| {
                layout.row(flashdmoe_proto::Stage::Return, owner, le, row, col).unwrap()
            },
        );
    }
}
