//! What the extension sees of a torch tensor, the checks every tensor passes before its memory
//! is touched, and the reads and writes of that memory.
//!
//! A tensor crosses the boundary as its metadata and its data pointer ([`TensorView`], read
//! through PyO3 by [`view`]), never as a Python-side copy. Host tensors are read and written in
//! place: the bytes are decoded to the `f32` values the simulator takes (core's host tensor
//! type) and the output is encoded straight into the tensor the caller allocated. CUDA
//! tensors take the same view (pointer, shape, dtype) to the device path ([`crate::device`]);
//! where host memory is needed (a CPU call's arguments, weights handed to core), a CUDA tensor
//! is [`BindError::NotOnHost`].
//!
//! Invariant: the memory of a [`HostTensor`] is only touched after [`TensorView::check_host`]
//! passed (a CPU, contiguous tensor whose byte length is its shape times its element size), and
//! only while the Python object is held.

use std::fmt;

use flashdmoe_core::DType;
use pyo3::prelude::*;

/// A torch element type, as `str(tensor.dtype)` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TorchDType {
    /// `torch.bfloat16`
    BF16,
    /// `torch.float16`
    F16,
    /// `torch.float32`
    F32,
    /// `torch.float64`
    F64,
    /// `torch.int32`
    I32,
    /// `torch.int64`
    I64,
    /// Anything else, by name (`"torch.int8"`, ...).
    Other(String),
}

impl TorchDType {
    /// Parses `str(tensor.dtype)`.
    pub fn parse(name: &str) -> TorchDType {
        match name {
            "torch.bfloat16" => TorchDType::BF16,
            "torch.float16" => TorchDType::F16,
            "torch.float32" => TorchDType::F32,
            "torch.float64" => TorchDType::F64,
            "torch.int32" => TorchDType::I32,
            "torch.int64" => TorchDType::I64,
            other => TorchDType::Other(other.to_owned()),
        }
    }

    /// The torch dtype a layer of `dtype` keeps its tensors in (f32 for both f32 dtypes).
    pub fn of_layer(dtype: DType) -> TorchDType {
        match dtype {
            DType::Bf16 => TorchDType::BF16,
            DType::F16 => TorchDType::F16,
            DType::F32 | DType::F32Exact => TorchDType::F32,
        }
    }

    /// The attribute of the `torch` module (`"bfloat16"`, ...).
    pub fn torch_name(&self) -> &str {
        match self {
            TorchDType::BF16 => "bfloat16",
            TorchDType::F16 => "float16",
            TorchDType::F32 => "float32",
            TorchDType::F64 => "float64",
            TorchDType::I32 => "int32",
            TorchDType::I64 => "int64",
            TorchDType::Other(name) => name.strip_prefix("torch.").unwrap_or(name),
        }
    }

    /// The safetensors element type name (`None` for types this crate never hands to core).
    pub fn safetensors_name(&self) -> Option<&'static str> {
        Some(match self {
            TorchDType::BF16 => "BF16",
            TorchDType::F16 => "F16",
            TorchDType::F32 => "F32",
            TorchDType::F64 => "F64",
            TorchDType::I32 => "I32",
            TorchDType::I64 => "I64",
            TorchDType::Other(_) => return None,
        })
    }

    /// Bytes per element, for the types whose memory this crate reads.
    pub fn elem_bytes(&self) -> Option<usize> {
        match self {
            TorchDType::BF16 | TorchDType::F16 => Some(2),
            TorchDType::F32 | TorchDType::I32 => Some(4),
            TorchDType::F64 | TorchDType::I64 => Some(8),
            TorchDType::Other(_) => None,
        }
    }

    /// The core dtype whose storage bytes this type's are (bf16, f16, f32).
    pub fn storage(&self) -> Option<DType> {
        match self {
            TorchDType::BF16 => Some(DType::Bf16),
            TorchDType::F16 => Some(DType::F16),
            TorchDType::F32 => Some(DType::F32),
            _ => None,
        }
    }
}

impl fmt::Display for TorchDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "torch.{}", self.torch_name())
    }
}

/// Why a tensor cannot be used; each names the argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindError {
    /// Not a torch tensor (a `TypeError`).
    NotATensor { what: String, found: String },
    /// On a device this call cannot use (a `ValueError`).
    Device { what: String, found: String, expected: String },
    /// A CUDA tensor where host memory is needed (a `ValueError`).
    NotOnHost { what: String, found: String },
    /// The wrong element type (a `TypeError`).
    DType { what: String, found: String, expected: String },
    /// The wrong shape (a `ValueError`).
    Shape { what: String, found: Vec<usize>, expected: String },
    /// Not contiguous (a `ValueError`).
    NotContiguous { what: String },
    /// More tokens than the layer was built for (a `ValueError`).
    TooManyTokens { tokens: usize, max: u32 },
    /// Values that are not what the argument must hold (a `ValueError`).
    Value { what: String, reason: String },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::NotATensor { what, found } => {
                write!(f, "{what} must be a torch.Tensor, got {found}")
            }
            BindError::Device { what, found, expected } => {
                write!(f, "{what} is on device {found}, expected {expected}")
            }
            BindError::NotOnHost { what, found } => write!(
                f,
                "{what} is on {found}, expected cpu (a call on CPU tensors runs on the \
                 simulator: every tensor of it must be on the CPU)"
            ),
            BindError::DType { what, found, expected } => {
                write!(f, "{what} has dtype {found}, expected {expected}")
            }
            BindError::Shape { what, found, expected } => {
                write!(f, "{what} has shape {found:?}, expected {expected}")
            }
            BindError::NotContiguous { what } => {
                write!(f, "{what} is not contiguous (call .contiguous() first)")
            }
            BindError::TooManyTokens { tokens, max } => write!(
                f,
                "x has {tokens} tokens, more than the layer's max_tokens ({max}); build the \
                 layer with a larger max_tokens"
            ),
            BindError::Value { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

/// A torch tensor's metadata and data pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorView {
    /// The argument's name, for errors (`"x"`, `"topk_ids"`, a state-dict key).
    pub what: String,
    /// `str(tensor.device)`: `"cpu"`, `"cuda:0"`, `"meta"`.
    pub device: String,
    /// The element type.
    pub dtype: TorchDType,
    /// The shape.
    pub shape: Vec<usize>,
    /// `tensor.is_contiguous()`.
    pub contiguous: bool,
    /// `tensor.data_ptr()`.
    pub ptr: usize,
}

impl TensorView {
    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks that the tensor's memory can be read and written here: on the CPU (a CUDA tensor
    /// is [`BindError::NotOnHost`]), contiguous, of a type whose size is known.
    pub fn check_host(&self) -> Result<(), BindError> {
        let what = self.what.clone();
        if self.device.split(':').next() == Some("cuda") {
            return Err(BindError::NotOnHost { what, found: self.device.clone() });
        }
        if self.device != "cpu" {
            let (found, expected) = (self.device.clone(), "cpu".to_owned());
            return Err(BindError::Device { what, found, expected });
        }
        if !self.contiguous {
            return Err(BindError::NotContiguous { what });
        }
        if self.dtype.elem_bytes().is_none() {
            let expected = "a floating-point or integer type".to_owned();
            return Err(BindError::DType { what, found: self.dtype.to_string(), expected });
        }
        Ok(())
    }

    /// Checks the element type is one of `expected`.
    pub fn check_dtype(&self, expected: &[TorchDType]) -> Result<(), BindError> {
        if expected.contains(&self.dtype) {
            return Ok(());
        }
        let names: Vec<String> = expected.iter().map(ToString::to_string).collect();
        Err(BindError::DType {
            what: self.what.clone(),
            found: self.dtype.to_string(),
            expected: names.join(" or "),
        })
    }

    /// Checks the shape is `expected`, described as `described` in the error.
    pub fn check_shape(&self, expected: &[usize], described: &str) -> Result<(), BindError> {
        if self.shape == expected {
            return Ok(());
        }
        Err(BindError::Shape {
            what: self.what.clone(),
            found: self.shape.clone(),
            expected: format!("{described} = {expected:?}"),
        })
    }

    /// Checks the tensor is `[rows, cols]` (described as `described` in the error) and returns
    /// `rows`.
    pub fn check_rows(&self, cols: usize, described: &str) -> Result<usize, BindError> {
        match self.shape[..] {
            [rows, c] if c == cols => Ok(rows),
            _ => Err(BindError::Shape {
                what: self.what.clone(),
                found: self.shape.clone(),
                expected: format!("{described} = [*, {cols}]"),
            }),
        }
    }

    /// The index `N` of a tensor on `cuda:N` (`cuda` alone is device 0), else
    /// [`BindError::Device`].
    pub fn cuda_index(&self) -> Result<u32, BindError> {
        let mut parts = self.device.splitn(2, ':');
        let index = match (parts.next(), parts.next()) {
            (Some("cuda"), None) => Some(0),
            (Some("cuda"), Some(n)) => n.parse().ok(),
            _ => None,
        };
        index.ok_or_else(|| BindError::Device {
            what: self.what.clone(),
            found: self.device.clone(),
            expected: "a CUDA device".into(),
        })
    }

    fn nbytes(&self) -> usize {
        self.numel() * self.dtype.elem_bytes().unwrap_or(0)
    }
}

/// `tokens` as the `u32` the layer takes, if at most the layer's `max` (else
/// [`BindError::TooManyTokens`]).
pub fn check_tokens(tokens: usize, max: u32) -> Result<u32, BindError> {
    u32::try_from(tokens).ok().filter(|&t| t <= max).ok_or(BindError::TooManyTokens { tokens, max })
}

/// Whether `obj` is a `torch.Tensor`.
pub fn is_tensor(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    obj.is_instance(&obj.py().import("torch")?.getattr("Tensor")?)
}

/// The view of a Python object that must be a torch tensor.
pub fn view(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<TensorView> {
    if !is_tensor(obj)? {
        let found = obj.get_type().name()?.to_string();
        return Err(BindError::NotATensor { what: what.to_owned(), found }.into());
    }
    Ok(TensorView {
        what: what.to_owned(),
        device: obj.getattr("device")?.str()?.to_string(),
        dtype: TorchDType::parse(&obj.getattr("dtype")?.str()?.to_string()),
        shape: obj.getattr("shape")?.extract()?,
        contiguous: obj.call_method0("is_contiguous")?.extract()?,
        ptr: obj.call_method0("data_ptr")?.extract()?,
    })
}

/// A checked host tensor: its view and the Python object that keeps its memory alive.
#[derive(Debug)]
pub struct HostTensor<'py> {
    view: TensorView,
    _owner: Bound<'py, PyAny>,
}

impl<'py> HostTensor<'py> {
    /// `obj`'s view after [`TensorView::check_host`].
    pub fn new(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<HostTensor<'py>> {
        let view = view(what, obj)?;
        view.check_host()?;
        Ok(HostTensor { view, _owner: obj.clone() })
    }

    /// The view.
    pub fn view(&self) -> &TensorView {
        &self.view
    }

    /// The tensor's memory.
    pub fn bytes(&self) -> &[u8] {
        let len = self.view.nbytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: `check_host` passed, so `ptr` is the start of a contiguous CPU tensor of
        // exactly `len` bytes (its shape times its element size), and `_owner` keeps the
        // tensor alive for as long as this borrow. As for any torch op, the caller does not
        // write the tensor from another thread while the op runs.
        unsafe { std::slice::from_raw_parts(self.view.ptr as *const u8, len) }
    }

    /// The elements as `f32` (bf16, f16, f32 tensors).
    pub fn to_f32(&self) -> Result<Vec<f32>, BindError> {
        let storage = self.view.dtype.storage().ok_or_else(|| BindError::DType {
            what: self.view.what.clone(),
            found: self.view.dtype.to_string(),
            expected: "torch.bfloat16, torch.float16 or torch.float32".to_owned(),
        })?;
        let mut out = Vec::with_capacity(self.view.numel());
        storage.decode_into(self.bytes(), &mut out);
        Ok(out)
    }

    /// The elements of an int32 or int64 tensor as expert indices (`< limit`).
    pub fn to_indices(&self, limit: u32) -> Result<Vec<u32>, BindError> {
        let bytes = self.bytes();
        let values: Vec<i64> = match self.view.dtype {
            TorchDType::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
            TorchDType::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect(),
            _ => {
                return Err(BindError::DType {
                    what: self.view.what.clone(),
                    found: self.view.dtype.to_string(),
                    expected: "torch.int64 or torch.int32".to_owned(),
                });
            }
        };
        values
            .iter()
            .map(|&v| u32::try_from(v).ok().filter(|&v| v < limit).ok_or(v))
            .collect::<Result<_, i64>>()
            .map_err(|v| BindError::Value {
                what: self.view.what.clone(),
                reason: format!("expert index {v} is out of range (the layer has {limit} experts)"),
            })
    }

    /// Writes `values`, rounded to the tensor's element type (bf16, f16, f32), into it.
    pub fn write_f32(&self, values: &[f32]) -> Result<(), BindError> {
        let storage = self.view.dtype.storage().ok_or_else(|| BindError::DType {
            what: self.view.what.clone(),
            found: self.view.dtype.to_string(),
            expected: "torch.bfloat16, torch.float16 or torch.float32".to_owned(),
        })?;
        if values.len() != self.view.numel() {
            return Err(BindError::Shape {
                what: self.view.what.clone(),
                found: self.view.shape.clone(),
                expected: format!("{} elements", values.len()),
            });
        }
        let mut bytes = Vec::with_capacity(self.view.nbytes());
        storage.encode_into(values, &mut bytes);
        if !bytes.is_empty() {
            // SAFETY: as in `bytes`, `ptr` starts a live, contiguous CPU tensor of exactly
            // `bytes.len()` bytes (numel checked above, element size from its dtype); `bytes` is
            // our own buffer, so the two do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.view.ptr as *mut u8, bytes.len())
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(dtype: TorchDType, shape: &[usize]) -> TensorView {
        TensorView {
            what: "x".into(),
            device: "cpu".into(),
            dtype,
            shape: shape.to_vec(),
            contiguous: true,
            ptr: 0,
        }
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in [TorchDType::BF16, TorchDType::F16, TorchDType::F32, TorchDType::I64] {
            assert_eq!(TorchDType::parse(&d.to_string()), d);
        }
        assert_eq!(TorchDType::parse("torch.int8").torch_name(), "int8");
        assert_eq!(TorchDType::of_layer(DType::F32Exact), TorchDType::F32);
        assert_eq!(TorchDType::of_layer(DType::Bf16).storage(), Some(DType::Bf16));
        assert_eq!(TorchDType::I32.storage(), None);
    }

    #[test]
    fn host_checks_name_the_argument_and_the_problem() {
        assert_eq!(cpu(TorchDType::BF16, &[2, 64]).check_host(), Ok(()));
        let cuda = TensorView { device: "cuda:1".into(), ..cpu(TorchDType::BF16, &[2]) };
        let e = cuda.check_host().unwrap_err();
        assert!(matches!(&e, BindError::NotOnHost { .. }));
        assert!(e.to_string().starts_with("x is on cuda:1, expected cpu"), "{e}");
        assert_eq!(cuda.cuda_index(), Ok(1));
        assert_eq!(TensorView { device: "cuda".into(), ..cuda.clone() }.cuda_index(), Ok(0));
        assert!(cpu(TorchDType::BF16, &[2]).cuda_index().is_err());
        let meta = TensorView { device: "meta".into(), ..cpu(TorchDType::BF16, &[2]) };
        assert_eq!(meta.check_host().unwrap_err().to_string(), "x is on device meta, expected cpu");
        let strided = TensorView { contiguous: false, ..cpu(TorchDType::BF16, &[2]) };
        assert!(matches!(strided.check_host(), Err(BindError::NotContiguous { .. })));
        let odd = cpu(TorchDType::Other("torch.complex64".into()), &[2]);
        assert!(matches!(odd.check_host(), Err(BindError::DType { .. })));
    }

    #[test]
    fn dtype_and_shape_checks() {
        let x = cpu(TorchDType::F32, &[3, 64]);
        let e = x.check_dtype(&[TorchDType::BF16]).unwrap_err();
        assert_eq!(e.to_string(), "x has dtype torch.float32, expected torch.bfloat16");
        assert_eq!(x.check_shape(&[3, 64], "[tokens, hidden]"), Ok(()));
        let e = x.check_shape(&[3, 128], "[tokens, hidden]").unwrap_err();
        assert_eq!(e.to_string(), "x has shape [3, 64], expected [tokens, hidden] = [3, 128]");
        assert_eq!(x.check_rows(64, "[tokens, hidden]"), Ok(3));
        let flat = cpu(TorchDType::F32, &[64]);
        let e = flat.check_rows(64, "[tokens, hidden]").unwrap_err();
        assert_eq!(e.to_string(), "x has shape [64], expected [tokens, hidden] = [*, 64]");
    }
}
