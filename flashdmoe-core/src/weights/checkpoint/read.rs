//! Reading: a safetensors file's header (checked: unique names, data length), and a
//! tensor's bytes, whole or some of its rows, rounded to the config's dtype.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use half::{bf16, f16};
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::Checkpoint;
use crate::dtype::DType;
use crate::weights::WeightsError;

/// Largest safetensors header accepted (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

pub(super) fn io_error(path: &Path, e: std::io::Error) -> WeightsError {
    WeightsError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// One safetensors file: its parsed header and a reader positioned anywhere.
pub(in crate::weights) struct Shard<R> {
    pub(in crate::weights) label: String,
    pub(in crate::weights) reader: R,
    pub(in crate::weights) data_start: u64,
    pub(in crate::weights) meta: Metadata,
}

impl<R: Read + Seek> Shard<R> {
    pub(in crate::weights) fn open(label: String, mut reader: R) -> Result<Shard<R>, WeightsError> {
        let format = |message: String| WeightsError::Format { file: label.clone(), message };
        let io = |e: std::io::Error| format(format!("read failed: {e}"));
        let len = reader.seek(SeekFrom::End(0)).map_err(io)?;
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut n = [0u8; 8];
        if len < 8 {
            return Err(format(format!("{len} bytes is too short for a safetensors file")));
        }
        reader.read_exact(&mut n).map_err(io)?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || n > len - 8 {
            return Err(format(format!("header length {n} is invalid for a {len}-byte file")));
        }
        let mut header = vec![0u8; n as usize];
        reader.read_exact(&mut header).map_err(io)?;
        let meta: Metadata =
            serde_json::from_slice(&header).map_err(|e| format(format!("invalid header: {e}")))?;
        // serde_json keeps the last of repeated keys: find them first.
        let keys: UniqueKeys =
            serde_json::from_slice(&header).map_err(|e| format(format!("invalid header: {e}")))?;
        if let Some(tensor) = keys.0 {
            return Err(WeightsError::Duplicate { tensor, file: label });
        }
        let data_start = 8 + n;
        if data_start.checked_add(meta.data_len() as u64) != Some(len) {
            return Err(format(format!(
                "the header describes {} data bytes but the file has {}",
                meta.data_len(),
                len - data_start
            )));
        }
        Ok(Shard { label, reader, data_start, meta })
    }
}

/// The first key a JSON object repeats, if any (the header's tensor names must be unique).
struct UniqueKeys(Option<String>);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UniqueKeys, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let (mut seen, mut repeated) = (HashSet::new(), None);
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    if !seen.insert(key.clone()) && repeated.is_none() {
                        repeated = Some(key);
                    }
                }
                Ok(UniqueKeys(repeated))
            }
        }
        d.deserialize_map(Keys)
    }
}

impl<R: Read + Seek> Checkpoint<R> {
    /// Where tensor `name` is (its shard and header entry) and its element size, after
    /// checking from the header alone that it is present with `shape` and a loadable element
    /// type.
    pub(super) fn locate(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(usize, TensorInfo, usize), WeightsError> {
        let (i, info) =
            self.find(name).ok_or_else(|| WeightsError::Missing { tensor: name.to_owned() })?;
        if info.shape != shape {
            return Err(WeightsError::Shape {
                tensor: name.to_owned(),
                expected: shape.to_vec(),
                found: info.shape,
            });
        }
        let elem = match info.dtype {
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::F32 => 4,
            other => {
                return Err(WeightsError::DType {
                    tensor: name.to_owned(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let (start, end) = info.data_offsets;
        if shape.iter().try_fold(elem, |a: usize, &d| a.checked_mul(d)) != end.checked_sub(start) {
            let message = format!("{name}: its data offsets do not match its shape");
            return Err(WeightsError::Format { file: self.shards[i].label.clone(), message });
        }
        Ok((i, info, elem))
    }

    /// Reads tensor `name`, which must have `shape`, into `out` as `dtype`-rounded `f32`:
    /// all of it, or with `rows` only those indices of its first dimension (ascending, each
    /// below `shape[0]`), one after the other. Only those rows' bytes are read: consecutive
    /// rows in one read, at most [`READ_CHUNK`] bytes (or one row) at a time.
    pub(super) fn read_into(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        rows: Option<&[u32]>,
        out: &mut [f32],
    ) -> Result<(), WeightsError> {
        let (i, info, elem) = self.locate(name, shape)?;
        let (count, row_len) = match shape.split_first() {
            Some((&n, rest)) => (n, rest.iter().product::<usize>()),
            None => (1, 1),
        };
        let runs = runs(rows, count);
        debug_assert_eq!(out.len(), runs.iter().map(|r| r.1).sum::<usize>() * row_len);
        let shard = &mut self.shards[i];
        let io = |e: std::io::Error| WeightsError::Format {
            file: shard.label.clone(),
            message: format!("reading {name}: {e}"),
        };
        let row_bytes = (row_len * elem) as u64;
        let per_read = (READ_CHUNK / row_bytes.max(1)).max(1) as usize;
        let base = shard.data_start + info.data_offsets.0 as u64;
        let mut bytes = Vec::new();
        let mut out = out.iter_mut();
        for (first, n) in runs {
            for at in (first..first + n).step_by(per_read) {
                let take = per_read.min(first + n - at);
                bytes.resize(take * row_len * elem, 0);
                shard.reader.seek(SeekFrom::Start(base + at as u64 * row_bytes)).map_err(io)?;
                shard.reader.read_exact(&mut bytes).map_err(io)?;
                // Bytes first: `zip` takes from its first iterator first.
                for (b, v) in bytes.chunks_exact(elem).zip(out.by_ref()) {
                    let raw = match info.dtype {
                        Dtype::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                        Dtype::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
                        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    };
                    *v = dtype.round(raw);
                }
            }
        }
        Ok(())
    }

    /// Reads tensor `name` of `shape`, or with `rows` those rows of it ([`Self::read_into`]).
    pub(super) fn read(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        rows: Option<&[u32]>,
    ) -> Result<Vec<f32>, WeightsError> {
        let per_row: usize = shape.iter().skip(1).product();
        let count = rows.map_or(shape.first().map_or(1, |&n| n), <[u32]>::len);
        let mut out = vec![0.0; count * per_row];
        self.read_into(name, shape, dtype, rows, &mut out)?;
        Ok(out)
    }
}

/// Most bytes [`Checkpoint::read_into`] reads at once (unless one row is larger); small in
/// tests, so that they read large tensors in several pieces.
pub(super) const READ_CHUNK: u64 = if cfg!(test) { 4096 } else { 16 << 20 };

/// The runs `(first row, rows)` of consecutive indices of `rows` (ascending), or one run of
/// all `count` rows.
fn runs(rows: Option<&[u32]>, count: usize) -> Vec<(usize, usize)> {
    let Some(rows) = rows else { return vec![(0, count)] };
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &r in rows {
        debug_assert!((r as usize) < count, "row {r} of {count}");
        match out.last_mut() {
            Some((first, n)) if *first + *n == r as usize => *n += 1,
            _ => out.push((r as usize, 1)),
        }
    }
    out
}

impl<'a> Checkpoint<Cursor<&'a [u8]>> {
    /// A safetensors file held in memory; its header is parsed and checked.
    pub(in crate::weights) fn from_bytes(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        Checkpoint::new(vec![Shard::open("<memory>".to_owned(), Cursor::new(bytes))?])
    }
}

impl Checkpoint<File> {
    /// The files of a checkpoint, opened; their headers are parsed and checked, nothing else
    /// is read yet.
    pub(in crate::weights) fn open(paths: &[impl AsRef<Path>]) -> Result<Self, WeightsError> {
        let shards = paths
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let file = File::open(p).map_err(|e| io_error(p, e))?;
                Shard::open(p.display().to_string(), file)
            })
            .collect::<Result<_, _>>()?;
        Checkpoint::new(shards)
    }
}
