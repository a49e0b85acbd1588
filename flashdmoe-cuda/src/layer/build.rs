//! Building a layer ([`CudaBackend::build`], [`CudaBackend::build_process`]): the kernel's
//! specialisation chosen and compiled, each GPU's heaps, scratch, weights, tables and tensor
//! maps, and the plan every forward works from.

use std::sync::{Mutex, PoisonError};

use flashdmoe_core::virtual_experts::VirtualExperts;
use flashdmoe_core::{BackendError, LayerWeights, MoeConfig};
use flashdmoe_proto::{HeapLayout, TaskCounts};

use super::process::{PeerHeaps, ProcessGroup};
use super::upload::upload;
use super::{CudaBackend, CudaLayer, Plan, invalid, scratch_layout};
use crate::arch::Arch;
use crate::device::{Device, enable_peer_access, gpus};
use crate::jit::Jit;
use crate::launch::Kernel;
use crate::params::MAX_RANKS;
use crate::spec::{self, EngineChoice, MoeSpec, PairChoice};

/// Every candidate that `with` turns into the form the option `what` asks for, or, where none
/// can take it, an error naming the option with why the first cannot.
fn every_with(
    candidates: &[MoeSpec],
    what: &'static str,
    with: impl Fn(MoeSpec) -> Result<MoeSpec, String>,
) -> Result<Vec<MoeSpec>, BackendError> {
    let taken: Vec<MoeSpec> = candidates.iter().filter_map(|&c| with(c).ok()).collect();
    if taken.is_empty() {
        let why = candidates.first().and_then(|&c| with(c).err());
        return Err(invalid(what, why.unwrap_or_else(|| "no specialisation to build".into())));
    }
    Ok(taken)
}

impl CudaBackend {
    /// Builds this process's part of a layer of a world of processes, one GPU each
    /// (`group`): ranks `group.rank() * R .. + R` of the config's world (`R` = world /
    /// processes), on GPU `group.device()`, holding their experts only; the peers' heaps are
    /// reached through NCCL windows. Every process of the group must call it with the same
    /// config and weights (checked by fingerprint). Run it with [`CudaLayer::forward_local`]
    /// (or [`flashdmoe_core::Layer::forward_rank`] at one rank per GPU).
    pub fn build_process(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
        group: &ProcessGroup,
    ) -> Result<CudaLayer, BackendError> {
        self.build_with(config, weights, Some(group))
    }

    /// [`Self::build_once`] with the options' pairing; where [`PairChoice::Auto`] chose paired
    /// images and the launch's blocks cannot form clusters within each rank (a grid smaller
    /// than the SM count, an odd number of blocks per rank), the layer is built unpaired: the
    /// default never fails where pairs were only an optimisation.
    pub(super) fn build_with(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
        group: Option<&ProcessGroup>,
    ) -> Result<CudaLayer, BackendError> {
        match self.build_once(config, weights, group, self.options.pairs) {
            Err(BackendError::InvalidInput { what: "pairs", .. })
                if self.options.pairs == PairChoice::Auto =>
            {
                self.build_once(config, weights, group, PairChoice::Off)
            }
            built => built,
        }
    }

    fn build_once(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
        group: Option<&ProcessGroup>,
        pairs: PairChoice,
    ) -> Result<CudaLayer, BackendError> {
        let _range = nvtx::LocalRange::new(c"flashdmoe::cuda::build");
        config.validate()?;
        // What the kernel does not compute is refused, never run as another layer.
        spec::check_computed(config)?;
        weights.check(config).map_err(|e| invalid("weights", e.to_string()))?;
        let virtual_experts = VirtualExperts::of(config)?;
        let protocol = match virtual_experts {
            Some(v) => v.protocol_config(config)?,
            None => config.clone(),
        };
        // The shared experts split into the routed experts' shape, uploaded as experts.
        let shared_parts = weights.shared_parts(config)?;
        let world = config.world;
        if world as usize > MAX_RANKS {
            return Err(invalid(
                "config",
                format!("world {world} exceeds the {MAX_RANKS} ranks the CUDA backend supports"),
            ));
        }
        let available = gpus()?;
        let ranks_per_gpu = match (group, self.options.ranks_per_gpu) {
            // One GPU per process: the world is spread evenly over the processes.
            (Some(g), r) => {
                let per = world as usize / g.world().max(1);
                if per == 0
                    || per * g.world() != world as usize
                    || r.is_some_and(|r| r as usize != per)
                {
                    return Err(invalid(
                        "ranks_per_gpu",
                        format!(
                            "a world of {world} ranks over {} processes (one GPU each) needs \
                             {world} to be a multiple of {} (ranks per GPU asked: {r:?})",
                            g.world(),
                            g.world()
                        ),
                    ));
                }
                per as u32
            }
            (None, r) => match r {
                Some(r) if r == 0 || !world.is_multiple_of(r) => {
                    return Err(invalid(
                        "ranks_per_gpu",
                        format!("{r} must be > 0 and divide the world size {world}"),
                    ));
                }
                Some(r) => r,
                // As many GPUs as divide the world evenly.
                None => (1..=world)
                    .find(|&r| world.is_multiple_of(r) && (world / r) as usize <= available.len())
                    .unwrap_or(world),
            },
        };
        let (ngpus, first) = match group {
            Some(g) => (1, g.device()),
            None => ((world / ranks_per_gpu) as usize, self.options.first_gpu as usize),
        };
        if first + ngpus > available.len() {
            return Err(BackendError::TooFewDevices {
                ranks: world,
                per_device: ranks_per_gpu,
                needed: (first + ngpus) as u32,
                found: available.len() as u32,
            });
        }
        let jit = Jit::from_env()?;
        let mut devices =
            (first..first + ngpus).map(Device::open).collect::<Result<Vec<_>, _>>()?;
        // One block per SM (the tile configs' shared memory); one OS block per rank.
        let sms = devices.iter().map(|d| d.gpu().sm_count).min().unwrap_or(0);
        let processors = (sms / ranks_per_gpu).saturating_sub(1).max(1);
        // The first specialisation that compiles without spills, on the first GPU's
        // architecture; the others compile that one (all GPUs of a node are normally alike).
        let arch0 = Arch::for_device(devices[0].gpu().cc);
        let spec::Chosen { spec, compiled: compiled0, skipped } = {
            let candidates = match self.options.tile {
                Some(_) if self.options.engine == EngineChoice::MmaSync => {
                    return Err(invalid(
                        "tile",
                        "a chosen tile runs on the Hopper engine, and the mma.sync engine was asked for"
                            .into(),
                    ));
                }
                Some(tile) => vec![
                    MoeSpec::with_tile(config, processors, arch0, tile)
                        .map_err(|why| invalid("tile", why))?,
                ],
                None => self.options.engine.filter(MoeSpec::candidates(config, processors, arch0)),
            };
            let candidates = spec::combine_candidates(candidates, self.options.combine);
            let candidates = match pairs {
                PairChoice::On => every_with(&candidates, "pairs", MoeSpec::with_pairs)?,
                // Only where the blocks of each rank can form clusters (one block an SM).
                PairChoice::Auto if sms % ranks_per_gpu == 0 && (sms / ranks_per_gpu) % 2 == 0 => {
                    candidates.into_iter().map(PairChoice::auto).collect()
                }
                PairChoice::Auto | PairChoice::Off => candidates,
            };
            if candidates.is_empty() {
                return Err(invalid(
                    "engine",
                    format!(
                        "the Hopper (wgmma) engine cannot run a {} layer on {arch0}: it needs an \
                         sm_90 GPU and bf16, f16 or f32 (tf32 tensor cores)",
                        config.dtype.name()
                    ),
                ));
            }
            spec::compile_first(&jit, arch0, &candidates)?
        };
        let layout = HeapLayout::new(protocol.geometry(spec.tile)?)?;
        let map = protocol.expert_map()?;
        if ngpus > 1 && group.is_none() {
            enable_peer_access(&devices)?;
        }
        let mut kernels = Vec::with_capacity(ngpus);
        for device in &devices {
            let arch = Arch::for_device(device.gpu().cc);
            // The first architecture's image is already here (a spilling candidate is not
            // compiled again); another architecture compiles the chosen spec.
            let compiled = if arch == arch0 {
                compiled0.clone()
            } else {
                jit.compile_variant(&spec.variant(), spec.arch_for(arch))?
            };
            let kernel = Kernel::load(device, &compiled.cubin, spec.smem_bytes())?;
            let shape = kernel.cooperative_shape(spec.block_threads())?;
            kernels.push((kernel, shape));
        }
        let grid = kernels.iter().map(|(_, s)| s.grid).min().unwrap_or(0);
        let blocks_per_rank = grid / ranks_per_gpu;
        if !(2..=1024).contains(&blocks_per_rank) {
            return Err(invalid(
                "ranks_per_gpu",
                format!(
                    "{ranks_per_gpu} ranks on a {grid}-block grid leave {blocks_per_rank} blocks per rank (need 2..=1024)"
                ),
            ));
        }
        if spec.pairs && (blocks_per_rank % 2 != 0 || grid % 2 != 0) {
            return Err(invalid(
                "pairs",
                format!(
                    "paired tasks run in 2-CTA clusters that must not straddle ranks: {ranks_per_gpu} \
                     ranks on a {grid}-block grid leave {blocks_per_rank} blocks per rank (need an \
                     even number; PairChoice::Off, the CLI's --no-pairs, runs unpaired)"
                ),
            ));
        }
        let processors = blocks_per_rank - 1;
        let remote_copiers = match self.options.remote_copiers {
            None => (processors / 4).max(1),
            Some(n) if (1..=processors).contains(&n) => n,
            Some(n) => {
                return Err(invalid(
                    "remote_copiers",
                    format!(
                        "{n} copying blocks of a rank's {processors} processors (1..={processors})"
                    ),
                ));
            }
        };
        let g = layout.geometry();
        let max_tasks = max_tasks(&protocol, &layout)?;
        let (scratch, scratch_bytes) = scratch_layout(
            &protocol,
            config.experts,
            g.capacity,
            max_tasks,
            blocks_per_rank - 1,
            spec.router_split,
        )?;
        let plan = Plan {
            config: config.clone(),
            protocol,
            virtual_experts,
            spec,
            layout,
            map,
            scratch,
            scratch_bytes,
            ranks_per_gpu,
            blocks_per_rank,
            remote_copiers,
            skipped: skipped.into_iter().map(|(label, _)| label).collect(),
            fallback: if compiled0.fallback {
                spec.variant().fallback_changes()
            } else {
                Vec::new()
            },
        };

        let mut built = Vec::with_capacity(ngpus);
        let mut heap_table = [0u64; MAX_RANKS];
        let kernel_heap_bytes = ranks_per_gpu as u64 * plan.layout.total_bytes();
        let (first_rank, nccl_heap, peers) = match group {
            Some(g) => {
                // Every process must have chosen the same kernel and layout.
                g.agree(&super::process::fingerprint(&plan, g.world()))?;
                let ctx = devices[0].context().clone();
                let heap = g.heap(&ctx, kernel_heap_bytes)?;
                for (p, &base) in heap.peers().iter().enumerate() {
                    for r in 0..ranks_per_gpu {
                        heap_table[p * ranks_per_gpu as usize + r as usize] =
                            base + r as u64 * plan.layout.total_bytes();
                    }
                }
                (g.rank() as u32 * ranks_per_gpu, Some(heap), PeerHeaps::Nccl(g.link(&ctx)?))
            }
            None => (0, None, PeerHeaps::Local),
        };
        let mut nccl_heap = nccl_heap;
        for (d, (device, (kernel, shape))) in devices.drain(..).zip(kernels).enumerate() {
            let first_rank = first_rank + d as u32 * ranks_per_gpu;
            let gpu = upload(
                &plan,
                device,
                (kernel, shape),
                first_rank,
                (weights, shared_parts.as_ref()),
                nccl_heap.take(),
            )?;
            let stream = gpu.device.stream().clone();
            // The uploads are done before `build` returns: a device-resident forward runs on
            // the caller's stream, which is not ordered after this one.
            stream.synchronize().map_err(|e| BackendError::Device(e.to_string()))?;
            for r in 0..ranks_per_gpu {
                heap_table[(gpu.first_rank + r) as usize] =
                    gpu.heaps.rank_ptr(&stream, plan.layout.total_bytes(), r);
            }
            built.push(Mutex::new(gpu));
        }
        let marks = Mutex::new(vec![Vec::new(); plan.config.world as usize]);
        let layer = CudaLayer { plan, gpus: built, heap_table, peers, marks };
        for gpu in &layer.gpus {
            let mut gpu = gpu.lock().unwrap_or_else(PoisonError::into_inner);
            gpu.params = layer.fixed_params(&gpu);
        }
        if let Some(g) = group {
            // Every process's heap is zeroed, stamped and mapped before any kernel runs.
            g.barrier()?;
        }
        Ok(layer)
    }
}

/// The most tasks one rank of a layer whose protocol runs `protocol` over `layout` can run in
/// a forward (the task queue's size): every source sends a rank at most `T * k` rows (`k` the
/// protocol's slots: with shared experts the router's plus their parts, whose `T` rows a rank
/// sends itself), each packet's last row tile possibly partial.
pub(super) fn max_tasks(protocol: &MoeConfig, layout: &HeapLayout) -> Result<u32, BackendError> {
    let g = layout.geometry();
    let rows = g.world as u64 * protocol.tokens_per_rank as u64 * protocol.top_k as u64;
    let row_tiles = rows.div_ceil(g.tile.bm as u64) + g.world as u64 * g.local_experts as u64;
    let max_tasks = TaskCounts::bound(layout, row_tiles, g.tokens);
    u32::try_from(max_tasks).map_err(|_| {
        invalid("config", format!("{max_tasks} tasks per rank exceed the u32 task index"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CudaOptions;
    use flashdmoe_core::Backend;

    /// An option every candidate refuses fails the build naming the option and why; one some
    /// take keeps those, in order (`pairs`: DeepSeek-V3's mma.sync candidates cannot pair).
    #[test]
    fn an_option_no_candidate_takes_is_an_error_naming_it() {
        use flashdmoe_core::config::presets;
        let config = presets::preset("deepseek-v3").unwrap();
        let all = MoeSpec::candidates(&config, spec::H200_PROCESSORS, Arch::SM90A);
        let mma: Vec<MoeSpec> =
            all.iter().copied().filter(|s| s.engine == spec::TileEngine::MmaSync).collect();
        assert!(!mma.is_empty());
        let err = every_with(&mma, "pairs", MoeSpec::with_pairs).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidInput { what: "pairs", reason } if reason.contains("mma.sync")),
            "{err:?}"
        );
        // The Hopper candidates with a cooperative tile of bn a multiple of 16, every one paired.
        let can_pair: Vec<MoeSpec> = all
            .iter()
            .filter(
                |s| matches!(s.engine, spec::TileEngine::Wgmma(t) if !t.pingpong && t.bn % 16 == 0),
            )
            .map(|&s| MoeSpec { pairs: true, ..s })
            .collect();
        assert!(!can_pair.is_empty() && can_pair.len() < all.len());
        assert_eq!(every_with(&all, "pairs", MoeSpec::with_pairs).unwrap(), can_pair);
        assert!(every_with(&[], "pairs", MoeSpec::with_pairs).is_err());
    }

    #[test]
    fn the_task_queue_holds_every_task_of_the_shared_experts_parts_too() {
        use flashdmoe_core::config::{Activation, SharedExperts, SharedGate};
        use flashdmoe_proto::TileShape;
        // The worst routing: every token of every rank to rank 0's experts, plus the rank's
        // own parts of the shared experts (m = 4), on a tile whose packets end in partial tiles.
        let c = MoeConfig {
            world: 3,
            tokens_per_rank: 1000,
            hidden: 64,
            inter: 64,
            experts: 6,
            top_k: 2,
            activation: Activation::SiluGated,
            capacity: flashdmoe_core::CapacityPolicy::Dropless,
            shared: Some(SharedExperts { count: 1, inter: 256, gate: SharedGate::Sigmoid }),
            ..MoeConfig::default()
        };
        let v = VirtualExperts::of(&c).unwrap().unwrap();
        let protocol = v.protocol_config(&c).unwrap();
        let layout =
            HeapLayout::new(protocol.geometry(TileShape::new(64, 64, 64)).unwrap()).unwrap();
        let g = layout.geometry();
        // Rank 0 receives 1000 rows for each of its 2 routed experts from every rank, and its
        // own 4 parts' 1000 rows each.
        let mut received = vec![0u32; (g.world * g.local_experts) as usize];
        for src in 0..3 {
            for le in 0..2 {
                received[(src * g.local_experts + le) as usize] = 1000;
            }
        }
        for le in 2..6 {
            received[le as usize] = 1000;
        }
        let exact = TaskCounts::for_rank(&layout, received.iter().copied()).total();
        let bound = max_tasks(&protocol, &layout).unwrap() as u64;
        assert!(exact <= bound, "{exact} tasks, queue of {bound}");
        // Without the parts' rows the queue would be too small for this forward.
        let routed_only = MoeConfig { top_k: 2, ..protocol.clone() };
        assert!(exact > max_tasks(&routed_only, &layout).unwrap() as u64);
    }

    #[test]
    fn shared_experts_the_kernel_cannot_run_are_refused_naming_the_field_before_any_device() {
        use flashdmoe_core::config::presets::preset;
        let qwen = MoeConfig { tokens_per_rank: 8, ..preset("qwen1.5-moe-a2.7b").unwrap() };
        // No GPU is needed: the refusal comes first.
        for (what, c) in [
            ("shared", MoeConfig { inter: 1472, ..qwen.clone() }),
            ("shared", MoeConfig { activation: flashdmoe_core::Activation::Gelu, ..qwen.clone() }),
            (
                "capacity",
                MoeConfig { capacity: flashdmoe_core::CapacityPolicy::Factor(2.0), ..qwen.clone() },
            ),
        ] {
            // The weights do not matter (nor fit): the config is refused first.
            let w = LayerWeights::generate(&MoeConfig::default(), 1).unwrap();
            let err = CudaBackend::new(CudaOptions::default()).build(&c, &w).unwrap_err();
            assert!(
                matches!(&err, BackendError::InvalidInput { what: w, .. } if *w == what),
                "{what}: {err}"
            );
            assert!(err.to_string().contains("--backend sim computes this layer"), "{err}");
        }
        // The routers, experts and shared experts the kernel computes are not refused.
        for name in ["gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2", "qwen2-57b-a14b"] {
            let c = MoeConfig { tokens_per_rank: 8, ..preset(name).unwrap() };
            assert!(spec::check_computed(&c).is_ok(), "{name}");
        }
    }
}
