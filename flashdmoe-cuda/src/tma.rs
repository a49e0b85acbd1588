//! Tensor maps for the tensor memory accelerator (TMA): the descriptors the Hopper tile
//! engine (`kernels/tile_wgmma.cuh`) loads its B operands through.
//!
//! A [`TensorMap`] is the driver's opaque 128-byte `CUtensorMap`, encoded on the host for one
//! 2-D row-major tensor and passed to the kernel by value inside its `__grid_constant__`
//! parameter block (`fdm_tensor_map` in the generated `fdm_params.h`). The engine's layout
//! is fixed: rows of 128 bytes of K per shared-memory row with the 128-byte swizzle, so a box
//! is always `128 / element size` elements wide.
//!
//! Invariant: a map is only built after the address, shape and stride were checked against
//! what the TMA accepts ([`TensorMap::tiled_2d`] returns [`CudaError::InvalidLaunch`] naming
//! the bad value instead of letting the driver fail with a bare code).

use bytemuck::{Pod, Zeroable};
use cudarc::driver::sys as cu;
use flashdmoe_core::DType;

use crate::device::Device;
use crate::error::{CudaError, Result, driver};

/// An encoded tensor map (`CUtensorMap`, `fdm_tensor_map`): 128 opaque bytes, 128-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(128))]
pub struct TensorMap {
    /// The driver's encoding.
    pub opaque: [u64; 16],
}

// SAFETY: plain integers, no padding (16 x 8 = 128 bytes = the alignment).
unsafe impl Zeroable for TensorMap {}
// SAFETY: as above; `Copy` and `#[repr(C)]`.
unsafe impl Pod for TensorMap {}

const _: () = assert!(size_of::<TensorMap>() == 128 && align_of::<TensorMap>() == 128);

/// The TMA element type of a dtype the engine loads (f32 loads as plain f32: the tensor cores
/// read its top 19 bits in tf32 mode).
fn data_type(dtype: DType) -> cu::CUtensorMapDataType {
    use cu::CUtensorMapDataType as T;
    match dtype {
        DType::Bf16 => T::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        DType::F16 => T::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        DType::F32 | DType::F32Exact => T::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
    }
}

impl TensorMap {
    /// A map over the row-major `rows x cols` tensor of `dtype` at device address `address`
    /// (rows `row_stride` bytes apart), loaded in boxes of `box_rows` rows by one 128-byte row
    /// of columns, with the 128-byte swizzle.
    pub fn tiled_2d(
        device: &Device,
        dtype: DType,
        address: u64,
        rows: u64,
        cols: u64,
        row_stride: u64,
        box_rows: u32,
    ) -> Result<TensorMap> {
        let elem = u64::from(dtype.elem_bytes());
        let invalid =
            |reason: String| CudaError::InvalidLaunch { entry: "tensor map".into(), reason };
        if !address.is_multiple_of(16) {
            return Err(invalid(format!("address {address:#x} is not 16-byte aligned")));
        }
        if !row_stride.is_multiple_of(16) || row_stride < cols * elem || row_stride >= 1 << 40 {
            return Err(invalid(format!(
                "row stride {row_stride} bytes must be a multiple of 16, at least a row \
                 ({cols} x {elem} bytes) and below 2^40"
            )));
        }
        if rows == 0 || cols == 0 || rows > 1 << 32 || cols > 1 << 32 {
            return Err(invalid(format!(
                "{rows} x {cols} is not a TMA tensor shape (1..=2^32 each)"
            )));
        }
        if box_rows == 0 || box_rows > 256 {
            return Err(invalid(format!("box of {box_rows} rows (1..=256)")));
        }
        encode(device, dtype, address, [cols, rows], row_stride, box_rows, true)
    }

    /// A map over B stored as tiles ([`swizzled_tiles`]; `bytes` of them at device address
    /// `address`), seen as a tensor of 128-byte rows, in boxes of `box_rows` rows and without
    /// swizzle: the bytes already are in the swizzle's order, so a box lands in shared memory
    /// as a swizzled box of row-major B would (`tile_wgmma.cuh` `kTiledMap`, which addresses a
    /// tile by its first row). The rows are addressed by 32-bit signed coordinates: at most
    /// 2^31 of them (256 GiB).
    pub fn tiles(
        device: &Device,
        dtype: DType,
        address: u64,
        bytes: u64,
        box_rows: u32,
    ) -> Result<TensorMap> {
        let invalid =
            |reason: String| CudaError::InvalidLaunch { entry: "tensor map".into(), reason };
        if !address.is_multiple_of(128) {
            return Err(invalid(format!("tiles at {address:#x}: not 128-byte aligned")));
        }
        if bytes == 0 || !bytes.is_multiple_of(128) || bytes / 128 > 1 << 31 {
            return Err(invalid(format!(
                "{bytes} bytes of tiles are not 1..=2^31 rows of 128 bytes"
            )));
        }
        if box_rows == 0 || box_rows > 256 {
            return Err(invalid(format!("box of {box_rows} rows (1..=256)")));
        }
        let elem = u64::from(dtype.elem_bytes());
        encode(device, dtype, address, [128 / elem, bytes / 128], 128, box_rows, false)
    }
}

/// Encodes the map over `dims` = (columns, rows) of `dtype` at `address`, rows `row_stride`
/// bytes apart, in boxes of one 128-byte row of columns by `box_rows` (checked by the callers).
fn encode(
    device: &Device,
    dtype: DType,
    address: u64,
    dims: [u64; 2],
    row_stride: u64,
    box_rows: u32,
    swizzle: bool,
) -> Result<TensorMap> {
    let box_cols = (128 / u64::from(dtype.elem_bytes())) as u32;
    let mut map = TensorMap::zeroed();
    // SAFETY: `map` is a live, 128-byte aligned 128-byte value (`TensorMap`'s layout is the
    // driver's `CUtensorMap`, checked above), written only by the call.
    unsafe {
        device.api().encode_tiled_2d(
            (&mut map as *mut TensorMap).cast(),
            data_type(dtype),
            address,
            dims,
            row_stride,
            [box_cols, box_rows],
            swizzle,
        )
    }
    .map_err(driver("cuTensorMapEncodeTiled"))?;
    Ok(map)
}

/// A row-major tensor of `row_bytes`-byte rows (a multiple of 128) as the tile bench's engine
/// reads B stored as tiles (`tile_wgmma.cuh` `load_b`: by bulk copies with `kTiledRows`, or
/// through [`TensorMap::tiles`] with `kTiledMap`): for each block of `rows` rows, its
/// k-tiles (128 bytes of every row of the block) one after another, each `rows x 128` bytes
/// contiguous and already in the 128-byte swizzle's order — 16-byte chunk `c` of the block's
/// row `r` at chunk `c ^ (r % 8)`, where a TMA box with the 128-byte swizzle puts it in shared
/// memory. A permutation within each block: block `b` keeps the bytes `[b * rows * row_bytes,
/// (b + 1) * rows * row_bytes)` of the row-major tensor, so a block's tiles start where its
/// rows did. `bytes.len()` must be a whole number of blocks.
pub fn swizzled_tiles(bytes: &[u8], rows: usize, row_bytes: usize) -> Vec<u8> {
    assert!(
        rows > 0 && row_bytes.is_multiple_of(128) && bytes.len().is_multiple_of(rows * row_bytes),
        "swizzled_tiles: {} bytes are not whole blocks of {rows} rows of {row_bytes} bytes",
        bytes.len()
    );
    let mut out = vec![0u8; bytes.len()];
    let block = rows * row_bytes;
    for (src, dst) in bytes.chunks(block).zip(out.chunks_mut(block)) {
        for kt in 0..row_bytes / 128 {
            for r in 0..rows {
                let from = r * row_bytes + kt * 128;
                let to = (kt * rows + r) * 128;
                for c in 0..8 {
                    let at = to + (c ^ (r % 8)) * 16;
                    dst[at..at + 16].copy_from_slice(&src[from + c * 16..from + c * 16 + 16]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 16-byte chunk lands where the engine's shared memory expects it: row r of a
    /// k-tile's tile at r * 128, its chunk c at c ^ (r % 8), blocks where their rows were.
    #[test]
    fn swizzled_tiles_put_each_chunk_where_a_swizzled_box_would() {
        let (n, row_bytes, rows) = (32, 384, 16); // 2 blocks, 3 k-tiles of 128 bytes
        // Each 16-byte chunk holds its own (row, chunk-in-row) id.
        let mut b = vec![0u8; n * row_bytes];
        for row in 0..n {
            for chunk in 0..row_bytes / 16 {
                b[row * row_bytes + chunk * 16] = row as u8;
                b[row * row_bytes + chunk * 16 + 1] = chunk as u8;
            }
        }
        let t = swizzled_tiles(&b, rows, row_bytes);
        assert_eq!(t.len(), b.len());
        for block in 0..2 {
            for kt in 0..3 {
                for r in 0..rows {
                    for c in 0..8 {
                        let at = ((block * 3 + kt) * rows + r) * 128 + (c ^ (r % 8)) * 16;
                        let want = ((block * rows + r) as u8, (kt * 8 + c) as u8);
                        assert_eq!((t[at], t[at + 1]), want, "block {block} kt {kt} r {r} c {c}");
                    }
                }
            }
        }
    }
}
