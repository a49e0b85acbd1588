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
        let box_cols = (128 / elem) as u32;
        let mut map = TensorMap::zeroed();
        // SAFETY: `map` is a live, 128-byte aligned 128-byte value (`TensorMap`'s layout is
        // the driver's `CUtensorMap`, checked above), written only by the call.
        unsafe {
            device.api().encode_tiled_2d(
                (&mut map as *mut TensorMap).cast(),
                data_type(dtype),
                address,
                [cols, rows],
                row_stride,
                [box_cols, box_rows],
            )
        }
        .map_err(driver("cuTensorMapEncodeTiled"))?;
        Ok(map)
    }
}
