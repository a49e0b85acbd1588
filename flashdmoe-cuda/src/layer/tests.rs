use super::*;
use crate::params::{Diag, ROLES, WAITS};
#[test]
fn scratch_sizes_that_overflow_are_errors_naming_the_array() {
    let config = MoeConfig {
        tokens_per_rank: u32::MAX,
        experts: u32::MAX,
        top_k: 3,
        ..MoeConfig::default()
    };
    let err = scratch_layout(&config, config.experts, 300, 1000, 131, 1).unwrap_err();
    assert!(err.to_string().contains("logits"), "{err}");
}

#[test]
fn scratch_arrays_are_aligned_disjoint_and_in_order() {
    let config = MoeConfig { tokens_per_rank: 300, experts: 10, top_k: 3, ..MoeConfig::default() };
    let (l, total) = scratch_layout(&config, config.experts, 300, 1000, 131, 1).unwrap();
    let starts = [
        l.logits,
        l.topk_expert,
        l.topk_weight,
        l.slot_row,
        l.chunk_counts,
        l.expert_tokens,
        l.packet_rows,
        l.packet_copied,
        l.tasks,
        l.task_ready,
        l.trace,
        l.mailbox,
        l.assigned,
        l.completed,
        l.chunk_ready,
        l.placed,
        l.control,
    ];
    assert_eq!(l.logits, 0);
    assert!(starts.iter().all(|s| s % 256 == 0));
    // logits [300][10] f32 = 12000 B -> next array at 12032; tasks hold 64 B each.
    assert_eq!(l.topk_expert, 12_032);
    assert_eq!(l.task_ready - l.tasks, 64_000);
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    assert!(total >= l.control + 4 * crate::params::CONTROL_WORDS && total % 256 == 0);
}

#[test]
fn the_logits_hold_one_array_per_router_k_part() {
    // The kernel's A1 writes part `s` at `s * tokens_per_rank * E` floats (route.cuh), so
    // the scratch must hold `router_split` whole arrays before the next one starts.
    let config = MoeConfig { tokens_per_rank: 300, experts: 10, top_k: 3, ..MoeConfig::default() };
    for split in [1u32, 2, 8] {
        let (l, _) = scratch_layout(&config, config.experts, 300, 1000, 131, split).unwrap();
        assert!(l.topk_expert - l.logits >= u64::from(split) * 300 * 10 * 4, "split {split}");
    }
    let (one, total_one) = scratch_layout(&config, config.experts, 300, 1000, 131, 1).unwrap();
    let (eight, total_eight) = scratch_layout(&config, config.experts, 300, 1000, 131, 8).unwrap();
    assert_eq!(eight.topk_expert - one.topk_expert, total_eight - total_one);
}

/// A two-rank paper layer's plan at 64 blocks a rank, no GPU needed.
fn test_plan() -> Plan {
    let config = MoeConfig { world: 2, experts: 8, ..MoeConfig::default() };
    let spec = MoeSpec::for_config(&config, 64);
    let layout = HeapLayout::new(config.geometry(spec.tile).unwrap()).unwrap();
    let (scratch, scratch_bytes) =
        scratch_layout(&config, config.experts, 64, 1024, 63, 1).unwrap();
    Plan {
        map: config.expert_map().unwrap(),
        protocol: config.clone(),
        virtual_experts: None,
        config,
        spec,
        layout,
        scratch,
        scratch_bytes,
        ranks_per_gpu: 1,
        blocks_per_rank: 64,
        remote_copiers: 15,
        skipped: Vec::new(),
        fallback: Vec::new(),
    }
}

#[test]
fn the_description_names_the_kernel_and_any_fallback() {
    let plan = test_plan();
    let label = plan.spec.label();
    assert_eq!(plan.describe(), format!("kernel: {label} (63 processor blocks a rank)"));
    let plan = Plan { skipped: vec!["hopper-image".into()], ..test_plan() };
    let line = plan.describe();
    assert!(line.starts_with(&format!("kernel: {label} ")), "{line}");
    assert!(line.contains("fell back from hopper-image (register spills"), "{line}");
    let plan = Plan { fallback: vec!["FDM_FRESH_TID".into()], ..test_plan() };
    let line = plan.describe();
    assert!(line.contains("compiled through its spill fallback (FDM_FRESH_TID"), "{line}");
}

#[test]
fn timeout_reports_name_the_role_and_what_it_waited_for() {
    let plan = test_plan();
    let diag = |role, what, index, seen| Diag {
        status: 1,
        abort: 1,
        rank: 1,
        role,
        what,
        index,
        expected_epoch: 7,
        pad: 0,
        seen,
    };
    // A given routing's bad expert: the router role, the token, the expert seen.
    assert_eq!(
        timeout_report(&diag(4, 7, 3, 9), &plan).to_string(),
        "rank 1 router timed out waiting for a valid given routing (an expert out of range \
         or chosen twice) in token #3 (expected epoch 7, last seen 0x9)"
    );
    // A dispatch signal names its source rank and local expert (4 local experts a rank).
    assert_eq!(
        timeout_report(&diag(1, 0, 6, 0), &plan).awaited,
        "dispatch signal from rank 1 for local expert 2"
    );
    // Every role and wait the kernel can name has a name here.
    assert_eq!(ROLES[4].0, "FDM_ROLE_ROUTER");
    assert_eq!(WAITS[7].0, "FDM_WAIT_INVALID_ROUTING");
    assert_eq!(WAITS[10].0, "FDM_WAIT_FIRST_WAVE");
    assert_eq!(timeout_report(&diag(9, 9, 0, 0), &plan).role, "unknown role");
}

/// A random layer of every kind the kernel computes (seeded): shapes from one token to 64k, H
/// and I among the multiples of 64 real models use (gpt-oss's ragged 2880 among them), 1 to 512
/// experts, every activation and dtype, the routers' features, shared experts, 1 to 8 ranks.
fn random_layer(rng: &mut flashdmoe_core::rng::SplitMix64) -> MoeConfig {
    use flashdmoe_core::config::{
        CapacityPolicy, GroupScore, Groups, Routing, Scoring, SharedExperts, SharedGate, SwigluOss,
    };
    use flashdmoe_core::{Activation, DType};
    let mut pick = |n: u64| (rng.next() % n) as usize;
    let sizes = [64u32, 128, 192, 704, 1024, 1408, 2048, 2880, 4096, 7168];
    let experts = [1u32, 2, 4, 8, 16, 60, 64, 128, 256, 384, 512][pick(11)];
    let top_k = [1u32, 2, 4, 6, 8][pick(5)].min(experts);
    let scoring = [Scoring::Softmax, Scoring::Sigmoid, Scoring::TopKSoftmax][pick(3)];
    let groups = [0u32, 1, 4, 8][pick(4)];
    let groups = (groups > 0 && experts.is_multiple_of(groups)).then(|| {
        let per = experts / groups;
        Groups {
            count: groups,
            keep: top_k.div_ceil(per).max(1).min(groups),
            score: if per >= 2 && pick(2) == 0 { GroupScore::Top2Sum } else { GroupScore::Max },
        }
    });
    let shared = (pick(3) == 0).then(|| SharedExperts {
        count: 1 + pick(2) as u32,
        inter: sizes[pick(sizes.len() as u64)],
        gate: if pick(2) == 0 { SharedGate::Sigmoid } else { SharedGate::None },
    });
    MoeConfig {
        world: [1u32, 2, 4, 8][pick(4)],
        tokens_per_rank: [1u32, 7, 64, 128, 500, 1000, 4096, 16384, 65536][pick(9)],
        hidden: sizes[pick(sizes.len() as u64)],
        inter: sizes[pick(sizes.len() as u64)],
        experts,
        top_k,
        activation: [
            Activation::Relu,
            Activation::Gelu,
            Activation::SiluGated,
            Activation::SwigluOss(SwigluOss::GPT_OSS),
        ][pick(4)],
        bias: pick(2) == 0,
        dtype: DType::ALL[pick(DType::ALL.len() as u64)],
        capacity: if pick(2) == 0 { CapacityPolicy::Dropless } else { CapacityPolicy::Factor(1.0) },
        renormalize: pick(2) == 0 || scoring == Scoring::TopKSoftmax,
        routing: Routing {
            scoring,
            router_bias: pick(2) == 0,
            selection_bias: pick(2) == 0,
            groups,
            scaling: if pick(2) == 0 { 2.5 } else { 1.0 },
        },
        shared,
        ..MoeConfig::default()
    }
}

/// What a build decides on the host before it touches a device holds for any layer the
/// kernel computes, on an H200's 132 SMs and an A100's 108, whatever the ranks a GPU: every
/// candidate specialisation (each engine, combine form and paired twin) fits its block's
/// shared memory and lays out the protocol's heap, task bound and scratch, or the layer is
/// refused by a typed error, never a panic. (Whether each candidate compiles without spills
/// is NVRTC's to say: `tests/nvrtc_compile.rs`.)
#[test]
fn the_host_side_of_a_build_holds_for_random_layers() {
    let mut rng = flashdmoe_core::rng::SplitMix64::new(41);
    let (mut built, mut refused) = (0, 0);
    for _ in 0..3000 {
        let config = random_layer(&mut rng);
        if config.validate().is_err() || !crate::spec::computes(&config) {
            refused += 1;
            continue;
        }
        let protocol = match VirtualExperts::of(&config).unwrap() {
            Some(v) => v.protocol_config(&config).unwrap(),
            None => config.clone(),
        };
        for (arch, sms) in [(crate::arch::Arch::SM90, 132u32), (crate::arch::Arch::SM80, 108)] {
            for ranks_per_gpu in
                [1u32, 2, 4, 8].into_iter().filter(|r| config.world.is_multiple_of(*r))
            {
                let processors = (sms / ranks_per_gpu).saturating_sub(1).max(1);
                let candidates = MoeSpec::candidates(&config, processors, arch);
                assert!(!candidates.is_empty(), "{config:?}");
                let candidates = crate::spec::combine_candidates(candidates, CombineForm::Streamed);
                let paired: Vec<MoeSpec> =
                    candidates.iter().copied().map(crate::spec::PairChoice::auto).collect();
                for spec in candidates.iter().chain(&paired) {
                    let label = spec.label();
                    assert!(spec.smem_bytes() <= crate::engine::SMEM_LIMIT, "{label}");
                    let _ = spec.variant();
                    let layout = HeapLayout::new(protocol.geometry(spec.tile).unwrap())
                        .unwrap_or_else(|e| panic!("{label}: {e}"));
                    let Ok(tasks) = build::max_tasks(&protocol, &layout) else { continue };
                    let capacity = layout.geometry().capacity;
                    let _ = scratch_layout(
                        &protocol,
                        spec.router_experts,
                        capacity,
                        tasks,
                        processors,
                        spec.router_split,
                    );
                }
            }
        }
        built += 1;
    }
    println!("{built} built, {refused} refused");
    assert!(built >= 500 && refused >= 100, "{built} built, {refused} refused");
}
