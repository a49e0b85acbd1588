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

mod gpt_oss;
mod names;
#[cfg(test)]
mod props;
mod read;
#[cfg(test)]
mod strict;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(super) mod tests_support;
mod write;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::Path;

use safetensors::tensor::TensorInfo;

pub(super) use self::names::stacked_name;
use self::names::{DENSE_MLP, Naming, UNSUPPORTED_LAYOUTS, why_unexpected};
#[cfg(test)]
pub(super) use self::names::{HF_MLP, MIXTRAL};
pub(super) use self::read::Shard;
#[cfg(test)]
pub(super) use self::write::Bytes;
use super::{LayerWeights, WeightsError, is_routed, specs};
use crate::config::{Activation, MoeConfig, Routing};

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
}
