//! The checkpoint loader over tensors held in memory, and the names of a layer's tensors.
//!
//! [`LayerWeights::from_tensors`] takes named tensors as borrowed little-endian bytes (a
//! PyTorch state dict seen from Rust: name, element type, shape, the tensor's own memory) and
//! loads the layer from them with exactly the rules of a safetensors checkpoint
//! (`weights/checkpoint.rs`: stacked, Mixtral and Hugging Face names, layer prefixes, BF16 /
//! F16 / F32 rounded to the config's dtype). Nothing is copied but the layer's own tensors,
//! which are decoded to `f32` as they are read: the tensors are laid end to end as one virtual
//! data section ([`Slices`]) under a header built from their names and shapes.
//!
//! [`LayerWeights::tensor_names`] lists the tensors a config needs under the stacked names of
//! our own files, which is how a caller names its own copies of them.

use std::io::{Read, Seek, SeekFrom};

use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use super::checkpoint::{Checkpoint, Shard, stacked_name};
use super::{LayerWeights, WeightsError, specs};
use crate::config::{ConfigError, MoeConfig};

/// One named tensor held in memory, for [`LayerWeights::from_tensors`].
#[derive(Clone, Debug)]
pub struct TensorBytes<'a> {
    /// The tensor's name (e.g. `model.layers.0.block_sparse_moe.gate.weight`).
    pub name: &'a str,
    /// The element type, by its safetensors name (`"BF16"`, `"F16"`, `"F32"`, `"I64"`, ...).
    /// Only BF16, F16 and F32 tensors can be loaded; others may be present if not needed.
    pub dtype: &'a str,
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements, row-major and little-endian: exactly `shape`'s element count times the
    /// element size.
    pub data: &'a [u8],
}

/// One tensor a config needs (see [`LayerWeights::tensor_names`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightTensor {
    /// The [`LayerWeights`] field (`"router"`, `"up"`, `"gate"`, `"down"`, `"up_bias"`, ...).
    pub field: &'static str,
    /// Its name in our own (stacked) files, e.g. `experts.up.weight`.
    pub name: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
}

impl LayerWeights {
    /// The tensors `config` needs, in field order, with their stacked names and shapes.
    pub fn tensor_names(config: &MoeConfig) -> Result<Vec<WeightTensor>, ConfigError> {
        config.validate()?;
        Ok(specs(config)
            .into_iter()
            .map(|s| WeightTensor { field: s.name, name: stacked_name(s.name), shape: s.shape })
            .collect())
    }

    /// The layer among `tensors` (module doc), under the names and `prefix` rules of
    /// [`LayerWeights::from_safetensors`]. Tensors the layer does not use are never read.
    pub fn from_tensors(
        config: &MoeConfig,
        tensors: &[TensorBytes<'_>],
        prefix: Option<&str>,
    ) -> Result<LayerWeights, WeightsError> {
        checkpoint(tensors)?.load(config, prefix)
    }
}

/// `tensors` as a checkpoint of one file: a header built from their names and shapes over
/// their bytes laid end to end (module doc).
pub(super) fn checkpoint<'a>(
    tensors: &[TensorBytes<'a>],
) -> Result<Checkpoint<Slices<'a>>, WeightsError> {
    let format = |message: String| WeightsError::Format { file: "<memory>".into(), message };
    let mut infos = Vec::with_capacity(tensors.len());
    let mut parts = Vec::with_capacity(tensors.len());
    let mut end = 0usize;
    for t in tensors {
        let quoted = serde_json::Value::String(t.dtype.to_owned());
        let dtype: Dtype = serde_json::from_value(quoted).map_err(|_| WeightsError::DType {
            tensor: t.name.to_owned(),
            dtype: t.dtype.to_owned(),
        })?;
        let start = end;
        end = start
            .checked_add(t.data.len())
            .ok_or_else(|| format("the tensors' sizes overflow".into()))?;
        let info = TensorInfo { dtype, shape: t.shape.clone(), data_offsets: (start, end) };
        infos.push((t.name.to_owned(), info));
        parts.push(t.data);
    }
    // Metadata::new checks that each tensor's bytes match its shape and element type.
    let meta = Metadata::new(None, infos).map_err(|e| format(e.to_string()))?;
    let shard = Shard { label: "<memory>".into(), reader: Slices::new(parts), data_start: 0, meta };
    Ok(Checkpoint { shards: vec![shard] })
}

/// Byte slices read as one stream, end to end.
pub(super) struct Slices<'a> {
    parts: Vec<&'a [u8]>,
    /// Where each part starts in the stream.
    starts: Vec<u64>,
    len: u64,
    pos: u64,
}

impl<'a> Slices<'a> {
    fn new(parts: Vec<&'a [u8]>) -> Slices<'a> {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0u64;
        for p in &parts {
            starts.push(len);
            len += p.len() as u64;
        }
        Slices { parts, starts, len, pos: 0 }
    }
}

impl Read for Slices<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // The last part starting at or before `pos` (empty parts share a start with the next).
        let i = self.starts.partition_point(|&s| s <= self.pos).saturating_sub(1);
        let Some(part) = self.parts.get(i) else { return Ok(0) };
        let offset = (self.pos - self.starts[i]) as usize;
        let rest = part.get(offset..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Slices<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before 0");
        self.pos = target.ok_or_else(invalid)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::tests::swiglu_bias as cfg;

    #[test]
    fn slices_read_across_parts_and_seek() {
        let mut s = Slices::new(vec![b"ab", b"", b"cde", b"f"]);
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"abcdef");
        s.seek(SeekFrom::Start(1)).unwrap();
        let mut three = [0u8; 3];
        s.read_exact(&mut three).unwrap();
        assert_eq!(&three, b"bcd");
        assert_eq!(s.seek(SeekFrom::End(-1)).unwrap(), 5);
        assert!(s.seek(SeekFrom::Current(-9)).is_err());
        assert_eq!(s.seek(SeekFrom::Start(99)).unwrap(), 99);
        assert_eq!(s.read(&mut three).unwrap(), 0);
    }

    #[test]
    fn tensor_names_are_the_stacked_names() {
        let names = LayerWeights::tensor_names(&cfg()).unwrap();
        let listed: Vec<_> = names.iter().map(|t| (t.field, t.name)).collect();
        assert_eq!(
            listed,
            [
                ("router", "router.weight"),
                ("up", "experts.up.weight"),
                ("gate", "experts.gate.weight"),
                ("down", "experts.down.weight"),
                ("up_bias", "experts.up.bias"),
                ("gate_bias", "experts.gate.bias"),
                ("down_bias", "experts.down.bias"),
            ]
        );
        assert_eq!(names[3].shape, vec![3, 64, 128]);
        let bad = MoeConfig { hidden: 3, ..cfg() };
        assert!(LayerWeights::tensor_names(&bad).is_err());
    }

    /// The same loader as a file: a safetensors file's tensors, borrowed, load identically.
    #[test]
    fn in_memory_tensors_load_like_the_file_they_came_from() {
        let c = cfg();
        let w = LayerWeights::generate(&c, 5).unwrap();
        let file = w.to_safetensors(&c).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
        names.sort();
        let views: Vec<_> = names.iter().map(|n| (n, st.tensor(n).unwrap())).collect();
        let tensors: Vec<TensorBytes<'_>> = views
            .iter()
            .map(|(n, v)| TensorBytes {
                name: n.as_str(),
                dtype: "BF16",
                shape: v.shape().to_vec(),
                data: v.data(),
            })
            .collect();
        assert_eq!(LayerWeights::from_tensors(&c, &tensors, None).unwrap(), w);
        // Strict loading: without a prefix every tensor is in the layer's scope, so an
        // unrelated one (here an integer and an empty tensor) is refused by name.
        let steps = 7i64.to_le_bytes();
        let mut extra = tensors.clone();
        extra.insert(1, TensorBytes { name: "step", dtype: "I64", shape: vec![1], data: &steps });
        extra.push(TensorBytes { name: "empty", dtype: "F32", shape: vec![0], data: &[] });
        let e = LayerWeights::from_tensors(&c, &extra, None).unwrap_err();
        assert!(
            matches!(&e, WeightsError::Unexpected { tensor, .. } if tensor == "empty" || tensor == "step"),
            "{e}"
        );

        // Bytes that do not match the shape, and unknown element types, are typed errors.
        let mut short = tensors.clone();
        short[0].data = &short[0].data[2..];
        let e = LayerWeights::from_tensors(&c, &short, None).unwrap_err();
        assert!(matches!(e, WeightsError::Format { .. }), "{e}");
        let mut odd = tensors.clone();
        odd[0].dtype = "Q4";
        let e = LayerWeights::from_tensors(&c, &odd, None).unwrap_err();
        assert!(matches!(&e, WeightsError::DType { dtype, .. } if dtype == "Q4"), "{e}");
        // A needed tensor of a type the loader cannot convert.
        let mut int = tensors.clone();
        int.iter_mut().find(|t| t.name == "router.weight").unwrap().dtype = "I16";
        let e = LayerWeights::from_tensors(&c, &int, None).unwrap_err();
        assert!(matches!(&e, WeightsError::DType { tensor, .. } if tensor == "router.weight"));
        assert!(matches!(
            LayerWeights::from_tensors(&c, &[], None),
            Err(WeightsError::Missing { .. })
        ));
    }
}
