//! What a layer costs the simulator before it runs: the FLOPs of a forward, its time on this
//! many cores at a conservative measured rate, and the host memory of the built layer.
//!
//! The rate, [`SimBackend::FLOPS_PER_CORE`], is about half of what the tile executor reached on
//! one core of a busy 2-core development machine (4 to 5.4 GFLOP/s for ReLU, GELU and SwiGLU
//! layers of H, I = 256 to 2048 in bf16, f32 and exact f32, 2026-11-29), so estimates err on the
//! slow side.

use flashdmoe_core::{BackendError, MoeConfig};
use flashdmoe_proto::HeapLayout;

use crate::SimBackend;

/// The cost of one forward of a layer on the simulator (all ranks together).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimCost {
    /// Floating-point operations of one forward: every rank's expert GEMMs over the rows it
    /// can route (capacity bounded), its router and its combine.
    pub flops: f64,
    /// Processor threads that can compute at once: the world's processors, at most `cores`.
    pub threads: u32,
    /// Estimated seconds of one forward: `flops / (threads * FLOPS_PER_CORE)`.
    pub forward_seconds: f64,
    /// Bytes of every rank's simulated heap.
    pub heap_bytes: u64,
    /// Bytes of the layer's own copy of the weights (host `f32`): every rank's
    /// [`ShardWeights`](flashdmoe_core::ShardWeights), so every expert (with its biases) once
    /// and the router (with its biases) and the shared experts once per rank.
    pub weight_bytes: u64,
}

impl SimBackend {
    /// Conservative FLOP rate of the simulator's tile executor on one core (module doc).
    pub const FLOPS_PER_CORE: f64 = 2.5e9;

    /// The cost of a forward of `config` with `cores` cores to run on (at least 1 is assumed).
    /// Errors like [`flashdmoe_core::Backend::build`] for configs the simulator cannot build.
    pub fn cost(&self, config: &MoeConfig, cores: u32) -> Result<SimCost, BackendError> {
        let layout = HeapLayout::new(config.geometry(self.tile())?)?;
        let heaps = layout.total_bytes().saturating_mul(config.world as u64);
        let (t, h, i) = (config.tokens_per_rank as f64, config.hidden as f64, config.inter as f64);
        let (e, k) = (config.experts as f64, config.top_k as f64);
        let matrices = if config.activation.is_gated() { 3.0 } else { 2.0 };
        // Rows a rank sends to experts: every (token, slot) pair, at most a full packet each.
        let rows = (t * k).min(e * config.capacity_rows() as f64);
        // Shared experts: every token, one SwiGLU of S = count x inter (and Qwen's gate row).
        let shared = config.shared.map_or(0.0, |s| 3.0 * h * s.total_inter() as f64 + h);
        let per_rank =
            rows * 2.0 * matrices * h * i + 2.0 * t * h * e + 2.0 * t * k * h + 2.0 * t * shared;
        let flops = per_rank * config.world as f64;
        let processors = config.world as u64 * self.options().processors_per_rank as u64;
        let threads = processors.clamp(1, cores.max(1) as u64) as u32;
        // Core's estimate in the dtype: the layer once, the replicated part once per rank.
        let m = config.memory_estimate()?;
        let eb = config.dtype.elem_bytes() as f64;
        let replicated = m.replicated_weights as f64 * (config.world as f64 - 1.0);
        let weights = (m.layer_weights as f64 + replicated) / eb * 4.0;
        Ok(SimCost {
            flops,
            threads,
            forward_seconds: flops / (threads as f64 * Self::FLOPS_PER_CORE),
            heap_bytes: heaps,
            weight_bytes: weights as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use flashdmoe_core::config::presets;
    use flashdmoe_core::{Activation, Backend, CapacityPolicy, ShardWeights, SharedExperts};

    use super::*;
    use crate::SimOptions;

    #[test]
    fn flops_of_the_default_layer_by_hand() {
        // 2 ranks x 64 tokens, H 256, I 512, 8 experts, top-2, ReLU, capacity 16 rows: every
        // rank routes its 128 (token, slot) pairs (8 x 16 = 128 fit).
        let c = MoeConfig::default();
        let cost = SimBackend::default().cost(&c, 16).unwrap();
        let per_rank =
            128.0 * 2.0 * 2.0 * 256.0 * 512.0 + 2.0 * 64.0 * 256.0 * 8.0 + 2.0 * 64.0 * 2.0 * 256.0;
        assert_eq!(cost.flops, 2.0 * per_rank);
        // 2 ranks x 2 processors, 16 cores: 4 threads.
        assert_eq!(cost.threads, 4);
        assert_eq!(cost.forward_seconds, cost.flops / (4.0 * SimBackend::FLOPS_PER_CORE));
    }

    #[test]
    fn weight_bytes_are_those_of_the_built_layers_shards() {
        let qwen = presets::preset("qwen1.5-moe-a2.7b").unwrap();
        let qwen = MoeConfig { hidden: 64, inter: 64, tokens_per_rank: 4, ..qwen };
        let qwen =
            MoeConfig { shared: qwen.shared.map(|s| SharedExperts { inter: 64, ..s }), ..qwen };
        let configs = [
            MoeConfig::default(),
            MoeConfig {
                activation: Activation::SiluGated,
                bias: true,
                world: 3,
                ..MoeConfig::default()
            },
            qwen,
        ];
        for c in configs {
            let w = flashdmoe_core::LayerWeights::generate(&c, 1).unwrap();
            let layer = SimBackend::default().build(&c, &w).unwrap();
            let held: u64 = layer.shards.iter().map(ShardWeights::host_bytes).sum();
            let cost = SimBackend::default().cost(&c, 1).unwrap();
            assert_eq!(cost.weight_bytes, held, "{c:?}");
        }
    }

    #[test]
    fn capacity_bounds_the_rows_and_cores_bound_the_threads() {
        let c = MoeConfig { capacity: CapacityPolicy::Factor(0.5), ..MoeConfig::default() };
        let full = SimBackend::default().cost(&MoeConfig::default(), 1).unwrap();
        let half = SimBackend::default().cost(&c, 1).unwrap();
        assert!(half.flops < 0.6 * full.flops, "{half:?} vs {full:?}");
        assert_eq!(full.threads, 1);
        let many = SimOptions { processors_per_rank: 64, ..SimOptions::default() };
        assert_eq!(SimBackend::new(many).cost(&c, 0).unwrap().threads, 1);
    }

    #[test]
    fn mixtral_costs_minutes_and_gigabytes() {
        let c = presets::preset("mixtral-8x7b").unwrap();
        assert_eq!(c.activation, Activation::SiluGated);
        let cost = SimBackend::default().cost(&c, 2).unwrap();
        // 4096 tokens x top-2 x 2 x 3 x 4096 x 14336 = 2.9 TFLOP of expert GEMMs.
        assert!((2.8e12..3.0e12).contains(&cost.flops), "{cost:?}");
        assert!(cost.forward_seconds > 500.0, "{cost:?}");
        // The layer's f32 copy of 8 experts x 3 x 4096 x 14336 weights, and the router on each
        // rank.
        let routers = c.world as u64 * 8 * 4096;
        assert_eq!(cost.weight_bytes, (8 * 3 * 4096 * 14336 + routers) * 4);
    }

    #[test]
    fn configs_the_simulator_cannot_build_are_errors() {
        let c = MoeConfig { hidden: 100, ..MoeConfig::default() };
        assert!(matches!(SimBackend::default().cost(&c, 2), Err(BackendError::Config(_))));
    }
}
