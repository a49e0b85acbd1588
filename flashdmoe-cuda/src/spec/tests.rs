use super::*;
use flashdmoe_core::config::presets;

#[test]
fn combine_streams_only_where_the_kernel_can_and_keeps_a_registers_twin() {
    let h200 = H200_PROCESSORS;
    let qwen3 = presets::preset("qwen3-30b-a3b").unwrap();
    let paper = presets::preset("paper-t4096-e8").unwrap();
    // Qwen3 (k 8, bf16) on the Hopper engine streams: the label says so, the define is
    // set, and its registers' twin follows it; the mma.sync candidates stay as they were.
    let candidates = MoeSpec::candidates(&qwen3, h200, Arch::SM90);
    let chosen = combine_candidates(candidates.clone(), CombineForm::Streamed);
    // Its Hopper spec and that spec's narrower-staging twin both stream.
    assert_eq!(chosen.len(), candidates.len() + 2);
    assert_eq!(chosen[0].combine, CombineForm::Streamed);
    assert!(chosen[0].label().ends_with("-cs"), "{}", chosen[0].label());
    let streams = |s: &MoeSpec| s.defines().iter().any(|(name, _)| name == "FDM_COMBINE_STREAM");
    assert!(streams(&chosen[0]));
    assert_eq!(chosen[1], candidates[0]);
    assert!(!streams(&chosen[1]));
    assert_eq!(chosen[2], candidates[1].with_combine(CombineForm::Streamed));
    assert_eq!(chosen[3], candidates[1]);
    assert_eq!(&chosen[4..], &candidates[2..]);
    // The registers' form asked: nothing changes.
    assert_eq!(combine_candidates(candidates.clone(), CombineForm::Registers), candidates);
    // The paper layer (k 2), exact f32 and the mma.sync engine keep the registers' form.
    let k2 = MoeSpec::candidates(&paper, h200, Arch::SM90);
    assert_eq!(combine_candidates(k2.clone(), CombineForm::Streamed), k2);
    let exact = MoeConfig { dtype: DType::F32Exact, ..qwen3.clone() };
    let exact = MoeSpec::candidates(&exact, h200, Arch::SM90);
    assert_eq!(combine_candidates(exact.clone(), CombineForm::Streamed), exact);
    let ampere = MoeSpec::candidates(&qwen3, h200, Arch::SM80);
    assert_eq!(combine_candidates(ampere.clone(), CombineForm::Streamed), ampere);
}

#[test]
fn a_hopper_spec_of_128_row_router_jobs_has_a_64_row_twin_next() {
    let h200 = H200_PROCESSORS;
    let config = presets::preset("paper-t16384-e128").unwrap();
    let c = MoeSpec::candidates(&config, h200, Arch::SM90);
    assert_eq!(c[0].router_rows, 128);
    assert_eq!(c[1], MoeSpec { router_rows: 64, router_split: c[1].router_split, ..c[0] });
    assert!(matches!(c[1].engine, TileEngine::Wgmma(_)) && !c[1].label().contains("-rr128"));
    // Then the two with half the staged bytes (labelled `-e256`), then mma.sync.
    assert_eq!(c[2], c[0].with_narrower_staging().unwrap());
    assert!(c[2].label().contains("-wgmma-s4-e128"), "{}", c[2].label());
    assert!(c[0].label().contains("-wgmma-s4-e256"), "{}", c[0].label());
    assert_eq!(c[3], c[1].with_narrower_staging().unwrap());
    assert_eq!(c[4].engine, TileEngine::MmaSync);
    // 64-row router jobs already: no router twin; on sm_80 no Hopper spec at all.
    let t4096 =
        MoeSpec::candidates(&presets::preset("paper-t4096-e128").unwrap(), h200, Arch::SM90);
    assert_eq!(t4096[1], t4096[0].with_narrower_staging().unwrap());
    assert_eq!(t4096[2].engine, TileEngine::MmaSync);
    let ampere = MoeSpec::candidates(&config, h200, Arch::SM80);
    assert!(ampere.iter().all(|s| s.engine == TileEngine::MmaSync));
}

#[test]
fn smem_fits_an_h200_block_for_every_variant_tile() {
    for dtype in [DType::Bf16, DType::F32] {
        let spec = MoeSpec {
            dtype,
            activation: Activation::SiluGated,
            bias: true,
            renormalize: true,
            router: RouterSpec::PAPER,
            hidden: 2048,
            inter: 2048,
            experts: 8,
            router_experts: 8,
            top_k: 2,
            slots: 2,
            shared_gate: false,
            tile: TileShape::new(128, 128, bk(dtype)),
            engine: TileEngine::MmaSync,
            router_split: 1,
            router_rows: 64,
            combine: CombineForm::Registers,
            pairs: false,
        };
        // 4 stages x (128 + 2 x 128) rows x 128 B = 192 KiB, within the 227 KiB opt-in.
        assert_eq!(spec.smem_bytes(), 196_608);
        // The Hopper engine's: 4 stages x 48 KiB + 32 KiB of staging + barriers, ring and
        // alignment slack.
        let hopper = spec.on_hopper().unwrap();
        assert!(hopper.smem_bytes() <= SMEM_LIMIT, "{}", hopper.smem_bytes());
        assert_eq!(hopper.block_threads(), 384);
        assert_eq!(hopper.arch_for(Arch::SM90), Arch::SM90A);
    }
}

#[test]
fn hopper_takes_the_gemm0_width_whose_waves_of_bytes_are_fewest() {
    let bn = |name: &str| {
        let config = presets::preset(name).unwrap();
        MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90)[0].tile.bn
    };
    // T128 (runs 178-179): E8 one wave of 128 tasks of 128 columns, where 256 of 64 took
    // two (-3%); E16 and E32 256 columns (E16 one wave instead of four, -6%; E32 two
    // instead of four, -5%); E64 and E128 as before.
    assert_eq!(
        ["e8", "e16", "e32", "e64", "e128"].map(|e| bn(&format!("paper-t128-{e}"))),
        [128, 256, 256, 256, 256]
    );
    // Large batches keep the widest tile: more waves of narrower tasks cost their FLOPs'
    // worth.
    assert_eq!(bn("paper-t16384-e8"), 256);
    assert_eq!(bn("paper-t4096-e128"), 256);
    // The rule itself, in K rows an SM receives: a wave of the widest (16 row tiles, 128
    // tasks: 1 x 320) against two of half width (2 x 192); one row tile more, and three
    // waves of half width (3 x 192) beat two of the widest (2 x 320); a packet of two
    // rows spreads over every SM it can; gated layers count both weight tiles (a wave of
    // 132 at 128 columns, 1 x 320, against two at 64, 2 x 192).
    assert_eq!(hopper_bn(256, 1, 2048, 16, 64, 132), 256);
    assert_eq!(hopper_bn(256, 1, 2048, 17, 64, 132), 128);
    assert_eq!(hopper_bn(256, 1, 2048, 1, 2, 132), 64);
    assert_eq!(hopper_bn(128, 2, 768, 22, 64, 132), 128);
    assert_eq!(hopper_bn(128, 2, 768, 30, 64, 132), 64);
}

#[test]
fn hopper_is_tried_first_on_sm90_only() {
    let config = presets::preset("paper-t16384-e8").unwrap();
    let on_h200 = MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90);
    assert!(matches!(on_h200[0].engine, TileEngine::Wgmma(_)));
    // Then its twin of 64-row router jobs (T16384's are 128 rows), then both with half
    // the staged bytes, then mma.sync.
    assert!(matches!(on_h200[1].engine, TileEngine::Wgmma(_)) && on_h200[1].router_rows == 64);
    assert_eq!(on_h200[2], on_h200[0].with_narrower_staging().unwrap());
    assert_eq!(on_h200[3], on_h200[1].with_narrower_staging().unwrap());
    assert!(on_h200[4..].iter().all(|s| s.engine == TileEngine::MmaSync));
    let on_a100 = MoeSpec::candidates(&config, 107, Arch::SM80);
    assert!(on_a100.iter().all(|s| s.engine == TileEngine::MmaSync));
    let exact = MoeConfig { dtype: DType::F32Exact, ..config };
    assert!(
        MoeSpec::candidates(&exact, H200_PROCESSORS, Arch::SM90)
            .iter()
            .all(|s| s.engine == TileEngine::MmaSync)
    );
}

#[test]
fn hopper_takes_64_row_tiles_only_where_the_average_packet_fits_one() {
    let bm = |name: &str, arch: Arch| {
        MoeSpec::candidates(&presets::preset(name).unwrap(), H200_PROCESSORS, arch)[0].tile.bm
    };
    // Kimi-K2 at T 4096: ~95 rows an expert (384 + 1 virtual experts, 9 slots).
    assert_eq!(bm("kimi-k2", Arch::SM90), 128);
    assert_eq!(bm("kimi-k2", Arch::SM80), 64);
    // 64 rows an expert or fewer: one 64-row tile holds the packet on either engine.
    for name in ["paper-t4096-e128", "paper-t128-e8", "paper-t128-e128"] {
        assert_eq!(bm(name, Arch::SM90), 64, "{name}");
        assert_eq!(bm(name, Arch::SM80), 64, "{name}");
    }
    for name in ["deepseek-v3", "qwen3-30b-a3b", "paper-t4096-e64"] {
        assert_eq!(bm(name, Arch::SM90), 128, "{name}");
    }
}

#[test]
fn a_chosen_tile_replaces_the_chosen_one_or_says_why_not() {
    let v3 = presets::preset("deepseek-v3").unwrap();
    let tile = |s: &str| TileChoice::parse(s).unwrap();
    let spec = MoeSpec::with_tile(&v3, H200_PROCESSORS, Arch::SM90, tile("256x64")).unwrap();
    assert_eq!((spec.tile.bm, spec.tile.bn, spec.tile.bn_hidden), (256, 64, 128));
    assert!(
        matches!(spec.engine, TileEngine::Wgmma(t) if t.slabs() == 2 && t.accumulators() == 128)
    );
    assert!(spec.smem_bytes() <= SMEM_LIMIT, "{}", spec.smem_bytes());
    assert!(spec.label().contains("-256x64-w128-"), "{}", spec.label());
    // The rest as the candidates choose it.
    let first = MoeSpec::candidates(&v3, H200_PROCESSORS, Arch::SM90)[0];
    assert_eq!(MoeSpec { tile: first.tile, engine: first.engine, ..spec }, first);
    let paper = presets::preset("paper-t4096-e8").unwrap();
    let err = |config: &MoeConfig, arch, s: &str| {
        MoeSpec::with_tile(config, H200_PROCESSORS, arch, tile(s)).unwrap_err()
    };
    assert!(err(&v3, Arch::SM80, "256x64").contains("sm_90"));
    assert!(err(&v3, Arch::SM90, "512x64").contains("rows"));
    assert!(err(&v3, Arch::SM90, "128x96").contains("columns"));
    // 192 columns compiled to a static_assert in NVRTC before (session 32): now refused.
    assert!(err(&paper, Arch::SM90, "128x192s4").contains("columns must be 64, 128 or 256"));
    assert!(
        err(&presets::preset("gpt-oss-20b").unwrap(), Arch::SM90, "128x256")
            .contains("do not cover hidden = 2880")
    );
    let exact = MoeConfig { dtype: DType::F32Exact, ..paper.clone() };
    assert!(err(&exact, Arch::SM90, "128x256").contains("no such tile"));
    // 256 x 256 plain: 256 accumulators a consumer thread.
    assert!(err(&paper, Arch::SM90, "256x256").contains("no such tile"));
    assert_eq!(TileChoice::parse("256x64"), Some(TileChoice::new(256, 64)));
    let s4 = TileChoice::parse("128x256s4").unwrap();
    assert_eq!(s4, TileChoice { stages: Some(4), ..TileChoice::new(128, 256) });
    assert_eq!(s4.to_string(), "128x256s4");
    // A chosen depth: the widest staging that fits beside it; past what fits, an error
    // naming the deepest that does.
    let chosen = |s: &str| MoeSpec::with_tile(&paper, H200_PROCESSORS, Arch::SM90, tile(s));
    let (s3, s4) = (chosen("128x256s3").unwrap(), chosen("128x256s4").unwrap());
    assert_eq!(chosen("128x256").unwrap(), s4);
    assert!(matches!(s4.engine, TileEngine::Wgmma(t) if t.stages == 4 && t.stage_bytes == 256));
    assert!(matches!(s3.engine, TileEngine::Wgmma(t) if t.stages == 3 && t.stage_bytes == 512));
    assert!(s3.smem_bytes() <= SMEM_LIMIT && s3.label().contains("-wgmma-s3-"));
    assert!(err(&paper, Arch::SM90, "128x256s6").contains("6 stages do not fit"));
    assert!(err(&paper, Arch::SM90, "128x256s6").contains("the deepest that fits is 4"));
    assert!(err(&paper, Arch::SM90, "128x256s1").contains("2..=8"));
    // CI compile-checks them: two presets' and the GPU check's (its two-rank layer has
    // the one-rank layer's image).
    let v = variants();
    let chosen = v.iter().filter(|v| v.label.contains("-256x")).count();
    assert_eq!(chosen, 2 + chosen_tile_kinds().len() - 1);
    for bad in ["256", "x64", "256x", "256*64", "ax64", "128x256s", "128x256sx", "128s4x256"] {
        assert_eq!(TileChoice::parse(bad), None, "{bad}");
    }
}

#[test]
fn gated_layers_run_gemm1_twice_as_wide_on_hopper_only() {
    let widths = |name: &str, arch: Arch| -> Vec<(u32, u32, TileEngine)> {
        let config = presets::preset(name).unwrap();
        MoeSpec::candidates(&config, H200_PROCESSORS, arch)
            .iter()
            .map(|s| (s.tile.bn, s.tile.bn_hidden, s.engine))
            .collect()
    };
    // Qwen3-30B-A3B (SwiGLU, H 2048): 128-column GEMM0 tiles, 256-column GEMM1 tiles on the
    // Hopper engine; the mma.sync fallbacks keep one width.
    let qwen = widths("qwen3-30b-a3b", Arch::SM90);
    assert!(matches!(qwen[0], (128, 256, TileEngine::Wgmma(_))), "{qwen:?}");
    assert!(matches!(qwen[1], (128, 256, TileEngine::Wgmma(_))), "{qwen:?}");
    assert!(qwen[2..].iter().all(|&(bn, w, e)| w == bn && e == TileEngine::MmaSync), "{qwen:?}");
    assert!(widths("qwen3-30b-a3b", Arch::SM80).iter().all(|&(bn, w, _)| w == bn));
    // ReLU experts (one B tile of 256) and gpt-oss's (H 2880 and its clamped SwiGLU) do not.
    assert!(widths("paper-t16384-e8", Arch::SM90).iter().all(|&(bn, w, _)| w == bn));
    assert!(widths("gpt-oss-20b", Arch::SM90).iter().all(|&(bn, w, _)| w == bn));
    let spec = MoeSpec::candidates(&presets::preset("qwen3-30b-a3b").unwrap(), 131, Arch::SM90)[0];
    let bnh = spec
        .defines()
        .iter()
        .find(|(n, _)| *n == "FDM_BNH")
        .and_then(|(_, v)| v.map(str::to_owned));
    assert_eq!(bnh.as_deref(), Some("256"));
    assert!(spec.label().contains("-128x128-w256-"), "{}", spec.label());
}

#[test]
fn routers_and_gpt_oss_experts_compile_to_their_defines() {
    let define = |spec: &MoeSpec, name: &str| {
        spec.defines().iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.map(str::to_owned))
    };
    let v3 = MoeConfig { shared: None, ..presets::preset("deepseek-v3").unwrap() };
    let spec = MoeSpec::for_config(&v3, H200_PROCESSORS);
    for (name, value) in [
        ("FDM_SCORING", "1"),
        ("FDM_ROUTER_BIAS", "0"),
        ("FDM_SEL_BIAS", "1"),
        ("FDM_GROUPS", "8"),
        ("FDM_GROUP_KEEP", "4"),
        ("FDM_GROUP_SCORE", "1"),
        ("FDM_SCALING_BITS", "0x40200000u"), // 2.5f
        ("FDM_ACT", "2"),
    ] {
        assert_eq!(define(&spec, name).as_deref(), Some(value), "{name}");
    }
    assert!(spec.label().contains("-sigmoid-sb-g8k4t2-x2.5"), "{}", spec.label());
    let oss = MoeSpec::for_config(&presets::preset("gpt-oss-20b").unwrap(), H200_PROCESSORS);
    for (name, value) in [
        ("FDM_ACT", "3"),
        ("FDM_OSS_ALPHA_BITS", "0x3fd9db23u"), // 1.702f
        ("FDM_OSS_LIMIT_BITS", "0x40e00000u"), // 7.0f
        ("FDM_SCORING", "2"),
        ("FDM_ROUTER_BIAS", "1"),
        ("FDM_SCALING_BITS", "0x3f800000u"),
    ] {
        assert_eq!(define(&oss, name).as_deref(), Some(value), "{name}");
    }
    // gpt-oss's experts are gated: two B tiles, so at most 128 columns of bf16. Its 2880 is
    // no multiple of 128: the mma.sync tiles take 64 columns, the Hopper engine 128 with a
    // ragged last column tile (22.5 of them: 1/45 computed in vain).
    assert_eq!(oss.tile.bn, 64, "{:?}", oss.tile);
    let oss_config = presets::preset("gpt-oss-20b").unwrap();
    let hopper = MoeSpec::candidates(&oss_config, H200_PROCESSORS, Arch::SM90)[0];
    assert!(matches!(hopper.engine, TileEngine::Wgmma(_)), "{hopper:?}");
    assert_eq!((hopper.tile.bn, hopper.tile.bn_hidden), (128, 128), "{:?}", hopper.tile);
    assert!(widest_bn(Activation::Relu, DType::Bf16, 2880, 2880, true) == 128);
    assert!(widest_bn(Activation::Relu, DType::Bf16, 2880, 2880, false) == 64);
    // More than 1/16 of an output in vain is not worth a wider tile: 2112 in 256s wastes
    // 192 (in 128s 64), 576 in 128s 64.
    assert_eq!(widest_bn(Activation::Relu, DType::Bf16, 2112, 2112, true), 128);
    assert_eq!(widest_bn(Activation::Relu, DType::Bf16, 576, 576, true), 64);
    // The paper's router sets the defaults config.cuh assumes without them.
    let paper = MoeSpec::for_config(&presets::paper(128, 8), H200_PROCESSORS);
    assert_eq!(paper.router, RouterSpec::PAPER);
    assert_eq!(define(&paper, "FDM_GROUPS").as_deref(), Some("0"));
    assert!(!paper.label().contains("softmax"), "{}", paper.label());
}

#[test]
fn shared_experts_compile_to_virtual_experts_and_slots() {
    let define = |spec: &MoeSpec, name: &str| {
        spec.defines().iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.map(str::to_owned))
    };
    // Qwen1.5-MoE on 4 ranks: 60 routed experts, 5632 / 1408 = 4 parts a rank, top-4.
    let qwen = MoeConfig { world: 4, ..presets::preset("qwen1.5-moe-a2.7b").unwrap() };
    let spec = MoeSpec::for_config(&qwen, H200_PROCESSORS);
    for (name, value) in [
        ("FDM_E", "76"),
        ("FDM_ROUTER_E", "60"),
        ("FDM_TOPK", "4"),
        ("FDM_SLOTS", "8"),
        ("FDM_SHARED", "4"),
        ("FDM_SHARED_GATE", "1"),
    ] {
        assert_eq!(define(&spec, name).as_deref(), Some(value), "{name}");
    }
    assert!(spec.label().contains("-E60-k4-sh4p4g-"), "{}", spec.label());
    // DeepSeek-V3 on one rank: one part, no gate.
    let v3 = MoeSpec::for_config(&presets::preset("deepseek-v3").unwrap(), H200_PROCESSORS);
    assert_eq!((v3.experts, v3.router_experts, v3.slots, v3.shared_gate), (257, 256, 9, false));
    assert!(v3.label().contains("-E256-k8-sh1p1-"), "{}", v3.label());
    // Without shared experts: E' = E, k + m = k, and no label part.
    let routed = MoeConfig { shared: None, ..qwen };
    let plain = MoeSpec::for_config(&routed, H200_PROCESSORS);
    assert_eq!((plain.experts, plain.slots, plain.shared_gate), (60, 4, false));
    assert_eq!(define(&plain, "FDM_SHARED").as_deref(), Some("0"));
    assert!(!plain.label().contains("-sh"), "{}", plain.label());
    // The GPU check's shared kinds: m = 2 (grouped softmax) and m = 4 (sigmoid gate).
    let kinds: Vec<(u32, bool)> = shared_kinds(4)
        .iter()
        .map(|(_, c)| {
            let s = MoeSpec::for_config(c, H200_PROCESSORS);
            (s.slots - s.top_k, s.shared_gate)
        })
        .collect();
    assert_eq!(kinds, [(4, true), (2, false)]);
}

#[test]
fn pairs_need_the_hopper_cooperative_tile_and_select_the_clustered_image() {
    let config = presets::preset("deepseek-v3").unwrap();
    let candidates = MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90);
    let hopper = candidates[0];
    assert!(!hopper.pairs && hopper.weight_box_rows() == hopper.tile.bn);
    let paired = hopper.with_pairs().unwrap();
    assert!(paired.pairs && paired.label().ends_with("-pairs"), "{}", paired.label());
    // Each CTA of a cluster loads half of every weight tile.
    assert_eq!(paired.weight_box_rows(), hopper.tile.bn / 2);
    let defines = format!("{:?}", paired.defines());
    assert!(defines.contains("FDM_PAIRS") && defines.contains("FDM_CLUSTER"), "{defines}");
    assert!(!format!("{:?}", hopper.defines()).contains("FDM_PAIRS"));
    // The mma.sync engine cannot pair: an error naming the engine.
    let mma = *candidates.iter().find(|s| s.engine == TileEngine::MmaSync).unwrap();
    assert!(mma.with_pairs().unwrap_err().contains("mma.sync"));
    // Nor a ping-pong tile.
    let TileEngine::Wgmma(t) = hopper.engine else { unreachable!() };
    let pingpong =
        MoeSpec { engine: TileEngine::Wgmma(WgmmaTile { pingpong: true, ..t }), ..hopper };
    assert!(pingpong.with_pairs().unwrap_err().contains("ping-pong"));
}

/// Auto pairs the layers whose GEMM0 weights go in column groups (measured faster: run
/// 156) and leaves the others (Qwen3, the paper layer: measured slower or level) and the
/// specialisations that cannot pair as they are.

#[test]
fn auto_pairs_only_column_grouped_layers_that_can_pair() {
    let auto = |name: &str| {
        let config = presets::preset(name).unwrap();
        MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90)
            .into_iter()
            .map(PairChoice::auto)
            .collect::<Vec<_>>()
    };
    for name in ["deepseek-v3", "kimi-k2", "mixtral-8x7b", "gpt-oss-120b"] {
        let specs = auto(name);
        assert!(specs[0].tile.gemm0_group != 0 && specs[0].pairs, "{name}: {}", specs[0].label());
        assert!(specs.iter().all(|s| s.pairs || s.with_pairs().is_err()), "{name}");
    }
    for name in ["qwen3-30b-a3b", "paper-t16384-e8", "paper-t16384-e128"] {
        assert!(auto(name).iter().all(|s| !s.pairs && s.tile.gemm0_group == 0), "{name}");
    }
    assert_eq!(PairChoice::default(), PairChoice::Auto);
    for forced in [None, Some(true), Some(false)] {
        assert_eq!(PairChoice::forced(forced).as_forced(), forced);
    }
    assert_eq!(PairChoice::forced(Some(false)), PairChoice::Off);
}
