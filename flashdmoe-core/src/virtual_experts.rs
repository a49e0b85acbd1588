//! Shared experts as virtual routed experts: how a backend runs a layer's shared experts
//! through the protocol unchanged (the CUDA kernel; `docs/dev/shared-experts-in-kernel.md`).
//!
//! With the shared experts' intermediate size `S = m * I` ([`crate::weights::shared_parts_of`]),
//! rank `r` owns `m` more experts of the routed shape, global ids `E + r * m + j` (`j < m`),
//! each holding part `j` of the shared experts ([`crate::weights::SharedParts`]), and every
//! token of rank `r` is routed to all `m` of them, in slots `k .. k + m` after the router's,
//! with the weight `gs` (1, or Qwen's `sigmoid(x . gate_row)`: `oracle::shared_scale`). The
//! protocol then runs a layer of `E' = E + P * m` experts and `k + m` slots a token
//! ([`VirtualExperts::protocol_config`]): its layout, task graph and signals do not change.
//! Shared experts never drop, so a capacity factor is refused (every published model with
//! shared experts is dropless).
//!
//! Invariant: the router's routing (`k` slots over `E` experts: what the oracle checks) and
//! the protocol's ([`VirtualExperts::protocol_routing`]) convert exactly:
//! [`VirtualExperts::router_routing`] of the protocol's routing is the router's.

use flashdmoe_proto::{HeapLayout, SourcePlan};

use crate::config::{CapacityPolicy, ConfigError, MoeConfig, Placement, Routing};
use crate::routing::{RankRouting, RoutingError};
use crate::weights::{LayerWeights, shared_parts_of};

/// The shared experts of a layer as `m` virtual experts per rank (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualExperts {
    /// `E`: the router's experts.
    pub router_experts: u32,
    /// `m`: the parts of the shared experts, each a virtual expert on every rank.
    pub parts: u32,
    /// `P`: ranks.
    pub world: u32,
    /// `k`: the router's slots a token.
    pub top_k: u32,
}

impl VirtualExperts {
    /// The virtual experts of `config` (`None` without shared experts). Errors naming the
    /// field: shared experts that do not split into routed experts
    /// ([`crate::weights::shared_parts_of`]: `shared`), a capacity factor (`capacity`), or more
    /// experts than 32 bits count (`shared`).
    pub fn of(config: &MoeConfig) -> Result<Option<VirtualExperts>, ConfigError> {
        let Some(parts) = shared_parts_of(config)? else { return Ok(None) };
        if let CapacityPolicy::Factor(f) = config.capacity {
            return Err(ConfigError::Invalid {
                field: "capacity",
                reason: format!(
                    "factor {f} with shared experts: they run as routed experts every token \
                     visits, which a capacity would drop (shared experts are dropless)"
                ),
            });
        }
        let total = config.world as u64 * parts as u64 + config.experts as u64;
        if total > u32::MAX as u64 {
            return Err(ConfigError::Invalid {
                field: "shared",
                reason: format!("{total} experts with the shared experts' parts exceed 32 bits"),
            });
        }
        Ok(Some(VirtualExperts {
            router_experts: config.experts,
            parts,
            world: config.world,
            top_k: config.top_k,
        }))
    }

    /// `E' = E + P * m`: the protocol's experts.
    pub fn experts(&self) -> u32 {
        self.router_experts + self.world * self.parts
    }

    /// `k + m`: the protocol's slots a token.
    pub fn slots(&self) -> u32 {
        self.top_k + self.parts
    }

    /// The global id of rank `rank`'s part `j`: `E + rank * m + j`.
    pub fn expert(&self, rank: u32, j: u32) -> u32 {
        self.router_experts + rank * self.parts + j
    }

    /// `(rank, j)` of a virtual expert, `None` for a routed one (or an id past `E'`).
    pub fn part_of(&self, expert: u32) -> Option<(u32, u32)> {
        let v = expert.checked_sub(self.router_experts)?;
        (expert < self.experts()).then(|| (v / self.parts, v % self.parts))
    }

    /// The layer the protocol runs: `E'` experts (each routed expert where `config` places
    /// it, rank `r`'s parts on rank `r`: a placement table), `k + m` slots, dropless, no
    /// shared experts. Its router fields are the paper's: the protocol never routes.
    pub fn protocol_config(&self, config: &MoeConfig) -> Result<MoeConfig, ConfigError> {
        let map = config.expert_map()?;
        let mut table: Vec<u32> = (0..config.experts).map(|e| map.owner(e).0).collect();
        table.extend((0..self.world).flat_map(|r| std::iter::repeat_n(r, self.parts as usize)));
        Ok(MoeConfig {
            experts: self.experts(),
            top_k: self.slots(),
            shared: None,
            routing: Routing::SOFTMAX,
            renormalize: false,
            capacity: CapacityPolicy::Dropless,
            placement: Placement::Table(table),
            memory_limit: u64::MAX,
            ..config.clone()
        })
    }

    /// Rank `rank`'s routing as the protocol runs it, from the router's `routing` of
    /// `config` (the user's layer; `protocol` its [`Self::protocol_config`]): each token's
    /// router slots, then its `m` parts with the weight `scale(token)`.
    pub fn protocol_routing(
        &self,
        protocol: &MoeConfig,
        rank: u32,
        routing: &RankRouting,
        scale: impl Fn(u32) -> f32,
    ) -> Result<RankRouting, RoutingError> {
        if routing.top_k != self.top_k {
            return Err(RoutingError::Shape {
                what: "routing.top_k",
                expected: self.top_k as usize,
                actual: routing.top_k as usize,
            });
        }
        let k = self.top_k as usize;
        let tokens = routing.experts.len() / k.max(1);
        let (mut experts, mut weights) = (Vec::new(), Vec::new());
        for t in 0..tokens {
            experts.extend_from_slice(&routing.experts[t * k..][..k]);
            experts.extend((0..self.parts).map(|j| self.expert(rank, j)));
            let w = routing.weights.get(t * k..(t + 1) * k).unwrap_or_default();
            weights.extend_from_slice(w);
            weights.extend(std::iter::repeat_n(scale(t as u32), self.parts as usize));
        }
        RankRouting::from_choices(protocol, experts, weights)
    }

    /// The router's routing in a protocol routing: each token's first `k` slots and the first
    /// `E` experts' token lists (what a backend reports and the oracle checks).
    pub fn router_routing(&self, protocol: &RankRouting) -> RankRouting {
        let (k, slots) = (self.top_k as usize, self.slots() as usize);
        let first_k = |v: &[u32]| -> Vec<u32> {
            v.chunks_exact(slots).flat_map(|s| s[..k].iter().copied()).collect()
        };
        let weights =
            protocol.weights.chunks_exact(slots).flat_map(|s| s[..k].iter().copied()).collect();
        let mut expert_tokens = protocol.expert_tokens.clone();
        expert_tokens.truncate(self.router_experts as usize);
        RankRouting {
            top_k: self.top_k,
            experts: first_k(&protocol.experts),
            weights,
            rows: first_k(&protocol.rows),
            expert_tokens,
        }
    }

    /// The weights of the layer the protocol runs ([`Self::protocol_config`]) from `config`'s
    /// `weights`: the routed experts, then every rank's `m` parts of the shared experts (the
    /// same parts on every rank, [`crate::weights::SharedParts`]) as experts; the router's rows
    /// of the virtual experts are zero (the protocol never routes: a backend runs it with the
    /// routing given, [`Self::protocol_routing`]). For tests and tools: a backend uploads the
    /// parts without this whole copy.
    pub fn protocol_weights(
        &self,
        config: &MoeConfig,
        weights: &LayerWeights,
    ) -> Result<LayerWeights, ConfigError> {
        let invalid =
            |reason: &str| ConfigError::Invalid { field: "shared", reason: reason.into() };
        let parts = weights.shared_parts(config)?.ok_or_else(|| invalid("no shared experts"))?;
        let copies = self.world as usize;
        let extend = |routed: &[f32], parts: &[f32]| {
            let mut out = routed.to_vec();
            (0..copies).for_each(|_| out.extend_from_slice(parts));
            out
        };
        let mut router = weights.router.clone();
        router.resize((self.experts() * config.hidden) as usize, 0.0);
        let gate = weights.gate.as_deref().ok_or_else(|| invalid("no routed gate projection"))?;
        Ok(LayerWeights {
            router,
            up: extend(&weights.up, &parts.up),
            gate: Some(extend(gate, &parts.gate)),
            down: extend(&weights.down, &parts.down),
            ..LayerWeights::empty()
        })
    }

    /// Rank `rank`'s packets as the protocol sees them (`layout`: the protocol config's),
    /// from the router's `routing` of `config`: its routed packets and its parts' (every token).
    pub fn source_plan(
        &self,
        config: &MoeConfig,
        rank: u32,
        routing: &RankRouting,
        layout: &HeapLayout,
    ) -> Result<SourcePlan, RoutingError> {
        let protocol = self.protocol_config(config)?;
        self.protocol_routing(&protocol, rank, routing, |_| 1.0)?.source_plan(&protocol, layout)
    }
}

#[cfg(test)]
mod tests {
    use flashdmoe_proto::TileShape;

    use super::*;
    use crate::config::{Activation, SharedExperts, SharedGate};
    use crate::oracle::{reference_rank, shared_scale};
    use crate::routing::route;
    use crate::weights::generate_input;

    /// Two ranks, 4 experts placed 1 | 3, top-2, shared experts of 2 x 64 (m = 2).
    fn config() -> MoeConfig {
        MoeConfig {
            world: 2,
            tokens_per_rank: 5,
            hidden: 64,
            inter: 64,
            experts: 4,
            top_k: 2,
            activation: Activation::SiluGated,
            capacity: CapacityPolicy::Dropless,
            placement: Placement::Table(vec![1, 0, 1, 1]),
            shared: Some(SharedExperts { count: 2, inter: 64, gate: SharedGate::None }),
            ..MoeConfig::default()
        }
    }

    #[test]
    fn rank_r_owns_parts_e_plus_r_m_after_its_routed_experts() {
        let c = config();
        let v = VirtualExperts::of(&c).unwrap().unwrap();
        assert_eq!((v.experts(), v.slots()), (8, 4));
        assert_eq!([v.expert(0, 0), v.expert(0, 1), v.expert(1, 0), v.expert(1, 1)], [4, 5, 6, 7]);
        assert_eq!(v.part_of(3), None);
        assert_eq!(v.part_of(6), Some((1, 0)));
        assert_eq!(v.part_of(8), None);
        let p = v.protocol_config(&c).unwrap();
        p.validate().unwrap();
        let map = p.expert_map().unwrap();
        // Rank 0: expert 1 then its parts 4, 5; rank 1: experts 0, 2, 3 then 6, 7.
        assert_eq!(map.experts_of(0), [1, 4, 5]);
        assert_eq!(map.experts_of(1), [0, 2, 3, 6, 7]);
        assert_eq!((p.top_k, p.shared, p.capacity_rows()), (4, None, 5));
        assert_eq!(VirtualExperts::of(&MoeConfig::default()), Ok(None));
    }

    #[test]
    fn the_protocol_routing_appends_every_token_to_the_rank_s_parts_and_converts_back() {
        let c = config();
        let v = VirtualExperts::of(&c).unwrap().unwrap();
        let w = LayerWeights::generate(&c, 3).unwrap();
        let x = generate_input(&c, 1, 3).unwrap();
        let routing = route(&c, &x, &w).unwrap();
        let p = v.protocol_config(&c).unwrap();
        let full = v.protocol_routing(&p, 1, &routing, |t| t as f32 + 0.5).unwrap();
        for t in 0..5usize {
            assert_eq!(full.experts[t * 4..][..2], routing.experts[t * 2..][..2]);
            assert_eq!(full.experts[t * 4 + 2..][..2], [6, 7]);
            assert_eq!(full.weights[t * 4 + 2..][..2], [t as f32 + 0.5; 2]);
            // Dropless: token t is row t of each part's packet.
            assert_eq!(full.rows[t * 4 + 2..][..2], [t as u32; 2]);
        }
        assert_eq!(full.expert_tokens[6], [0, 1, 2, 3, 4]);
        assert!(full.expert_tokens[4].is_empty());
        assert_eq!(v.router_routing(&full), routing);
        // The plan has rank 1's parts as packets (1, 3) and (1, 4): 5 rows each.
        let layout = HeapLayout::new(p.geometry(TileShape::new(16, 64, 64)).unwrap()).unwrap();
        let plan = v.source_plan(&c, 1, &routing, &layout).unwrap();
        assert_eq!((plan.rows(1, 3), plan.rows(1, 4), plan.rows(0, 1)), (5, 5, 0));
        let routed: u32 = (0..3).map(|le| plan.rows(1, le)).sum::<u32>() + plan.rows(0, 0);
        assert_eq!(routed, 10);
    }

    #[test]
    fn the_protocol_layer_with_the_protocol_routing_is_the_layer_with_shared_experts() {
        // f32 exact, so the only difference is where the shared MLP's output is rounded
        // (once in the layer, once per part in the protocol's) and the order of the sums.
        for gate in [SharedGate::None, SharedGate::Sigmoid] {
            let c = MoeConfig {
                dtype: crate::DType::F32Exact,
                shared: Some(SharedExperts { count: 2, inter: 64, gate }),
                ..config()
            };
            let v = VirtualExperts::of(&c).unwrap().unwrap();
            let w = LayerWeights::generate(&c, 8).unwrap();
            let p = v.protocol_config(&c).unwrap();
            let pw = v.protocol_weights(&c, &w).unwrap();
            pw.check(&p).unwrap();
            for rank in 0..c.world {
                let x = generate_input(&c, rank, 8).unwrap();
                let routing = route(&c, &x, &w).unwrap();
                let want = reference_rank(&c, &w, &x, &routing).unwrap();
                let h = c.hidden as usize;
                let gs = |t: u32| shared_scale(&w, &x[t as usize * h..][..h]);
                let full = v.protocol_routing(&p, rank, &routing, gs).unwrap();
                let got = reference_rank(&p, &pw, &x, &full).unwrap();
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{gate:?} {i}: {a} {b}");
                }
            }
        }
        assert!(
            VirtualExperts::of(&config())
                .unwrap()
                .unwrap()
                .protocol_weights(
                    &MoeConfig { shared: None, ..config() },
                    &LayerWeights::generate(&MoeConfig { shared: None, ..config() }, 1).unwrap()
                )
                .is_err()
        );
    }

    #[test]
    fn a_capacity_factor_or_a_shared_size_that_does_not_split_is_refused_naming_the_field() {
        let factor = MoeConfig { capacity: CapacityPolicy::Factor(1.25), ..config() };
        assert!(matches!(VirtualExperts::of(&factor),
            Err(ConfigError::Invalid { field: "capacity", reason }) if reason.contains("1.25")));
        let odd = MoeConfig {
            inter: 128,
            shared: Some(SharedExperts { count: 3, inter: 64, gate: SharedGate::None }),
            ..config()
        };
        assert!(matches!(
            VirtualExperts::of(&odd),
            Err(ConfigError::Invalid { field: "shared", .. })
        ));
        let v = VirtualExperts::of(&config()).unwrap().unwrap();
        let routing = RankRouting {
            top_k: 3,
            experts: vec![0; 15],
            weights: vec![0.0; 15],
            rows: vec![0; 15],
            expert_tokens: vec![Vec::new(); 4],
        };
        let p = v.protocol_config(&config()).unwrap();
        assert!(matches!(
            v.protocol_routing(&p, 0, &routing, |_| 1.0),
            Err(RoutingError::Shape { what: "routing.top_k", .. })
        ));
    }
}
