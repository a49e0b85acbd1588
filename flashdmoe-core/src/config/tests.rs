use super::*;

fn field_of(c: &MoeConfig) -> &'static str {
    match c.validate() {
        Err(ConfigError::Invalid { field, .. }) => field,
        Ok(()) => "ok",
        Err(other) => panic!("validate gave {other:?}"),
    }
}

#[test]
fn activations_by_hand() {
    assert_eq!(Activation::Relu.eval(-2.0, 9.0), 0.0);
    assert_eq!(Activation::Relu.eval(1.5, 9.0), 1.5);
    // Phi(1) = 0.841344746068543 -> gelu(1) = 0.841344746068543, gelu(-1) = -0.158655...
    assert!((Activation::Gelu.eval(1.0, 0.0) - 0.841_344_746_068_543).abs() < 1e-15);
    assert!((Activation::Gelu.eval(-1.0, 0.0) + 0.158_655_253_931_457).abs() < 1e-15);
    // silu(1) = 1 / (1 + e^-1) = 0.731058578630005; times up = 2.
    assert!((Activation::SiluGated.eval(2.0, 1.0) - 1.462_117_157_260_01).abs() < 1e-14);
    assert_eq!(Activation::SiluGated.eval(2.0, 0.0), 0.0);
}

#[test]
fn default_is_valid() {
    assert_eq!(MoeConfig::default().validate(), Ok(()));
}

#[test]
fn builder_sets_fields_and_validates() {
    let c = MoeConfig::builder()
        .world(4)
        .tokens_per_rank(32)
        .experts(16)
        .top_k(4)
        .activation(Activation::SiluGated)
        .dtype(DType::F16)
        .capacity(CapacityPolicy::Dropless)
        .build()
        .unwrap();
    assert_eq!((c.world, c.tokens_per_rank, c.experts, c.top_k), (4, 32, 16, 4));
    assert_eq!((c.activation, c.dtype), (Activation::SiluGated, DType::F16));
    let from_preset = preset("olmoe-1b-7b").unwrap().into_builder().world(8).build().unwrap();
    assert_eq!((from_preset.world, from_preset.experts), (8, 64));
    assert!(matches!(
        MoeConfig::builder().top_k(0).build(),
        Err(ConfigError::Invalid { field: "top_k", .. })
    ));
}

#[test]
fn each_invalid_field_is_named() {
    let base = MoeConfig::default();
    let cases: Vec<(MoeConfig, &str)> = vec![
        (MoeConfig { world: 0, ..base.clone() }, "world"),
        (MoeConfig { world: 70_000, ..base.clone() }, "world"),
        (MoeConfig { hidden: 0, ..base.clone() }, "hidden"),
        (MoeConfig { inter: 0, ..base.clone() }, "inter"),
        (MoeConfig { experts: 0, ..base.clone() }, "experts"),
        (MoeConfig { top_k: 0, ..base.clone() }, "top_k"),
        (MoeConfig { top_k: 9, ..base.clone() }, "top_k"),
        (MoeConfig { hidden: 96, ..base.clone() }, "hidden"),
        (MoeConfig { inter: 200, ..base.clone() }, "inter"),
        (MoeConfig { capacity: CapacityPolicy::Factor(0.0), ..base.clone() }, "capacity"),
        (MoeConfig { capacity: CapacityPolicy::Factor(-1.0), ..base.clone() }, "capacity"),
        (MoeConfig { capacity: CapacityPolicy::Factor(f64::NAN), ..base.clone() }, "capacity"),
        (MoeConfig { capacity: CapacityPolicy::Factor(f64::INFINITY), ..base.clone() }, "capacity"),
        (MoeConfig { placement: Placement::Table(vec![0; 7]), ..base.clone() }, "placement"),
        (MoeConfig { placement: Placement::Table(vec![0; 9]), ..base.clone() }, "placement"),
        (
            MoeConfig { placement: Placement::Table(vec![0, 1, 2, 0, 1, 0, 1, 0]), ..base.clone() },
            "placement",
        ),
        (MoeConfig { memory_limit: 1 << 20, ..base.clone() }, "memory_limit"),
    ];
    for (c, field) in cases {
        assert_eq!(field_of(&c), field, "{c:?}");
    }
    // Zero tokens is a valid (idle) rank.
    assert_eq!(field_of(&MoeConfig { tokens_per_rank: 0, ..base }), "ok");
}

#[test]
fn huge_shapes_exceed_the_memory_limit_without_overflowing() {
    let c = MoeConfig {
        world: 1,
        tokens_per_rank: u32::MAX,
        hidden: 1 << 30,
        inter: 1 << 30,
        experts: 1 << 20,
        ..MoeConfig::default()
    };
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { field, .. })
        if field == "memory_limit" || field == "geometry"));
}

#[test]
fn contiguous_placement() {
    // E = 10, P = 4: ceil(10/4) = 3 per rank -> [0,1,2] [3,4,5] [6,7,8] [9].
    let c = MoeConfig { world: 4, experts: 10, ..MoeConfig::default() };
    let m = c.expert_map().unwrap();
    assert_eq!(m.experts_of(0), &[0, 1, 2]);
    assert_eq!(m.experts_of(3), &[9]);
    assert_eq!(m.owner(7), (2, 1));
    assert_eq!(m.local_experts(), 3);
    assert_eq!(m.global(3, 0), Some(9));
    assert_eq!(m.global(3, 1), None);
    // E = 9, P = 4: c = 3 -> rank 3 owns nothing.
    let c = MoeConfig { world: 4, experts: 9, ..MoeConfig::default() };
    assert!(c.expert_map().unwrap().experts_of(3).is_empty());
}

#[test]
fn table_placement_uses_ascending_local_order() {
    let c = MoeConfig {
        world: 2,
        experts: 5,
        placement: Placement::Table(vec![1, 0, 1, 1, 0]),
        ..MoeConfig::default()
    };
    let m = c.expert_map().unwrap();
    assert_eq!(m.experts_of(0), &[1, 4]);
    assert_eq!(m.experts_of(1), &[0, 2, 3]);
    assert_eq!(m.owner(3), (1, 2));
    assert_eq!(m.owner(4), (0, 1));
    assert_eq!(m.local_experts(), 3);
}

#[test]
fn capacity_rows() {
    let c = |t, k, e, f| MoeConfig {
        tokens_per_rank: t,
        top_k: k,
        experts: e,
        capacity: CapacityPolicy::Factor(f),
        ..MoeConfig::default()
    };
    assert_eq!(c(64, 2, 8, 1.0).capacity_rows(), 16);
    assert_eq!(c(10, 2, 8, 1.0).capacity_rows(), 3); // ceil(2.5)
    assert_eq!(c(10, 1, 8, 1.25).capacity_rows(), 2); // ceil(1.5625)
    assert_eq!(c(10, 2, 8, 100.0).capacity_rows(), 10); // clamped to T
    assert_eq!(c(0, 2, 8, 1.0).capacity_rows(), 0);
    let d = MoeConfig { capacity: CapacityPolicy::Dropless, ..c(37, 2, 8, 1.0) };
    assert_eq!(d.capacity_rows(), 37);
    // A forward of fewer tokens: the capacity of a config of that many, never above the
    // layer's.
    let big = c(64, 2, 8, 1.25);
    for t in 0..=64 {
        assert_eq!(big.capacity_rows_for(t), c(t, 2, 8, 1.25).capacity_rows());
        assert!(big.capacity_rows_for(t) <= big.capacity_rows());
    }
    assert_eq!(d.capacity_rows_for(5), 5);
}

#[test]
fn geometry_follows_the_config() {
    let c = MoeConfig { world: 3, experts: 8, ..MoeConfig::default() };
    let tile = TileShape::new(16, 32, 32);
    let g = c.geometry(tile).unwrap();
    assert_eq!(
        g,
        Geometry {
            world: 3,
            local_experts: 3,
            tokens: 64,
            capacity: 16,
            hidden: 256,
            inter: 512,
            elem_bytes: 2,
            tile
        }
    );
    // Column tiles may be ragged (256 = 5 x 48 + 16); K steps must divide.
    assert_eq!(c.geometry(TileShape::new(16, 48, 32)).unwrap().col_tiles_hidden(), 6);
    let bad = c.geometry(TileShape::new(16, 32, 48));
    assert!(matches!(bad, Err(ConfigError::Invalid { field: "tile.bk", .. })));
    let invalid_config = MoeConfig { top_k: 0, ..c };
    assert!(matches!(
        invalid_config.geometry(tile),
        Err(ConfigError::Invalid { field: "top_k", .. })
    ));
}

#[test]
fn memory_estimate_counts_local_experts_only() {
    let c = MoeConfig { world: 4, experts: 8, bias: true, ..MoeConfig::default() };
    let m = c.memory_estimate().unwrap();
    // 2 local experts * (2 * 256 * 512 + 512 + 256) * 2 B + router 8 * 256 * 2 B.
    assert_eq!(m.weights, 2 * (2 * 256 * 512 + 768) * 2 + 8 * 256 * 2);
    assert_eq!(m.activations, 2 * 64 * 256 * 2 + 64 * 8 * 4);
    assert!(m.heap > 0 && m.total() == m.heap + m.weights + m.activations);
    // The router alone is replicated; the layer's weights are 4 ranks' experts and it.
    assert_eq!(m.replicated_weights, 8 * 256 * 2);
    assert_eq!(m.layer_weights, 8 * (2 * 256 * 512 + 768) * 2 + 8 * 256 * 2);
    assert_eq!(m.layer_weights - m.replicated_weights, 4 * (m.weights - m.replicated_weights));
    // Host: all 8 experts and the router in f32, 4 ranks' inputs and outputs, routing.
    let experts = 8 * (2 * 256 * 512 + 768) * 4 + 8 * 256 * 4;
    let rows = 2 * 4 * 64 * 256 * 4;
    let routing = 4 * 64 * 8 * 4 + 4 * 8 * 24 + 4 * 64 * 2 * 12;
    assert_eq!(m.host, experts + rows + routing);
    // One rank's process: its 2 experts and the router, its own rows and routing.
    let experts = 2 * (2 * 256 * 512 + 768) * 4 + 8 * 256 * 4;
    let (rows, routing) = (rows / 4, 64 * 8 * 4 + 8 * 24 + 64 * 2 * 12);
    assert_eq!(m.host_per_rank, experts + rows + routing);
}

#[test]
fn shared_experts_and_router_biases_are_replicated_on_every_rank() {
    let c = MoeConfig {
        world: 4,
        experts: 10,
        shared: Some(SharedExperts { count: 2, inter: 128, gate: SharedGate::Sigmoid }),
        routing: Routing { router_bias: true, selection_bias: true, ..Routing::SOFTMAX },
        ..MoeConfig::default()
    };
    let m = c.memory_estimate().unwrap();
    // Router [10][256] and two [10] biases; shared SwiGLU of 256 plus its gate row.
    let replicated = (10 * 256 + 2 * 10 + 3 * 256 * 256 + 256) * 2;
    assert_eq!(m.replicated_weights, replicated);
    // Ranks hold 3, 3, 3 and 1 experts: the estimate is the most loaded rank's.
    let expert = 2 * 256 * 512 * 2;
    assert_eq!(m.weights, 3 * expert + replicated);
    assert_eq!(m.layer_weights, 10 * expert + replicated);
    assert!(m.host_per_rank < m.host / 2, "{m:?}");
}

#[test]
fn host_memory_counts_every_expert_and_never_overflows() {
    // The layer: a million experts of H = I = 64 on 2 ranks of 8 tokens passes
    // the per-rank device limit, but its f32 weights alone are 32.8 GB on the host.
    let c = MoeConfig {
        tokens_per_rank: 8,
        hidden: 64,
        inter: 64,
        experts: 1_000_000,
        ..MoeConfig::default()
    };
    assert_eq!(c.validate(), Ok(()));
    let m = c.memory_estimate().unwrap();
    assert!(m.host > 32_800_000_000 && m.host < 33_200_000_000, "{}", m.host);
    // 65535 ranks of a billion-row-ish layer: the host sum would overflow u64; an error,
    // never a wrapped number.
    let huge = MoeConfig {
        world: 65_535,
        tokens_per_rank: u32::MAX,
        hidden: 1 << 16,
        inter: 64,
        experts: u32::MAX,
        top_k: 1,
        ..MoeConfig::default()
    };
    assert!(matches!(huge.memory_estimate(), Err(ConfigError::Invalid { .. })));
    assert!(matches!(huge.validate(), Err(ConfigError::Invalid { .. })));
}

#[test]
fn local_experts_without_the_map_match_the_map() {
    for (world, experts) in [(1, 8), (4, 10), (4, 9), (3, 2), (7, 64)] {
        let c = MoeConfig { world, experts, top_k: 1, ..MoeConfig::default() };
        assert_eq!(c.local_experts(), Ok(c.expert_map().unwrap().local_experts()));
    }
    let t = MoeConfig {
        experts: 5,
        placement: Placement::Table(vec![1, 0, 1, 1, 0]),
        ..MoeConfig::default()
    };
    assert_eq!(t.local_experts(), Ok(3));
}
