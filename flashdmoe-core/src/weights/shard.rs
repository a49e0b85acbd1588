//! [`ShardWeights`]: one rank's share of a layer when the experts are sharded over ranks.
//!
//! Every rank holds the router (weight, router bias, selection bias) and the shared experts in
//! full, and the routed experts' tensors (`up`, `gate`, `down` and their biases) of its own
//! experts only, so a rank's weight memory is the layer's routed experts over `P` plus the
//! router and shared experts ([`crate::MemoryEstimate::weights`]). ("Shard" here is a share of
//! the experts; the files of a checkpoint split over several files are its shard files, which
//! `weights/checkpoint.rs` reads either way.)
//!
//! A shard lists the global ids of its experts, strictly ascending (a rank's are
//! [`crate::ExpertMap::experts_of`], whose ascending order is also the experts' local indices),
//! and stacks their tensors in that order: local expert `j` of `up` is rows `j * I .. (j + 1) *
//! I`, global expert `experts[j]`. It comes from three places, all bitwise equal for the same
//! layer:
//!
//! * [`LayerWeights::shard`]: a slice of a whole layer;
//! * [`ShardWeights::generate`]: the seeded generator's numbers for those experts only, each
//!   expert's rows computed at its offset of the stacked tensor ([`crate::rng::fill_at`]), never
//!   the rest of the layer;
//! * [`ShardWeights::load_safetensors`], [`ShardWeights::from_safetensors`] and
//!   [`ShardWeights::from_tensors`]: the checkpoint loaders' names and strict rules (the whole
//!   layer's tensors must be there with their shapes, other experts' included, as their headers
//!   say), reading the bytes of these experts' rows of a stacked tensor and of these experts'
//!   own tensors of a per-expert naming only.
//!
//! Invariant: a [`ShardWeights`] accepted by [`ShardWeights::check`] for a config lists
//! strictly ascending experts of that config and holds what a [`LayerWeights`] of the config
//! holds (module invariant of `weights`), with the routed tensors' first dimension the number
//! of experts it lists.

use std::path::Path;

use super::checkpoint::Checkpoint;
use super::memory::{TensorBytes, checkpoint};
use super::{
    LayerWeights, OPTIONAL, WeightsError, check_values, describe, filled, is_routed, shard_specs,
    specs, try_zeroed,
};
use crate::config::{ConfigError, MoeConfig};
use crate::rng;

/// One rank's (or a set of experts') share of a layer's weights: the router and the shared
/// experts in full, the routed experts' tensors of [`ShardWeights::experts`] only, stacked in
/// that order (module doc). Host `f32` values exactly representable in the config dtype, in
/// the layouts of [`LayerWeights`].
#[derive(Clone, Debug, PartialEq)]
pub struct ShardWeights {
    /// Global ids of the experts held, strictly ascending.
    experts: Vec<u32>,
    /// The tensors, [`LayerWeights`]' fields with `experts.len()` routed experts.
    w: LayerWeights,
}

/// `experts` is strictly ascending ids of `config`'s experts, or the error naming the first
/// entry that is not.
fn check_experts(config: &MoeConfig, experts: &[u32]) -> Result<(), WeightsError> {
    let bad = |index: usize, reason: String| WeightsError::Experts {
        index,
        expert: experts[index],
        reason,
    };
    for (index, &expert) in experts.iter().enumerate() {
        if expert >= config.experts {
            let n = config.experts;
            return Err(bad(index, format!("out of range: the layer has {n} experts")));
        }
        match index.checked_sub(1).map(|p| (p, experts[p])) {
            Some((p, prev)) if prev == expert => {
                return Err(bad(index, format!("repeats experts[{p}]")));
            }
            Some((p, prev)) if prev > expert => {
                let why = format!("follows experts[{p}] = {prev}: the list must be ascending");
                return Err(bad(index, why));
            }
            _ => {}
        }
    }
    Ok(())
}

impl LayerWeights {
    /// The share of these weights (which must fit `config`, [`LayerWeights::check_shapes`])
    /// holding the routed experts' tensors of `experts` (strictly ascending global ids) only.
    /// An expert id that is out of range, repeated or out of order is a
    /// [`WeightsError::Experts`] naming its position.
    pub fn shard(&self, config: &MoeConfig, experts: &[u32]) -> Result<ShardWeights, WeightsError> {
        self.check_shapes(config)?;
        check_experts(config, experts)?;
        let mut w = LayerWeights::empty();
        for s in specs(config) {
            let whole = self.tensor(s.name).unwrap_or_default();
            let values = if is_routed(s.name) {
                let len: usize = s.shape[1..].iter().product();
                let mut v = try_zeroed(experts.len() * len, describe(s.name))?;
                for (chunk, &e) in v.chunks_exact_mut(len.max(1)).zip(experts) {
                    chunk.copy_from_slice(&whole[e as usize * len..][..len]);
                }
                v
            } else {
                let mut v = try_zeroed(whole.len(), describe(s.name))?;
                v.copy_from_slice(whole);
                v
            };
            w.set(s.name, values);
        }
        Ok(ShardWeights { experts: experts.to_vec(), w })
    }

    /// The share of rank `rank` ([`ShardWeights::rank_experts`]).
    pub fn rank_shard(&self, config: &MoeConfig, rank: u32) -> Result<ShardWeights, WeightsError> {
        self.shard(config, &ShardWeights::rank_experts(config, rank)?)
    }
}

impl ShardWeights {
    /// The experts rank `rank` owns under `config`'s placement
    /// ([`crate::ExpertMap::experts_of`], ascending; empty when it owns none): the `experts`
    /// argument that gives a rank its share. A rank outside the world is a
    /// [`ConfigError::Invalid`] naming `world`.
    pub fn rank_experts(config: &MoeConfig, rank: u32) -> Result<Vec<u32>, WeightsError> {
        let map = config.expert_map()?;
        if rank >= config.world {
            return Err(ConfigError::Invalid {
                field: "world",
                reason: format!("rank {rank} does not exist in a world of {}", config.world),
            }
            .into());
        }
        Ok(map.experts_of(rank).to_vec())
    }

    /// The seeded weights of `config` under `seed` ([`LayerWeights::generate`]'s numbers,
    /// bitwise) for the routed experts `experts` only. Only the shard is allocated and
    /// computed: each expert's rows are generated at their offset of the stacked tensor.
    /// Allocations are fallible, as in [`LayerWeights::generate`].
    pub fn generate(
        config: &MoeConfig,
        seed: u64,
        experts: &[u32],
    ) -> Result<ShardWeights, WeightsError> {
        config.validate()?;
        check_experts(config, experts)?;
        let w = filled(shard_specs(config, experts.len()), |s, values| {
            if is_routed(s.name) {
                let len: usize = s.shape[1..].iter().product();
                for (chunk, &e) in values.chunks_exact_mut(len.max(1)).zip(experts) {
                    let offset = e as u64 * len as u64;
                    rng::fill_at(chunk, seed, s.id, offset, s.scale, config.dtype);
                }
            } else {
                rng::fill(values, seed, s.id, s.scale, config.dtype);
            }
        })?;
        Ok(ShardWeights { experts: experts.to_vec(), w })
    }

    /// The share of `experts` of the layer in one or more safetensors files (names and
    /// `prefix` as [`LayerWeights::load_safetensors`]). Only the headers, the router's and
    /// shared experts' tensors and these experts' bytes are read (module doc).
    pub fn load_safetensors(
        config: &MoeConfig,
        paths: &[impl AsRef<Path>],
        prefix: Option<&str>,
        experts: &[u32],
    ) -> Result<ShardWeights, WeightsError> {
        config.validate()?;
        check_experts(config, experts)?;
        let w = Checkpoint::open(paths)?.load_experts(config, prefix, Some(experts))?;
        ShardWeights::checked(config, experts, w)
    }

    /// [`ShardWeights::load_safetensors`] of a safetensors file held in memory.
    pub fn from_safetensors(
        config: &MoeConfig,
        bytes: &[u8],
        prefix: Option<&str>,
        experts: &[u32],
    ) -> Result<ShardWeights, WeightsError> {
        config.validate()?;
        check_experts(config, experts)?;
        let w = Checkpoint::from_bytes(bytes)?.load_experts(config, prefix, Some(experts))?;
        ShardWeights::checked(config, experts, w)
    }

    /// The share of `experts` of the layer among tensors held in memory
    /// ([`LayerWeights::from_tensors`]); other experts' tensors are never read.
    pub fn from_tensors(
        config: &MoeConfig,
        tensors: &[TensorBytes<'_>],
        prefix: Option<&str>,
        experts: &[u32],
    ) -> Result<ShardWeights, WeightsError> {
        config.validate()?;
        check_experts(config, experts)?;
        let w = checkpoint(tensors)?.load_experts(config, prefix, Some(experts))?;
        ShardWeights::checked(config, experts, w)
    }

    /// `w` as the shard of `experts`, after [`ShardWeights::check`].
    fn checked(
        config: &MoeConfig,
        experts: &[u32],
        w: LayerWeights,
    ) -> Result<ShardWeights, WeightsError> {
        let shard = ShardWeights { experts: experts.to_vec(), w };
        shard.check(config)?;
        Ok(shard)
    }

    /// Checks that this shard fits `config` (module invariant): its experts, then the
    /// tensors, shapes and values as [`LayerWeights::check`] does, with the routed tensors'
    /// first dimension the number of experts held.
    pub fn check(&self, config: &MoeConfig) -> Result<(), WeightsError> {
        self.check_shapes(config)?;
        for s in specs(config) {
            check_values(s.name, self.w.tensor(s.name).unwrap_or_default(), config)?;
        }
        Ok(())
    }

    /// The cheap part of [`ShardWeights::check`] (values not inspected).
    pub fn check_shapes(&self, config: &MoeConfig) -> Result<(), WeightsError> {
        config.validate()?;
        check_experts(config, &self.experts)?;
        self.w.check_tensors(config, shard_specs(config, self.experts.len()))
    }

    /// Global ids of the experts held, strictly ascending; position `j` is local expert `j`
    /// of the routed tensors.
    pub fn experts(&self) -> &[u32] {
        &self.experts
    }

    /// The local index of global expert `expert`, if this shard holds it.
    pub fn local(&self, expert: u32) -> Option<usize> {
        self.experts.binary_search(&expert).ok()
    }

    /// Router `[experts of the layer][hidden]` (whole).
    pub fn router(&self) -> &[f32] {
        &self.w.router
    }

    /// Up projection `[experts held][inter][hidden]`.
    pub fn up(&self) -> &[f32] {
        &self.w.up
    }

    /// Gate projection `[experts held][inter][hidden]`, SwiGLU only.
    pub fn gate(&self) -> Option<&[f32]> {
        self.w.gate.as_deref()
    }

    /// Down projection `[experts held][hidden][inter]`.
    pub fn down(&self) -> &[f32] {
        &self.w.down
    }

    /// Up bias `[experts held][inter]`, with biases.
    pub fn up_bias(&self) -> Option<&[f32]> {
        self.w.up_bias.as_deref()
    }

    /// Gate bias `[experts held][inter]`, SwiGLU with biases.
    pub fn gate_bias(&self) -> Option<&[f32]> {
        self.w.gate_bias.as_deref()
    }

    /// Down bias `[experts held][hidden]`, with biases.
    pub fn down_bias(&self) -> Option<&[f32]> {
        self.w.down_bias.as_deref()
    }

    /// Router bias `[experts of the layer]` (whole).
    pub fn router_bias(&self) -> Option<&[f32]> {
        self.w.router_bias.as_deref()
    }

    /// Selection bias `[experts of the layer]` (whole).
    pub fn selection_bias(&self) -> Option<&[f32]> {
        self.w.selection_bias.as_deref()
    }

    /// The shared experts' up projection `[S][hidden]` (whole).
    pub fn shared_up(&self) -> Option<&[f32]> {
        self.w.shared_up.as_deref()
    }

    /// The shared experts' gate projection `[S][hidden]` (whole).
    pub fn shared_gate(&self) -> Option<&[f32]> {
        self.w.shared_gate.as_deref()
    }

    /// The shared experts' down projection `[hidden][S]` (whole).
    pub fn shared_down(&self) -> Option<&[f32]> {
        self.w.shared_down.as_deref()
    }

    /// The shared experts' sigmoid gate row `[hidden]` (whole).
    pub fn shared_gate_row(&self) -> Option<&[f32]> {
        self.w.shared_gate_row.as_deref()
    }

    /// The tensor named `name` (a [`LayerWeights`] field name), if present.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.w.tensor(name)
    }

    /// Bytes of host memory the tensors take (`f32`): what a process holding this shard
    /// holds of the layer.
    pub fn host_bytes(&self) -> u64 {
        ["router", "up", "down"]
            .iter()
            .chain(&OPTIONAL)
            .map(|n| self.w.tensor(n).map_or(0, |t| t.len() as u64 * 4))
            .sum()
    }
}

#[cfg(test)]
mod tests;
