//! safetensors load/save of [`LayerWeights`].
//!
//! ## Tensor names
//!
//! Our own files hold the layer stacked over experts (`E` experts, hidden `H`, intermediate
//! `I`, PyTorch `nn.Linear` layout):
//!
//! | name | shape | field |
//! |---|---|---|
//! | `router.weight` | `[E, H]` | [`LayerWeights::router`] |
//! | `experts.up.weight` | `[E, I, H]` | [`LayerWeights::up`] |
//! | `experts.gate.weight` | `[E, I, H]` | [`LayerWeights::gate`] (SwiGLU) |
//! | `experts.down.weight` | `[E, H, I]` | [`LayerWeights::down`] |
//! | `experts.up.bias` | `[E, I]` | [`LayerWeights::up_bias`] |
//! | `experts.gate.bias` | `[E, I]` | [`LayerWeights::gate_bias`] (SwiGLU) |
//! | `experts.down.bias` | `[E, H]` | [`LayerWeights::down_bias`] |
//! | `router.bias` | `[E]` | [`LayerWeights::router_bias`] |
//! | `router.selection_bias` | `[E]` | [`LayerWeights::selection_bias`] |
//! | `shared.up.weight` | `[S, H]` | [`LayerWeights::shared_up`] (`S` = shared experts x their size) |
//! | `shared.gate.weight` | `[S, H]` | [`LayerWeights::shared_gate`] |
//! | `shared.down.weight` | `[H, S]` | [`LayerWeights::shared_down`] |
//! | `shared.gate_row.weight` | `[H]` | [`LayerWeights::shared_gate_row`] |
//!
//! On load, two per-expert namings of Hugging Face checkpoints are also accepted, so real
//! models' expert weights can be used (biases, when the config has them, are the same names
//! with `.bias`):
//!
//! * Mixtral: `block_sparse_moe.gate.weight` (router), `block_sparse_moe.experts.{e}.w1.weight`
//!   (gate), `.w3.weight` (up), `.w2.weight` (down);
//! * Qwen-MoE / OLMoE / DeepSeek: `mlp.gate.weight` (router), `mlp.experts.{e}.gate_proj.weight`,
//!   `.up_proj.weight`, `.down_proj.weight`;
//! * Jamba: `feed_forward.router.weight` (router), `feed_forward.experts.{e}.gate_proj.weight`,
//!   `.up_proj.weight`, `.down_proj.weight`;
//! * gpt-oss in bf16 (transformers' layout, e.g. a dequantized checkpoint):
//!   `mlp.router.weight` `[E, H]` and `mlp.router.bias` `[E]`, the experts stacked and
//!   transposed: `mlp.experts.gate_up_proj` `[E, H, 2I]` with the gate projection in the even
//!   columns and the up projection in the odd ones (and `gate_up_proj_bias` `[E, 2I]`
//!   interleaved alike), `mlp.experts.down_proj` `[E, I, H]` and `down_proj_bias` `[E, H]`.
//!
//! Beside the experts, in the same MoE block (`mlp.` for the Hugging Face names): DeepSeek's
//! shared experts `mlp.shared_experts.{gate,up,down}_proj.weight` (`[S, H]`, `[S, H]`, `[H,
//! S]`: the `n_shared_experts` experts as one SwiGLU), Qwen's shared expert
//! `mlp.shared_expert.{gate,up,down}_proj.weight` with its gate `mlp.shared_expert_gate.weight`
//! (`[1, H]`) -- which of the two the config's shared experts read follows their gate (none:
//! DeepSeek's, sigmoid: Qwen's) --, DeepSeek-V3's selection bias
//! `mlp.gate.e_score_correction_bias` (`[E]`), and a router bias `mlp.gate.bias`.
//!
//! ## Strict
//!
//! Every tensor in the layer's scope (the whole prefixed file for stacked names, the layer's
//! MoE block, e.g. `model.layers.3.mlp.`, for per-expert names) must be one the config reads;
//! any other is a [`WeightsError::Unexpected`] naming it: a gate in a relu/gelu layer, biases
//! in a layer without them, a shared expert (`mlp.shared_expert.*`, `mlp.shared_experts.*`,
//! `mlp.shared_expert_gate.weight`) in a layer without shared experts (or of the other naming),
//! DeepSeek-V3's `e_score_correction_bias` or a router bias where the config's router has none,
//! an expert beyond the config's count. Tensors outside the scope (attention, norms, other
//! layers) are not the layer's and are left alone. A name listed twice in one header (which
//! a JSON map would silently resolve to the last) or in two shards is a
//! [`WeightsError::Duplicate`]. Layouts recognised but not supported yet are a
//! [`WeightsError::Layout`] naming a tensor: gpt-oss's MXFP4 release (`_blocks` / `_scales`:
//! 4-bit values with shared exponents, which would need dequantizing; its bf16 layout loads),
//! Llama-4 (`feed_forward.experts.gate_up_proj`), DBRX (`ffn.router.layer.weight`). A prefix naming a
//! dense MLP layer (`mlp.up_proj.weight`, no router) is a [`WeightsError::DenseLayer`].
//!
//! Every name may carry a layer prefix (e.g. `model.layers.3.`). Without an explicit prefix,
//! the loader uses unprefixed stacked names if present, else the one layer whose router it
//! finds; several layers are an [`WeightsError::Ambiguous`] error listing their prefixes. A
//! layer may be spread over several files (sharded checkpoints); files are read header-first and
//! only the layer's tensors are read.
//!
//! BF16, F16 and F32 tensors are accepted and rounded to the config's dtype; files are written
//! in the config's dtype (F32 for both f32 dtypes).
//!
//! ## One rank's experts
//!
//! A [`super::ShardWeights`] loads through the same code ([`Checkpoint::load_experts`]): the
//! same names and strict rules (every expert's tensors must be present with their shapes and a
//! loadable element type, as the headers say; other experts' tensors are expected, not
//! unexpected), but of the routed experts' tensors only the listed experts' bytes are read:
//! their rows of a stacked tensor (`[E, ...]`, consecutive experts in one read), their own
//! tensors of a per-expert naming. Reads are at most [`READ_CHUNK`] bytes (or one row) at a
//! time, whole layer or shard.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, View};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{LayerWeights, WeightsError, is_routed, specs};
use crate::config::{Activation, MoeConfig, Routing, SharedGate};
use crate::dtype::DType;

/// Largest safetensors header accepted (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// The stacked file name of a [`LayerWeights`] field.
pub(super) fn stacked_name(field: &str) -> &'static str {
    match field {
        "router" => "router.weight",
        "up" => "experts.up.weight",
        "gate" => "experts.gate.weight",
        "down" => "experts.down.weight",
        "up_bias" => "experts.up.bias",
        "gate_bias" => "experts.gate.bias",
        "down_bias" => "experts.down.bias",
        "router_bias" => "router.bias",
        "selection_bias" => "router.selection_bias",
        "shared_up" => "shared.up.weight",
        "shared_gate" => "shared.gate.weight",
        "shared_down" => "shared.down.weight",
        "shared_gate_row" => "shared.gate_row.weight",
        _ => unreachable!("specs() only names LayerWeights fields"),
    }
}

/// The Hugging Face name of a layer-level tensor (not one per expert) of `field` under a
/// per-expert naming's MoE block (module doc), or `None` for an expert tensor.
fn hf_layer_name(n: &PerExpert, field: &str, config: &MoeConfig) -> Option<String> {
    let router_stem = n.router.strip_suffix(".weight").unwrap_or(n.router);
    // Qwen's shared expert has the sigmoid gate; DeepSeek's shared experts have none.
    let shared = match config.shared.map(|s| s.gate) {
        Some(SharedGate::Sigmoid) => "shared_expert",
        _ => "shared_experts",
    };
    Some(match field {
        "router" => n.router.to_owned(),
        "router_bias" => format!("{router_stem}.bias"),
        "selection_bias" => format!("{router_stem}.e_score_correction_bias"),
        "shared_up" => format!("{}{shared}.up_proj.weight", n.block),
        "shared_gate" => format!("{}{shared}.gate_proj.weight", n.block),
        "shared_down" => format!("{}{shared}.down_proj.weight", n.block),
        "shared_gate_row" => format!("{}shared_expert_gate.weight", n.block),
        _ => return None,
    })
}

/// A per-expert naming scheme of a Hugging Face checkpoint.
pub(super) struct PerExpert {
    /// The MoE block, under which every tensor of the layer's MoE lives.
    block: &'static str,
    router: &'static str,
    experts: &'static str,
    gate: &'static str,
    up: &'static str,
    down: &'static str,
}

pub(super) const MIXTRAL: PerExpert = PerExpert {
    block: "block_sparse_moe.",
    router: "block_sparse_moe.gate.weight",
    experts: "block_sparse_moe.experts.",
    gate: "w1",
    up: "w3",
    down: "w2",
};

pub(super) const HF_MLP: PerExpert = PerExpert {
    block: "mlp.",
    router: "mlp.gate.weight",
    experts: "mlp.experts.",
    gate: "gate_proj",
    up: "up_proj",
    down: "down_proj",
};

const JAMBA: PerExpert = PerExpert {
    block: "feed_forward.",
    router: "feed_forward.router.weight",
    experts: "feed_forward.experts.",
    gate: "gate_proj",
    up: "up_proj",
    down: "down_proj",
};

/// How a layer's tensors are named in a checkpoint.
#[derive(Clone, Copy)]
enum Naming {
    Stacked,
    PerExpert(&'static PerExpert),
    /// gpt-oss's bf16 layout (module doc).
    GptOss,
}

impl Naming {
    const ALL: [(&'static str, Naming); 5] = [
        ("router.weight", Naming::Stacked),
        (MIXTRAL.router, Naming::PerExpert(&MIXTRAL)),
        (HF_MLP.router, Naming::PerExpert(&HF_MLP)),
        (JAMBA.router, Naming::PerExpert(&JAMBA)),
        ("mlp.router.weight", Naming::GptOss),
    ];

    /// Where every tensor of the layer lives: the whole (prefixed) file for our stacked
    /// files, the MoE block of a model's layer.
    fn scope(&self, prefix: &str) -> String {
        match self {
            Naming::Stacked => prefix.to_owned(),
            Naming::PerExpert(n) => format!("{prefix}{}", n.block),
            Naming::GptOss => format!("{prefix}mlp."),
        }
    }

    /// Whether tensor `field` (a [`specs`] name) is one tensor per expert in this naming.
    fn is_per_expert(&self, field: &str) -> bool {
        matches!(self, Naming::PerExpert(_)) && is_routed(field)
    }

    /// The checkpoint names of tensor `field` (a [`specs`] name) of `config`: one stacked
    /// name, or one per expert (the router, its biases and the shared experts are always one).
    fn names(&self, prefix: &str, field: &str, config: &MoeConfig) -> Vec<String> {
        let n = match self {
            Naming::Stacked => return vec![format!("{prefix}{}", stacked_name(field))],
            Naming::GptOss => return vec![format!("{prefix}{}", gpt_oss_name(field))],
            Naming::PerExpert(n) => n,
        };
        if let Some(name) = hf_layer_name(n, field, config) {
            return vec![format!("{prefix}{name}")];
        }
        let experts = config.experts as usize;
        let (proj, kind) = match field {
            "up" => (n.up, "weight"),
            "gate" => (n.gate, "weight"),
            "down" => (n.down, "weight"),
            "up_bias" => (n.up, "bias"),
            "gate_bias" => (n.gate, "bias"),
            _ => (n.down, "bias"),
        };
        (0..experts).map(|e| format!("{prefix}{}{e}.{proj}.{kind}", n.experts)).collect()
    }
}

/// gpt-oss's bf16 name of a [`specs`] field (module doc): the gate and up projections (and
/// their biases) share one interleaved tensor.
fn gpt_oss_name(field: &str) -> &'static str {
    match field {
        "router" => "mlp.router.weight",
        "router_bias" => "mlp.router.bias",
        "up" | "gate" => "mlp.experts.gate_up_proj",
        "up_bias" | "gate_bias" => "mlp.experts.gate_up_proj_bias",
        "down" => "mlp.experts.down_proj",
        "down_bias" => "mlp.experts.down_proj_bias",
        // Not in gpt-oss: a name no checkpoint has, so the tensor is reported missing.
        "selection_bias" => "mlp.router.selection_bias",
        "shared_up" => "mlp.shared_experts.up_proj.weight",
        "shared_gate" => "mlp.shared_experts.gate_proj.weight",
        "shared_down" => "mlp.shared_experts.down_proj.weight",
        _ => "mlp.shared_expert_gate.weight",
    }
}

/// Checkpoint layouts recognised but not supported yet: a name suffix, and the layout.
const UNSUPPORTED_LAYOUTS: [(&str, &str); 3] = [
    (
        "mlp.experts.gate_up_proj_blocks",
        "gpt-oss MXFP4 (_blocks/_scales experts; its bf16 layout, mlp.experts.gate_up_proj, \
         loads)",
    ),
    ("feed_forward.experts.gate_up_proj", "Llama-4 (a fused gate_up_proj, a shared expert)"),
    ("ffn.router.layer.weight", "DBRX (experts stacked as ffn.experts.mlp.w1 / v1 / w2)"),
];

/// Dense MLP tensors: a layer with one of these and no router is not an MoE layer.
const DENSE_MLP: [&str; 4] = [
    "mlp.up_proj.weight",
    "mlp.gate_up_proj.weight",
    "feed_forward.up_proj.weight",
    "mlp.w3.weight",
];

fn io_error(path: &Path, e: std::io::Error) -> WeightsError {
    WeightsError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// One safetensors file: its parsed header and a reader positioned anywhere.
pub(super) struct Shard<R> {
    pub(super) label: String,
    pub(super) reader: R,
    pub(super) data_start: u64,
    pub(super) meta: Metadata,
}

impl<R: Read + Seek> Shard<R> {
    pub(super) fn open(label: String, mut reader: R) -> Result<Shard<R>, WeightsError> {
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

/// The tensors of one or more shards, looked up by name.
pub(super) struct Checkpoint<R> {
    pub(super) shards: Vec<Shard<R>>,
}

impl<R: Read + Seek> Checkpoint<R> {
    /// The shards of one checkpoint: no tensor name in two of them.
    pub(super) fn new(shards: Vec<Shard<R>>) -> Result<Checkpoint<R>, WeightsError> {
        let mut owner: HashMap<String, usize> = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            for name in shard.meta.tensors().into_keys() {
                if let Some(&j) = owner.get(&name) {
                    let file = format!("{} and {}", shards[j].label, shard.label);
                    return Err(WeightsError::Duplicate { tensor: name, file });
                }
                owner.insert(name, i);
            }
        }
        Ok(Checkpoint { shards })
    }

    fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.shards.iter().flat_map(|s| s.meta.tensors().into_keys())
    }

    fn find(&self, name: &str) -> Option<(usize, TensorInfo)> {
        self.shards.iter().enumerate().find_map(|(i, s)| s.meta.info(name).map(|t| (i, t.clone())))
    }

    /// Where tensor `name` is (its shard and header entry) and its element size, after
    /// checking from the header alone that it is present with `shape` and a loadable element
    /// type.
    fn locate(
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
    fn read_into(
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
    fn read(
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

    /// The prefix and naming of the layer to load (module doc).
    fn resolve(&self, prefix: Option<&str>) -> Result<(String, Naming), WeightsError> {
        self.unsupported_layout(prefix.unwrap_or(""))?;
        if let Some(p) = prefix {
            for (router, naming) in Naming::ALL {
                if self.find(&format!("{p}{router}")).is_some() {
                    return Ok((p.to_owned(), naming));
                }
            }
            if let Some(tensor) =
                DENSE_MLP.iter().map(|d| format!("{p}{d}")).find(|n| self.find(n).is_some())
            {
                return Err(WeightsError::DenseLayer { prefix: p.to_owned(), tensor });
            }
            let tried: Vec<String> = Naming::ALL.iter().map(|(r, _)| format!("{p}{r}")).collect();
            return Err(WeightsError::Missing { tensor: tried.join(" or ") });
        }
        if self.find("router.weight").is_some() {
            return Ok((String::new(), Naming::Stacked));
        }
        let mut found: Vec<(String, Naming)> = Vec::new();
        for name in self.names() {
            // The longest router name that fits: `feed_forward.router.weight` is Jamba's
            // router, not a stacked `router.weight` under `feed_forward.`.
            let best = Naming::ALL
                .iter()
                .filter_map(|&(router, naming)| {
                    let p = name.strip_suffix(router)?;
                    (p.is_empty() || p.ends_with('.')).then(|| (p.to_owned(), naming))
                })
                .min_by_key(|(p, _)| p.len());
            found.extend(best);
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        match found.len() {
            0 => Err(WeightsError::Missing {
                tensor: "router.weight (or a Mixtral / Hugging Face layer router)".to_owned(),
            }),
            1 => Ok(found.remove(0)),
            _ => Err(WeightsError::Ambiguous {
                candidates: found.into_iter().map(|(p, _)| p).collect(),
            }),
        }
    }

    /// A [`WeightsError::Layout`] when a tensor under `prefix` belongs to a layout flashdmoe
    /// recognises but cannot load yet.
    fn unsupported_layout(&self, prefix: &str) -> Result<(), WeightsError> {
        let mut names: Vec<String> = self.names().filter(|n| n.starts_with(prefix)).collect();
        names.sort();
        for (suffix, layout) in UNSUPPORTED_LAYOUTS {
            if let Some(tensor) = names.iter().find(|n| n.ends_with(suffix)) {
                return Err(WeightsError::Layout { tensor: tensor.clone(), layout });
            }
        }
        Ok(())
    }

    /// Every tensor in the layer's scope must be one the config reads (module doc): the
    /// first one that is not, most telling first (a feature flashdmoe lacks before a plain
    /// extra tensor).
    fn check_unexpected(
        &self,
        config: &MoeConfig,
        naming: Naming,
        prefix: &str,
    ) -> Result<(), WeightsError> {
        let read: HashSet<String> =
            specs(config).iter().flat_map(|s| naming.names(prefix, s.name, config)).collect();
        // Every tensor a gated layer with biases and both router biases would have, by field.
        let full = MoeConfig {
            activation: Activation::SiluGated,
            bias: true,
            routing: Routing { router_bias: true, selection_bias: true, ..config.routing },
            ..config.clone()
        };
        let field_of: HashMap<String, &'static str> = specs(&full)
            .iter()
            .flat_map(|s| naming.names(prefix, s.name, &full).into_iter().map(|n| (n, s.name)))
            .collect();
        let scope = naming.scope(prefix);
        let mut extra: Vec<(u8, String, String)> = self
            .names()
            .filter(|n| n.starts_with(&scope) && !read.contains(n))
            .map(|n| {
                let (rank, reason) = why_unexpected(&n, field_of.get(&n).copied(), config);
                (rank, n, reason)
            })
            .collect();
        extra.sort();
        match extra.into_iter().next() {
            None => Ok(()),
            Some((_, tensor, reason)) => Err(WeightsError::Unexpected { tensor, reason }),
        }
    }

    /// The layer (module doc), checked against `config`.
    pub(super) fn load(
        &mut self,
        config: &MoeConfig,
        prefix: Option<&str>,
    ) -> Result<LayerWeights, WeightsError> {
        let w = self.load_experts(config, prefix, None)?;
        w.check(config)?;
        Ok(w)
    }

    /// The layer's tensors with, given `experts` (strictly ascending ids below
    /// `config.experts`, which the caller checked), the routed experts' tensors of only those
    /// experts, stacked in that order: the tensors of a [`super::ShardWeights`], not checked
    /// yet. The strict rules are the whole layer's: every tensor of the layer's scope is one
    /// the config reads, and every tensor of every expert is present with its shape and a
    /// loadable element type, but only the listed experts' bytes are read.
    pub(super) fn load_experts(
        &mut self,
        config: &MoeConfig,
        prefix: Option<&str>,
        experts: Option<&[u32]>,
    ) -> Result<LayerWeights, WeightsError> {
        config.validate()?;
        let (prefix, naming) = self.resolve(prefix)?;
        self.check_unexpected(config, naming, &prefix)?;
        let dtype = config.dtype;
        if let Naming::GptOss = naming {
            return self.load_gpt_oss(config, &prefix, experts);
        }
        let selected = |e: usize| experts.is_none_or(|x| x.binary_search(&(e as u32)).is_ok());
        let mut w = LayerWeights::empty();
        for s in specs(config) {
            let names = naming.names(&prefix, s.name, config);
            let values = if naming.is_per_expert(s.name) {
                let per_expert = &s.shape[1..];
                let len: usize = per_expert.iter().product();
                let mut values = vec![0.0; experts.map_or(s.shape[0], <[u32]>::len) * len];
                let mut chunks = values.chunks_exact_mut(len.max(1));
                for (e, name) in names.iter().enumerate() {
                    if !selected(e) {
                        self.locate(name, per_expert)?;
                    } else if let Some(chunk) = chunks.next() {
                        self.read_into(name, per_expert, dtype, None, chunk)?;
                    }
                }
                values
            } else {
                // One name for a tensor of the layer, or of all experts stacked.
                let name = names
                    .first()
                    .ok_or_else(|| WeightsError::Missing { tensor: s.name.to_owned() })?;
                // Hugging Face's shared_expert_gate is a Linear(H, 1): [1, H].
                let shape = match (naming, s.name) {
                    (Naming::PerExpert(_), "shared_gate_row") => vec![1, s.shape[0]],
                    _ => s.shape.clone(),
                };
                let rows = experts.filter(|_| is_routed(s.name));
                self.read(name, &shape, dtype, rows)?
            };
            w.set(s.name, values);
        }
        Ok(w)
    }
}

/// Most bytes [`Checkpoint::read_into`] reads at once (unless one row is larger); small in
/// tests, so that they read large tensors in several pieces.
const READ_CHUNK: u64 = if cfg!(test) { 4096 } else { 16 << 20 };

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

impl<R: Read + Seek> Checkpoint<R> {
    /// A layer in gpt-oss's bf16 layout (module doc): `gate_up_proj` `[E, H, 2I]` holds gate
    /// (even columns) and up (odd columns) transposed, its bias `[E, 2I]` likewise interleaved,
    /// `down_proj` `[E, I, H]` transposed. With `experts`, the experts' tensors of those only
    /// ([`Checkpoint::load_experts`]).
    fn load_gpt_oss(
        &mut self,
        config: &MoeConfig,
        prefix: &str,
        experts: Option<&[u32]>,
    ) -> Result<LayerWeights, WeightsError> {
        let (h, i, e) = (config.hidden as usize, config.inter as usize, config.experts as usize);
        let dtype = config.dtype;
        let name = |field| format!("{prefix}{}", gpt_oss_name(field));
        // The experts read: `n` of them, in `experts`' order.
        let n = experts.map_or(e, <[u32]>::len);
        let mut w = LayerWeights::empty();
        for s in specs(config) {
            let values = match s.name {
                "up" | "gate" => {
                    let fused = self.read(&name(s.name), &[e, h, 2 * i], dtype, experts)?;
                    let odd = usize::from(s.name == "up");
                    let mut v = vec![0.0; n * i * h];
                    for (x, row) in v.iter_mut().enumerate() {
                        let (ex, n, col) = (x / (i * h), x / h % i, x % h);
                        *row = fused[(ex * h + col) * 2 * i + 2 * n + odd];
                    }
                    v
                }
                "up_bias" | "gate_bias" => {
                    let fused = self.read(&name(s.name), &[e, 2 * i], dtype, experts)?;
                    let odd = usize::from(s.name == "up_bias");
                    fused.iter().skip(odd).step_by(2).copied().collect()
                }
                "down" => {
                    let t = self.read(&name("down"), &[e, i, h], dtype, experts)?;
                    let mut v = vec![0.0; n * h * i];
                    for (x, out) in v.iter_mut().enumerate() {
                        let (ex, o, n) = (x / (h * i), x / i % h, x % i);
                        *out = t[(ex * i + n) * h + o];
                    }
                    v
                }
                field => {
                    let rows = experts.filter(|_| is_routed(field));
                    self.read(&name(field), &s.shape, dtype, rows)?
                }
            };
            w.set(s.name, values);
        }
        Ok(w)
    }
}

/// Why tensor `name` of the layer's scope is not read, and how telling that is (lower first):
/// `field` is the tensor it would be in a gated layer with biases and router biases.
fn why_unexpected(name: &str, field: Option<&str>, config: &MoeConfig) -> (u8, String) {
    if name.contains("shared_expert") {
        let reason = match config.shared {
            None => "a shared expert's tensor, but the config has no shared experts (shared; \
                     n_shared_experts or shared_expert_intermediate_size in config.json)"
                .to_owned(),
            Some(s) if name.contains("shared_expert_gate") && s.gate == SharedGate::None => {
                "Qwen's shared_expert_gate, but the config's shared experts have no sigmoid gate \
                 (shared.gate)"
                    .to_owned()
            }
            Some(_) => "a shared expert's tensor of the other naming: shared experts without a \
                        gate are read as mlp.shared_experts.* (DeepSeek), with a sigmoid gate as \
                        mlp.shared_expert.* and mlp.shared_expert_gate.weight (Qwen)"
                .to_owned(),
        };
        (0, reason)
    } else if name.ends_with("e_score_correction_bias") || field == Some("selection_bias") {
        let why = "DeepSeek-V3's selection bias, but the config's router has none \
                   (routing.selection_bias; topk_method noaux_tc in config.json)";
        (0, why.into())
    } else if name.contains("gate_up_proj") && field.is_none() {
        (0, "a fused gate/up projection of another layout: not supported yet (issue 16)".into())
    } else if name.ends_with("router.bias")
        || field == Some("router_bias")
        || name.ends_with("gate.bias") && field.is_none()
    {
        (0, "a router bias, but the config's router has none (routing.router_bias)".into())
    } else if matches!(field, Some("gate" | "gate_bias")) && !config.activation.is_gated() {
        (1, format!("the {} layer has no gate projection (only swiglu has one)", config.activation))
    } else if field.is_some() && !config.bias {
        (1, "the config has no biases (bias = false)".into())
    } else {
        let (e, a, b) = (config.experts, config.activation, config.bias);
        (2, format!("no tensor of this layer ({e} experts, {a}, bias = {b}) has this name"))
    }
}

/// A tensor to write: safetensors dtype, shape, little-endian bytes.
pub(super) struct Bytes {
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    pub(super) data: Vec<u8>,
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

impl<'a> Checkpoint<Cursor<&'a [u8]>> {
    /// A safetensors file held in memory; its header is parsed and checked.
    pub(super) fn from_bytes(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        Checkpoint::new(vec![Shard::open("<memory>".to_owned(), Cursor::new(bytes))?])
    }
}

impl Checkpoint<File> {
    /// The files of a checkpoint, opened; their headers are parsed and checked, nothing else
    /// is read yet.
    pub(super) fn open(paths: &[impl AsRef<Path>]) -> Result<Self, WeightsError> {
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

impl LayerWeights {
    /// The layer in a safetensors file held in memory (`bytes`), see the module doc for names
    /// and `prefix`.
    pub fn from_safetensors(
        config: &MoeConfig,
        bytes: &[u8],
        prefix: Option<&str>,
    ) -> Result<LayerWeights, WeightsError> {
        Checkpoint::from_bytes(bytes)?.load(config, prefix)
    }

    /// The layer in one or more safetensors files (the shards of a checkpoint), see the module
    /// doc for names and `prefix`. Only headers and the layer's tensors are read.
    pub fn load_safetensors(
        config: &MoeConfig,
        paths: &[impl AsRef<Path>],
        prefix: Option<&str>,
    ) -> Result<LayerWeights, WeightsError> {
        Checkpoint::open(paths)?.load(config, prefix)
    }

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

#[cfg(test)]
pub(super) mod tests_support {
    use super::*;

    pub(in crate::weights) fn cfg(dtype: DType, activation: Activation, bias: bool) -> MoeConfig {
        MoeConfig {
            hidden: 64,
            inter: 128,
            experts: 3,
            activation,
            bias,
            dtype,
            ..MoeConfig::default()
        }
    }

    pub(in crate::weights) fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// An F32 tensor.
    pub(in crate::weights) fn f32_tensor(shape: Vec<usize>, values: &[f32]) -> Bytes {
        Bytes { dtype: Dtype::F32, shape, data: f32_bytes(values) }
    }

    impl Bytes {
        pub(in crate::weights) fn copy(&self) -> Bytes {
            Bytes { dtype: self.dtype, shape: self.shape.clone(), data: self.data.clone() }
        }
    }

    pub(in crate::weights) fn serialize(tensors: Vec<(String, Bytes)>) -> Vec<u8> {
        safetensors::serialize(tensors.iter().map(|(n, b)| (n.as_str(), b)), None).unwrap()
    }

    /// `w` of gpt-oss config `c` in gpt-oss's bf16 layout under `prefix`, as F32.
    pub(in crate::weights) fn gpt_oss_layout(
        c: &MoeConfig,
        w: &LayerWeights,
        prefix: &str,
    ) -> Vec<(String, Bytes)> {
        let (h, i, e) = (c.hidden as usize, c.inter as usize, c.experts as usize);
        let (gate, gb, up_b) =
            (w.gate.as_ref().unwrap(), w.gate_bias.as_ref().unwrap(), w.up_bias.as_ref().unwrap());
        let mut gate_up = vec![0.0; e * h * 2 * i];
        let mut gate_up_bias = vec![0.0; e * 2 * i];
        let mut down = vec![0.0; e * i * h];
        for ex in 0..e {
            for n in 0..i {
                for col in 0..h {
                    let at = (ex * h + col) * 2 * i + 2 * n;
                    gate_up[at] = gate[(ex * i + n) * h + col];
                    gate_up[at + 1] = w.up[(ex * i + n) * h + col];
                    down[(ex * i + n) * h + col] = w.down[(ex * h + col) * i + n];
                }
                gate_up_bias[ex * 2 * i + 2 * n] = gb[ex * i + n];
                gate_up_bias[ex * 2 * i + 2 * n + 1] = up_b[ex * i + n];
            }
        }
        let t = |name: &str, shape: Vec<usize>, v: &[f32]| {
            (format!("{prefix}{name}"), f32_tensor(shape, v))
        };
        vec![
            t("mlp.router.weight", vec![e, h], &w.router),
            t("mlp.router.bias", vec![e], w.router_bias.as_ref().unwrap()),
            t("mlp.experts.gate_up_proj", vec![e, h, 2 * i], &gate_up),
            t("mlp.experts.gate_up_proj_bias", vec![e, 2 * i], &gate_up_bias),
            t("mlp.experts.down_proj", vec![e, i, h], &down),
            t("mlp.experts.down_proj_bias", vec![e, h], w.down_bias.as_ref().unwrap()),
        ]
    }

    /// `w` (generated for `c`) written with a per-expert naming under `prefix`, as F32.
    pub(in crate::weights) fn per_expert(
        c: &MoeConfig,
        w: &LayerWeights,
        n: &PerExpert,
        prefix: &str,
    ) -> Vec<(String, Bytes)> {
        let (h, i) = (c.hidden as usize, c.inter as usize);
        let f32t = f32_tensor;
        let mut out =
            vec![(format!("{prefix}{}", n.router), f32t(vec![c.experts as usize, h], &w.router))];
        for e in 0..c.experts as usize {
            let name = |proj: &str, kind: &str| format!("{prefix}{}{e}.{proj}.{kind}", n.experts);
            out.push((name(n.up, "weight"), f32t(vec![i, h], &w.up[e * i * h..][..i * h])));
            if let Some(g) = &w.gate {
                out.push((name(n.gate, "weight"), f32t(vec![i, h], &g[e * i * h..][..i * h])));
            }
            out.push((name(n.down, "weight"), f32t(vec![h, i], &w.down[e * h * i..][..h * i])));
            if let Some(b) = &w.up_bias {
                out.push((name(n.up, "bias"), f32t(vec![i], &b[e * i..][..i])));
            }
            if let Some(b) = &w.gate_bias {
                out.push((name(n.gate, "bias"), f32t(vec![i], &b[e * i..][..i])));
            }
            if let Some(b) = &w.down_bias {
                out.push((name(n.down, "bias"), f32t(vec![h], &b[e * h..][..h])));
            }
        }
        // The layer-level tensors beside the experts.
        for field in ["router_bias", "selection_bias", "shared_up", "shared_gate", "shared_down"] {
            if let (Some(v), Some(name)) = (w.tensor(field), hf_layer_name(n, field, c)) {
                let s = c.shared.map_or(0, |s| s.total_inter() as usize);
                let shape = match field {
                    "router_bias" | "selection_bias" => vec![c.experts as usize],
                    "shared_down" => vec![h, s],
                    _ => vec![s, h],
                };
                out.push((format!("{prefix}{name}"), f32t(shape, v)));
            }
        }
        if let Some(row) = &w.shared_gate_row {
            let name = hf_layer_name(n, "shared_gate_row", c).unwrap();
            out.push((format!("{prefix}{name}"), f32t(vec![1, h], row)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn stacked_round_trip_in_every_dtype() {
        for dtype in DType::ALL {
            for (activation, bias) in [(Activation::SiluGated, true), (Activation::Relu, false)] {
                let c = cfg(dtype, activation, bias);
                let w = LayerWeights::generate(&c, 4).unwrap();
                let bytes = w.to_safetensors(&c).unwrap();
                assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
                let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
                let up = st.tensor("experts.up.weight").unwrap();
                assert_eq!(up.shape(), &[3, 128, 64]);
                assert_eq!(up.dtype().bitsize(), 8 * dtype.elem_bytes() as usize);
            }
        }
    }

    #[test]
    fn tensors_larger_than_a_read_and_a_one_expert_layer_load() {
        // The router and biases of 64 experts span several reads (READ_CHUNK is 4 KiB in tests).
        let c = MoeConfig {
            hidden: 64,
            inter: 64,
            experts: 64,
            bias: true,
            ..cfg(DType::F32, Activation::SiluGated, true)
        };
        let w = LayerWeights::generate(&c, 2).unwrap();
        assert!(w.router.len() * 4 > 2 * READ_CHUNK as usize);
        assert_eq!(LayerWeights::from_safetensors(&c, &w.to_safetensors(&c).unwrap(), None), Ok(w));
        // One expert in per-expert names: one tensor per expert is still one per expert.
        let one =
            MoeConfig { experts: 1, top_k: 1, ..cfg(DType::F32, Activation::SiluGated, false) };
        let w = LayerWeights::generate(&one, 2).unwrap();
        let bytes = serialize(per_expert(&one, &w, &MIXTRAL, ""));
        assert_eq!(LayerWeights::from_safetensors(&one, &bytes, None), Ok(w));
    }

    #[test]
    fn file_round_trip() {
        let c = cfg(DType::Bf16, Activation::Gelu, true);
        let w = LayerWeights::generate(&c, 8).unwrap();
        let path =
            std::env::temp_dir().join(format!("fdm-weights-{}.safetensors", std::process::id()));
        w.save_safetensors(&c, &path).unwrap();
        let loaded = LayerWeights::load_safetensors(&c, &[&path], None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap(), w);
        let missing = LayerWeights::load_safetensors(&c, &[&path], None);
        assert!(matches!(missing, Err(WeightsError::Io { .. })));
    }

    #[test]
    fn mixtral_naming_with_prefix_detection_and_rounding() {
        // Written in F32 from f32 weights; loading into a bf16 config rounds them, which gives
        // exactly the bf16 generator's values.
        let c32 = cfg(DType::F32, Activation::SiluGated, false);
        let w32 = LayerWeights::generate(&c32, 6).unwrap();
        let c16 = MoeConfig { dtype: DType::Bf16, ..c32.clone() };
        let bytes = serialize(per_expert(&c32, &w32, &MIXTRAL, "model.layers.5."));
        let loaded = LayerWeights::from_safetensors(&c16, &bytes, None).unwrap();
        assert_eq!(loaded, LayerWeights::generate(&c16, 6).unwrap());
        let explicit =
            LayerWeights::from_safetensors(&c32, &bytes, Some("model.layers.5.")).unwrap();
        assert_eq!(explicit, w32);
        assert!(matches!(
            LayerWeights::from_safetensors(&c32, &bytes, Some("model.layers.4.")),
            Err(WeightsError::Missing { .. })
        ));
    }

    #[test]
    fn two_layers_need_a_prefix_and_shards_combine() {
        let c = cfg(DType::F32, Activation::SiluGated, true);
        let w = LayerWeights::generate(&c, 1).unwrap();
        let mut layer0 = per_expert(&c, &w, &HF_MLP, "model.layers.0.");
        let layer1 =
            per_expert(&c, &LayerWeights::generate(&c, 2).unwrap(), &HF_MLP, "model.layers.1.");
        let both = serialize(layer0.drain(..).chain(layer1).collect());
        match LayerWeights::from_safetensors(&c, &both, None) {
            Err(WeightsError::Ambiguous { candidates }) => {
                assert_eq!(candidates, vec!["model.layers.0.", "model.layers.1."]);
            }
            other => panic!("{other:?}"),
        }
        let one = LayerWeights::from_safetensors(&c, &both, Some("model.layers.0.")).unwrap();
        assert_eq!(one, w);

        // The same layer split over two shard files.
        let mut tensors = per_expert(&c, &w, &HF_MLP, "");
        let second = tensors.split_off(tensors.len() / 2);
        let dir = std::env::temp_dir();
        let paths: Vec<_> = (0..2)
            .map(|i| dir.join(format!("fdm-shard-{}-{i}.safetensors", std::process::id())))
            .collect();
        std::fs::write(&paths[0], serialize(tensors)).unwrap();
        std::fs::write(&paths[1], serialize(second)).unwrap();
        let loaded = LayerWeights::load_safetensors(&c, &paths, None);
        let only_first = LayerWeights::load_safetensors(&c, &paths[..1], None);
        paths.iter().for_each(|p| std::fs::remove_file(p).unwrap());
        assert_eq!(loaded.unwrap(), w);
        assert!(matches!(only_first, Err(WeightsError::Missing { .. })));
    }

    #[test]
    fn bad_checkpoints_are_typed_errors() {
        let c = cfg(DType::F32, Activation::SiluGated, false);
        let w = LayerWeights::generate(&c, 3).unwrap();
        let load = |tensors: Vec<(String, Bytes)>| {
            LayerWeights::from_safetensors(&c, &serialize(tensors), None)
        };

        let mut t = per_expert(&c, &w, &MIXTRAL, "");
        t.retain(|(n, _)| n != "block_sparse_moe.experts.2.w2.weight");
        assert_eq!(
            load(t),
            Err(WeightsError::Missing { tensor: "block_sparse_moe.experts.2.w2.weight".into() })
        );

        let mut t = per_expert(&c, &w, &MIXTRAL, "");
        let (_, b) =
            t.iter_mut().find(|(n, _)| n == "block_sparse_moe.experts.1.w1.weight").unwrap();
        b.shape = vec![64, 128]; // transposed
        assert!(matches!(load(t), Err(WeightsError::Shape { tensor, found, .. })
            if tensor == "block_sparse_moe.experts.1.w1.weight" && found == vec![64, 128]));

        let mut t = per_expert(&c, &w, &MIXTRAL, "");
        let (_, b) = t.iter_mut().find(|(n, _)| n == "block_sparse_moe.gate.weight").unwrap();
        b.dtype = Dtype::I32;
        assert!(matches!(load(t), Err(WeightsError::DType { dtype, .. }) if dtype == "I32"));

        let mut t = per_expert(&c, &w, &MIXTRAL, "");
        t[0].1.data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(load(t), Err(WeightsError::Value { index: 0, .. })));

        // A stacked file for another activation lacks the gate.
        let relu = cfg(DType::F32, Activation::Relu, false);
        let bytes = LayerWeights::generate(&relu, 3).unwrap().to_safetensors(&relu).unwrap();
        assert_eq!(
            LayerWeights::from_safetensors(&c, &bytes, None),
            Err(WeightsError::Missing { tensor: "experts.gate.weight".into() })
        );

        // Not safetensors at all, truncated, or empty: Format errors, never panics.
        let good = w.to_safetensors(&c).unwrap();
        for bad in [&b"hello world, not a file"[..], &good[..good.len() - 1], &[], &good[..8]] {
            assert!(matches!(
                LayerWeights::from_safetensors(&c, bad, None),
                Err(WeightsError::Format { .. })
            ));
        }
        // A weights/config mismatch on save is a typed error too.
        assert!(matches!(w.to_safetensors(&relu), Err(WeightsError::Unexpected { .. })));
    }
}

#[cfg(test)]
mod strict {
    use super::tests_support::*;
    use super::*;

    fn unexpected(r: Result<LayerWeights, WeightsError>) -> (String, String) {
        match r {
            Err(WeightsError::Unexpected { tensor, reason }) => (tensor, reason),
            other => panic!("expected Unexpected, got {other:?}"),
        }
    }

    #[test]
    fn a_gate_in_a_relu_layer_and_biases_in_a_bias_free_one_are_unexpected() {
        let gated = cfg(DType::F32, Activation::SiluGated, true);
        let bytes = LayerWeights::generate(&gated, 1).unwrap().to_safetensors(&gated).unwrap();
        let relu = MoeConfig { activation: Activation::Relu, ..gated.clone() };
        let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&relu, &bytes, None));
        assert_eq!(tensor, "experts.gate.bias");
        assert!(reason.contains("relu layer has no gate projection"), "{reason}");
        let no_bias = MoeConfig { bias: false, ..gated.clone() };
        let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&no_bias, &bytes, None));
        assert_eq!(tensor, "experts.down.bias");
        assert!(reason.contains("no biases"), "{reason}");
        // Per-expert names too.
        let w = LayerWeights::generate(&gated, 1).unwrap();
        let t = per_expert(&gated, &w, &HF_MLP, "model.layers.2.");
        let (tensor, _) = unexpected(LayerWeights::from_safetensors(&no_bias, &serialize(t), None));
        assert_eq!(tensor, "model.layers.2.mlp.experts.0.down_proj.bias");
        // And a tensor nothing names.
        let mut t = per_expert(&gated, &w, &HF_MLP, "");
        t.push(("mlp.experts.0.extra.weight".into(), f32_tensor(vec![2], &[1.0, 2.0])));
        let (tensor, reason) =
            unexpected(LayerWeights::from_safetensors(&gated, &serialize(t), None));
        assert_eq!(tensor, "mlp.experts.0.extra.weight");
        assert!(reason.starts_with("no tensor of this layer (3 experts, swiglu, bias = true)"));
    }

    #[test]
    fn shared_experts_selection_and_router_biases_of_a_layer_without_them_are_unexpected() {
        let c = cfg(DType::F32, Activation::SiluGated, false);
        let w = LayerWeights::generate(&c, 2).unwrap();
        let (h, e) = (c.hidden as usize, c.experts as usize);
        let cases = [
            ("model.layers.1.mlp.shared_expert.up_proj.weight", vec![128, h], "no shared experts"),
            ("model.layers.1.mlp.shared_expert_gate.weight", vec![1, h], "no shared experts"),
            ("model.layers.1.mlp.shared_experts.down_proj.weight", vec![h, 128], "no shared"),
            ("model.layers.1.mlp.gate.e_score_correction_bias", vec![e], "selection bias"),
            ("model.layers.1.mlp.gate.bias", vec![e], "a router bias"),
        ];
        for (name, shape, needle) in cases {
            let mut t = per_expert(&c, &w, &HF_MLP, "model.layers.1.");
            let len = shape.iter().product::<usize>();
            t.push((name.into(), f32_tensor(shape, &vec![0.5; len])));
            // A tensor outside the MoE block is none of the loader's business.
            t.push(("model.layers.1.self_attn.q_proj.weight".into(), f32_tensor(vec![1], &[1.0])));
            let (tensor, reason) =
                unexpected(LayerWeights::from_safetensors(&c, &serialize(t), None));
            assert_eq!(tensor, name);
            assert!(reason.contains(needle), "{reason}");
        }
    }

    /// A small layer with shared experts (`gate`) and DeepSeek-V3's routing.
    fn with_shared(gate: SharedGate) -> MoeConfig {
        MoeConfig {
            experts: 4,
            top_k: 2,
            shared: Some(crate::config::SharedExperts { count: 2, inter: 64, gate }),
            routing: Routing::deepseek_v3(Some((2, 1)), 2.5),
            ..cfg(DType::F32, Activation::SiluGated, false)
        }
    }

    #[test]
    fn deepseek_and_qwen_shared_expert_names_load_and_round_trip() {
        for gate in [SharedGate::None, SharedGate::Sigmoid] {
            let c = with_shared(gate);
            let w = LayerWeights::generate(&c, 8).unwrap();
            assert!(w.shared_up.is_some() && w.selection_bias.is_some());
            assert_eq!(w.shared_gate_row.is_some(), gate == SharedGate::Sigmoid);
            // Our stacked names.
            let bytes = w.to_safetensors(&c).unwrap();
            assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
            // Hugging Face's: DeepSeek's shared_experts, or Qwen's shared_expert with its gate.
            let t = per_expert(&c, &w, &HF_MLP, "model.layers.4.");
            let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
            let (shared, other) = match gate {
                SharedGate::None => ("mlp.shared_experts.", "mlp.shared_expert."),
                SharedGate::Sigmoid => ("mlp.shared_expert.", "mlp.shared_experts."),
            };
            assert!(names.contains(&&*format!("model.layers.4.{shared}down_proj.weight")));
            assert!(names.contains(&"model.layers.4.mlp.gate.e_score_correction_bias"));
            let bytes = serialize(t);
            assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
            // The other family's naming is not read as this one's.
            let renamed: Vec<(String, Bytes)> = per_expert(&c, &w, &HF_MLP, "")
                .into_iter()
                .map(|(n, b)| (n.replace(shared, other), b))
                .collect();
            let (tensor, reason) =
                unexpected(LayerWeights::from_safetensors(&c, &serialize(renamed), None));
            assert!(tensor.starts_with(other), "{tensor}");
            assert!(reason.contains("other naming"), "{reason}");
        }
        // A Qwen gate in a layer whose shared experts have none.
        let c = with_shared(SharedGate::None);
        let w = LayerWeights::generate(&c, 8).unwrap();
        let mut t = per_expert(&c, &w, &HF_MLP, "");
        let h = c.hidden as usize;
        t.push(("mlp.shared_expert_gate.weight".into(), f32_tensor(vec![1, h], &vec![0.0; h])));
        let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&c, &serialize(t), None));
        assert_eq!(tensor, "mlp.shared_expert_gate.weight");
        assert!(reason.contains("no sigmoid gate"), "{reason}");
        // A layer that needs its selection bias and lacks it.
        let mut t = per_expert(&c, &w, &HF_MLP, "");
        t.retain(|(n, _)| !n.ends_with("e_score_correction_bias"));
        assert_eq!(
            LayerWeights::from_safetensors(&c, &serialize(t), None),
            Err(WeightsError::Missing { tensor: "mlp.gate.e_score_correction_bias".into() })
        );
    }

    /// A header with tensor `a` listed twice, and its 4 data bytes.
    fn repeated_header() -> Vec<u8> {
        let entry = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
        let header = format!(r#"{{"router.weight":{entry},"router.weight":{entry}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&1.0f32.to_le_bytes());
        bytes
    }

    #[test]
    fn a_tensor_listed_twice_is_an_error_in_a_file_and_across_shards() {
        let c = cfg(DType::F32, Activation::Relu, false);
        assert_eq!(
            LayerWeights::from_safetensors(&c, &repeated_header(), None),
            Err(WeightsError::Duplicate {
                tensor: "router.weight".into(),
                file: "<memory>".into()
            })
        );
        let w = LayerWeights::generate(&c, 3).unwrap();
        let t = per_expert(&c, &w, &MIXTRAL, "");
        let dir = std::env::temp_dir();
        let paths: Vec<_> = (0..2)
            .map(|i| dir.join(format!("fdm-dup-{}-{i}.safetensors", std::process::id())))
            .collect();
        std::fs::write(&paths[0], serialize(per_expert(&c, &w, &MIXTRAL, ""))).unwrap();
        std::fs::write(
            &paths[1],
            serialize(t[..1].iter().map(|(n, b)| (n.clone(), b.copy())).collect()),
        )
        .unwrap();
        let loaded = LayerWeights::load_safetensors(&c, &paths, None);
        paths.iter().for_each(|p| std::fs::remove_file(p).unwrap());
        assert!(
            matches!(&loaded, Err(WeightsError::Duplicate { tensor, file })
                if tensor == "block_sparse_moe.gate.weight" && file.contains(" and ")),
            "{loaded:?}"
        );
    }

    #[test]
    fn gpt_oss_hub_names_are_refused_as_its_layout_not_as_missing_tensors() {
        let c = cfg(DType::Bf16, Activation::SiluGated, true);
        let u8t = |shape: Vec<usize>| {
            let len = shape.iter().product();
            Bytes { dtype: Dtype::U8, shape, data: vec![0; len] }
        };
        let p = "model.layers.0.";
        let mxfp4 = vec![
            (format!("{p}mlp.router.weight"), f32_tensor(vec![3, 64], &[0.0; 192])),
            (format!("{p}mlp.router.bias"), f32_tensor(vec![3], &[0.0; 3])),
            (format!("{p}mlp.experts.gate_up_proj_blocks"), u8t(vec![3, 256, 2, 16])),
            (format!("{p}mlp.experts.gate_up_proj_scales"), u8t(vec![3, 256, 2])),
            (format!("{p}mlp.experts.down_proj_blocks"), u8t(vec![3, 64, 4, 16])),
            (format!("{p}mlp.experts.down_proj_scales"), u8t(vec![3, 64, 4])),
        ];
        let bytes = serialize(mxfp4);
        for prefix in [None, Some(p)] {
            match LayerWeights::from_safetensors(&c, &bytes, prefix) {
                Err(e @ WeightsError::Layout { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(
                            "tensor model.layers.0.mlp.experts.gate_up_proj_blocks: the gpt-oss"
                        ),
                        "{msg}"
                    );
                    assert!(msg.ends_with("not supported yet (issue 16)"), "{msg}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn gpt_oss_bf16_layout_loads_deinterleaved_and_transposed() {
        let c = MoeConfig {
            activation: Activation::SwigluOss(crate::config::SwigluOss::GPT_OSS),
            routing: Routing::GPT_OSS,
            ..cfg(DType::F32, Activation::SiluGated, true)
        };
        let w = LayerWeights::generate(&c, 6).unwrap();
        let mut t = gpt_oss_layout(&c, &w, "model.layers.7.");
        t.push(("model.layers.7.self_attn.sinks".into(), f32_tensor(vec![1], &[1.0])));
        let bytes = serialize(t);
        assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
        assert_eq!(LayerWeights::from_safetensors(&c, &bytes, Some("model.layers.7.")).unwrap(), w);
        // The standard SwiGLU shape preset's config has no router bias: refused, not misread.
        let shape =
            MoeConfig { routing: Routing::SOFTMAX, activation: Activation::SiluGated, ..c.clone() };
        let (tensor, reason) = unexpected(LayerWeights::from_safetensors(&shape, &bytes, None));
        assert_eq!(tensor, "model.layers.7.mlp.router.bias");
        assert!(reason.contains("router has none"), "{reason}");
        // A transposed tensor is a shape error naming it.
        let mut t = gpt_oss_layout(&c, &w, "");
        t[4].1.shape = vec![3, 64, 128];
        assert!(matches!(LayerWeights::from_safetensors(&c, &serialize(t), None),
            Err(WeightsError::Shape { tensor, .. }) if tensor == "mlp.experts.down_proj"));
    }

    #[test]
    fn a_dense_layer_is_not_an_moe_layer() {
        let c = cfg(DType::F32, Activation::SiluGated, false);
        let w = LayerWeights::generate(&c, 4).unwrap();
        let mut t = per_expert(&c, &w, &HF_MLP, "model.layers.1.");
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            t.push((format!("model.layers.0.mlp.{proj}.weight"), f32_tensor(vec![1], &[1.0])));
        }
        let bytes = serialize(t);
        assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
        let dense = LayerWeights::from_safetensors(&c, &bytes, Some("model.layers.0."));
        assert_eq!(
            dense,
            Err(WeightsError::DenseLayer {
                prefix: "model.layers.0.".into(),
                tensor: "model.layers.0.mlp.up_proj.weight".into()
            })
        );
        assert!(dense.unwrap_err().to_string().contains("not an MoE layer"));
    }

    #[test]
    fn jamba_names_load() {
        let c = cfg(DType::F32, Activation::SiluGated, false);
        let w = LayerWeights::generate(&c, 5).unwrap();
        let bytes = serialize(per_expert(&c, &w, &JAMBA, "model.layers.3."));
        assert_eq!(LayerWeights::from_safetensors(&c, &bytes, None).unwrap(), w);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn config() -> MoeConfig {
        MoeConfig { hidden: 64, inter: 64, experts: 2, ..MoeConfig::default() }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = LayerWeights::from_safetensors(&config(), &bytes, None);
        }

        #[test]
        fn corrupted_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let c = config();
            let mut bytes = LayerWeights::generate(&c, 1).unwrap().to_safetensors(&c).unwrap();
            // Corrupt the length prefix and the JSON header, where the structure lives.
            let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            for (at, value) in flips {
                let i = at.index(header_end);
                bytes[i] = value;
            }
            let _ = LayerWeights::from_safetensors(&c, &bytes, None);
        }
    }
}
