//! Writing a layer as a safetensors file with the stacked names, in the config's dtype.

use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, View};

use super::names::stacked_name;
use super::read::io_error;
use crate::config::MoeConfig;
use crate::dtype::DType;
use crate::weights::{LayerWeights, WeightsError, specs};

/// A tensor to write: safetensors dtype, shape, little-endian bytes.
pub(in crate::weights) struct Bytes {
    pub(in crate::weights) dtype: Dtype,
    pub(in crate::weights) shape: Vec<usize>,
    pub(in crate::weights) data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.data[..]).into()
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl LayerWeights {
    fn to_bytes(&self, config: &MoeConfig) -> Result<Vec<(&'static str, Bytes)>, WeightsError> {
        self.check_shapes(config)?;
        let dtype = match config.dtype {
            DType::Bf16 => Dtype::BF16,
            DType::F16 => Dtype::F16,
            DType::F32 | DType::F32Exact => Dtype::F32,
        };
        Ok(specs(config)
            .into_iter()
            .map(|s| {
                let values = self.tensor(s.name).unwrap_or_default();
                let data: Vec<u8> = match config.dtype {
                    DType::Bf16 => {
                        values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect()
                    }
                    DType::F16 => {
                        values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
                    }
                    DType::F32 | DType::F32Exact => {
                        values.iter().flat_map(|v| v.to_le_bytes()).collect()
                    }
                };
                (stacked_name(s.name), Bytes { dtype, shape: s.shape, data })
            })
            .collect())
    }

    /// The layer as a safetensors file in memory, with the stacked names of the module doc, in
    /// the config's dtype.
    pub fn to_safetensors(&self, config: &MoeConfig) -> Result<Vec<u8>, WeightsError> {
        let tensors = self.to_bytes(config)?;
        safetensors::serialize(tensors.iter().map(|(n, b)| (*n, b)), None).map_err(|e| {
            WeightsError::Format { file: "<memory>".to_owned(), message: e.to_string() }
        })
    }

    /// Writes [`LayerWeights::to_safetensors`] to `path`.
    pub fn save_safetensors(&self, config: &MoeConfig, path: &Path) -> Result<(), WeightsError> {
        let tensors = self.to_bytes(config)?;
        safetensors::serialize_to_file(tensors.iter().map(|(n, b)| (*n, b)), None, path)
            .map_err(|e| io_error(path, std::io::Error::other(e.to_string())))
    }
}
