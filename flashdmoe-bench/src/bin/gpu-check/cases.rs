//! The checks gpu-check runs, by name: correctness over dtypes, activations, capacity modes,
//! skewed routing, virtual ranks and the presets, then the timed grid.

use flashdmoe_core::config::{Placement, Routing, presets};
use flashdmoe_core::{Activation, CapacityPolicy, DType, MoeConfig};
use flashdmoe_cuda::{CombineForm, TileChoice};

fn small(dtype: DType, activation: Activation, bias: bool) -> MoeConfig {
    flashdmoe_cuda::spec::check_layer(dtype, activation, bias)
}

/// A gated layer whose experts' GEMM0 weights (2 x 4096 x 2048 bf16, 32 MiB) pass
/// `spec::GEMM0_GROUP_BYTES`, so its GEMM0 tasks go in column groups; 4 experts over `world`
/// ranks of 512 x `world` tokens, so every packet has 2 or more row tiles (one kernel image
/// for every `world`).
fn column_groups(world: u32) -> MoeConfig {
    MoeConfig {
        world,
        tokens_per_rank: 512 * world,
        hidden: 2048,
        inter: 4096,
        experts: 4,
        ..small(DType::Bf16, Activation::SiluGated, false)
    }
}

pub(super) struct Case {
    pub(super) name: String,
    pub(super) config: MoeConfig,
    pub(super) ranks_per_gpu: Option<u32>,
    /// Rows checked per rank (None = all).
    pub(super) sample: Option<u32>,
    pub(super) skew: bool,
    pub(super) timed: bool,
    /// A forced-timeout check instead of a forward check.
    pub(super) timeout: bool,
    /// The device-resident forward's check (`flashdmoe_bench::resident`) instead.
    pub(super) resident: bool,
    /// A tile instead of the backend's choice (`CudaOptions::tile`).
    pub(super) tile: Option<TileChoice>,
    /// A combine form instead of `--combine`'s (`CudaOptions::combine`).
    pub(super) combine: Option<CombineForm>,
}

pub(super) fn cases(quick: bool) -> Vec<Case> {
    let mut out = Vec::new();
    let case = |name: String, config: MoeConfig| Case {
        name,
        config,
        ranks_per_gpu: None,
        sample: None,
        skew: false,
        timed: false,
        timeout: false,
        resident: false,
        tile: None,
        combine: None,
    };
    // Every dtype x activation, biases on the gated ones.
    for dtype in [DType::Bf16, DType::F16, DType::F32, DType::F32Exact] {
        for act in [Activation::Relu, Activation::Gelu, Activation::SiluGated] {
            let bias = act == Activation::SiluGated;
            out.push(case(
                format!("small {dtype:?} {act:?}{}", if bias { " bias" } else { "" }),
                small(dtype, act, bias),
            ));
        }
    }
    // A one-GPU layer whose GEMM0 tasks fit the processors (the second wave) with H = 8 I: eight
    // times as many GEMM1 tasks as GEMM0 tasks, most of them left to the scheduler, so no third
    // wave (a gated combine could wait for a GEMM1 posted behind it: perf-notes v50 (e)); the
    // waves are compared with core's model.
    out.push(case(
        "waves with GEMM1 tasks left to the scheduler".into(),
        MoeConfig {
            world: 1,
            tokens_per_rank: 64,
            hidden: 2048,
            inter: 256,
            experts: 8,
            top_k: 1,
            dtype: DType::Bf16,
            activation: Activation::Relu,
            capacity: CapacityPolicy::Dropless,
            ..MoeConfig::default()
        },
    ));
    // Every real model's router and experts the kernel computes (core's small model kinds
    // without their shared experts: DeepSeek-V2's grouped softmax with scaling, DeepSeek-V3's
    // grouped sigmoid with a selection bias, gpt-oss's biased top-k softmax and clamped
    // SwiGLU) at the small shape, on one rank and on four virtual ranks.
    for (kind, model) in presets::small_model_kinds(DType::Bf16) {
        if model.routing == Routing::SOFTMAX
            && !matches!(model.activation, Activation::SwigluOss(_))
        {
            continue; // the paper's router: covered above
        }
        let c = MoeConfig {
            activation: model.activation,
            bias: model.bias,
            renormalize: model.renormalize,
            routing: model.routing,
            ..small(DType::Bf16, model.activation, model.bias)
        };
        out.push(case(format!("small {kind} router and experts"), c.clone()));
        let multi = MoeConfig { world: 4, experts: 16, ..c };
        out.push(Case {
            ranks_per_gpu: Some(4),
            ..case(format!("virtual P=4 {kind} router and experts"), multi)
        });
    }
    // Shared experts in the kernel (as m virtual experts a rank: core's `virtual_experts`):
    // DeepSeek-V2's kind (m = 2, grouped softmax router) and Qwen2-MoE's (m = 4, sigmoid
    // gate), on one rank and on four virtual ranks, against the oracle.
    for (kind, c) in flashdmoe_cuda::spec::shared_kinds(1) {
        out.push(case(format!("small {kind} shared experts"), c));
    }
    for (kind, c) in flashdmoe_cuda::spec::shared_kinds(4) {
        out.push(Case {
            ranks_per_gpu: Some(4),
            ..case(format!("virtual P=4 {kind} shared experts"), c)
        });
    }
    // Capacity mode with drops, and the hottest routing in both modes.
    let mut cap = small(DType::Bf16, Activation::Relu, false);
    cap.capacity = CapacityPolicy::Factor(1.0);
    out.push(case("small capacity-1.0".into(), cap.clone()));
    out.push(Case { skew: true, ..case("skewed capacity-1.0 (drops)".into(), cap.clone()) });
    out.push(Case {
        skew: true,
        ..case("skewed dropless".into(), small(DType::Bf16, Activation::Relu, false))
    });
    // GEMM0 tasks in column groups (`spec::gemm0_group`: an expert's gate and up weights past
    // `GEMM0_GROUP_BYTES`, 32 MiB here): 32 column tiles in groups of 12, 2 or more row tiles
    // a packet; on one rank and on two virtual ranks.
    out.push(Case { sample: Some(64), ..case("small column groups".into(), column_groups(1)) });
    out.push(Case {
        ranks_per_gpu: Some(2),
        sample: Some(64),
        ..case("virtual P=2 column groups".into(), column_groups(2))
    });
    // The multi-rank protocol: virtual ranks on one GPU (P up to 8), and one rank per GPU
    // where the machine has the GPUs (skipped otherwise). Skewed routing sends every token to
    // rank 0's experts, so the other ranks' experts are empty.
    let multi: [(u32, u32, &str); 6] = [
        (2, 2, "virtual"),
        (4, 4, "virtual"),
        (8, 8, "virtual"),
        (2, 1, "multi-GPU"),
        (4, 1, "multi-GPU"),
        (8, 1, "multi-GPU"),
    ];
    for (world, ranks_per_gpu, label) in multi {
        for skew in [false, true] {
            let mut c = small(DType::Bf16, Activation::SiluGated, false);
            c.world = world;
            c.experts = 16;
            out.push(Case {
                ranks_per_gpu: Some(ranks_per_gpu),
                skew,
                ..case(format!("{label} P={world}{}", if skew { " skewed" } else { "" }), c)
            });
        }
        let mut c = cap.clone();
        c.world = world;
        c.experts = 16;
        out.push(Case {
            ranks_per_gpu: Some(ranks_per_gpu),
            ..case(format!("{label} P={world} capacity-1.0"), c)
        });
    }
    // A placement table that scatters the experts unevenly over four virtual ranks (3, 5, 2
    // and 6 experts): each GPU's weight slots (layer.rs `weight_slots`) then differ from the
    // global expert order, and some slots are empty.
    let scattered: Vec<u32> =
        (0..16u32).map(|e| [0, 1, 1, 3, 2, 3, 1, 0, 3, 1, 3, 0, 2, 3, 1, 3][e as usize]).collect();
    let mut c = small(DType::Bf16, Activation::SiluGated, true);
    c.world = 4;
    c.experts = 16;
    c.placement = Placement::Table(scattered);
    out.push(Case { ranks_per_gpu: Some(4), ..case("virtual P=4 scattered placement".into(), c) });
    // Forced timeouts: one rank, then every multi-rank arrangement above.
    let timeouts = std::iter::once((1, 1, "single")).chain(multi);
    for (world, ranks_per_gpu, label) in timeouts {
        let mut c = small(DType::Bf16, Activation::Relu, false);
        c.world = world;
        c.experts = 16;
        out.push(Case {
            ranks_per_gpu: Some(ranks_per_gpu),
            timeout: true,
            ..case(format!("forced timeout + recovery {label} P={world}"), c)
        });
    }
    // The device-resident forward (caller stream, fewer tokens, a CUDA graph replayed 10
    // times, host time a call), on one rank and on two virtual ranks.
    for (world, label) in [(1, "single P=1"), (2, "virtual P=2")] {
        let mut c = small(DType::Bf16, Activation::SiluGated, true);
        c.world = world;
        c.experts = 16;
        c.capacity = CapacityPolicy::Factor(1.25);
        out.push(Case {
            ranks_per_gpu: Some(world),
            resident: true,
            ..case(format!("device-resident {label}"), c)
        });
    }
    // The same at 4096 tokens of 8 experts a GPU: enough that A2 routes a token a thread
    // (topk.cuh `lanes_route`), so its routing given, its bad routing refused and its graph
    // replays are checked in that form too (the cases above route a warp a token).
    for (world, label) in [(1, "single P=1"), (2, "virtual P=2")] {
        let mut c = small(DType::Bf16, Activation::SiluGated, true);
        c.world = world;
        c.tokens_per_rank = 4096 / world;
        out.push(Case {
            ranks_per_gpu: Some(world),
            resident: true,
            ..case(format!("device-resident {label} thread router"), c)
        });
    }
    // The device-resident forward of the shared kinds (fewer tokens, a graph replayed, a
    // routing given: the parts follow every token's given slots) on one rank.
    for (kind, c) in flashdmoe_cuda::spec::shared_kinds(1) {
        out.push(Case {
            ranks_per_gpu: Some(1),
            resident: true,
            ..case(format!("device-resident single P=1 {kind} shared experts"), c)
        });
    }
    // 256-row tiles (`--tile`; docs/dev/whole-expert-tiles.md): two 64-row slabs a consumer
    // warpgroup, an empty slab skipped, GEMM1's routing weights for four rows a thread. 1536
    // tokens, dropless: ~384 rows an expert, so packets of one full and one partial row tile.
    for (name, tile, c) in flashdmoe_cuda::spec::chosen_tile_kinds() {
        out.push(Case {
            tile: Some(tile),
            ranks_per_gpu: (c.world > 1).then_some(c.world),
            ..case(format!("tile {name}"), c)
        });
    }
    // Combine tasks streamed through the Hopper engine's stages (`CombineForm::Streamed`,
    // kernels/combine_stream.cuh: 4+ slots a token): a top-8 layer (a stage holds 4 of its
    // tokens at H 512), the shared kinds (6 and 4 slots: a dropped slot's zeros, Qwen's gate),
    // on one rank and two virtual ranks; their labels end in `-cs` (else the build fell back).
    let mut top8 = small(DType::Bf16, Activation::SiluGated, false);
    top8.top_k = 8;
    // The registers' form where the default streams (`--combine registers` everywhere).
    let registers = Case {
        combine: Some(CombineForm::Registers),
        ..case("combine registers small top-8".to_owned(), top8.clone())
    };
    let streamed = [
        ("small top-8", 1, top8.clone()),
        ("virtual P=2 top-8", 2, MoeConfig { world: 2, experts: 16, ..top8 }),
    ]
    .into_iter()
    .map(|(name, world, c)| (name.to_owned(), world, c))
    .chain(
        flashdmoe_cuda::spec::shared_kinds(1)
            .into_iter()
            .map(|(kind, c)| (format!("small {kind}"), 1, c)),
    );
    for (name, world, c) in streamed {
        out.push(Case {
            combine: Some(CombineForm::Streamed),
            ranks_per_gpu: (world > 1).then_some(world),
            ..case(format!("combine stream {name}"), c)
        });
    }
    out.push(registers);
    if quick {
        return out;
    }
    // Model presets at their preset token counts, sampled rows (those the kernel computes:
    // main reports the others' refusal), the shared experts of Qwen's and DeepSeek's included.
    for model in kernel_presets() {
        let name = model.name;
        out.push(Case {
            sample: Some(32),
            timed: true,
            ..case(format!("preset {name}"), model.config())
        });
    }
    // The routed parts of the presets with shared experts whose routers are not the paper's
    // (DeepSeek-V3's and Kimi-K2's grouped sigmoid routers) at full size: `models-t4096`'s
    // `-routed` layers, timed beside the whole layers above.
    for model in presets::MODELS.iter().filter(|m| m.shared.is_some()) {
        let c = MoeConfig { shared: None, ..model.config() };
        if flashdmoe_cuda::spec::computes(&c) && c.routing != Routing::SOFTMAX {
            let name = format!("preset {} routed part", model.name);
            out.push(Case { sample: Some(32), timed: true, ..case(name, c) });
        }
    }
    // Paper grid (bf16 relu, capacity 1.0), timed; and dropless at T=16384.
    for (name, c) in presets::paper_grid() {
        if (c.experts == 16 || c.experts == 64) && c.tokens_per_rank > 128 {
            // Keep the run inside the device budget: E in {8, 32, 128}, and every E at T128
            // (a second each; the tile rule's width differs there by E: spec/tile.rs hopper_bn).
            continue;
        }
        out.push(Case { sample: Some(64), timed: true, ..case(name, c) });
    }
    for e in [8, 32] {
        let mut c = presets::paper(16384, e);
        c.capacity = CapacityPolicy::Dropless;
        out.push(Case {
            sample: Some(64),
            timed: true,
            ..case(format!("paper-t16384-e{e} dropless"), c)
        });
    }
    // Every dtype and activation at a paper shape too (sampled rows, not timed).
    for dtype in [DType::F16, DType::F32, DType::F32Exact] {
        let mut c = presets::paper(4096, 32);
        c.dtype = dtype;
        out.push(Case { sample: Some(64), ..case(format!("paper-t4096-e32 {dtype:?}"), c) });
    }
    for act in [Activation::Gelu, Activation::SiluGated] {
        let mut c = presets::paper(4096, 8);
        c.activation = act;
        out.push(Case { sample: Some(64), ..case(format!("paper-t4096-e8 {act:?}"), c) });
    }
    // TF32 (the reference paper's precision).
    let mut c = presets::paper(16384, 32);
    c.dtype = DType::F32;
    out.push(Case { sample: Some(64), timed: true, ..case("paper-t16384-e32 tf32".into(), c) });
    // Weak scaling at T = 8192 per rank, E = 32: one rank per GPU over 1, 2 and 4 GPUs (as
    // many as the machine has), and two virtual ranks on one GPU.
    for (world, ranks_per_gpu, label) in [
        (1, 1, "weak P=1"),
        (2, 1, "weak P=2"),
        (4, 1, "weak P=4"),
        (8, 1, "weak P=8"),
        (2, 2, "weak P=2 virtual"),
    ] {
        let mut c = presets::paper(8192, 32);
        c.world = world;
        out.push(Case {
            ranks_per_gpu: Some(ranks_per_gpu),
            sample: Some(64),
            timed: true,
            ..case(format!("{label} t8192-e32"), c)
        });
    }
    // The paper grid on two and on eight GPUs (the PyTorch expert-parallel baseline runs the
    // same; skipped on smaller machines), then the model presets on eight (sampled rows) and
    // TF32 at the reference paper's token counts (docs/performance.md, target 8).
    for (world, sample) in [(2, 64), (8, 32)] {
        for (t, e) in [(128, 8), (4096, 8), (4096, 32), (16384, 8), (16384, 32)] {
            let mut c = presets::paper(t, e);
            c.world = world;
            out.push(Case {
                ranks_per_gpu: Some(1),
                sample: Some(sample),
                timed: true,
                ..case(format!("multi-GPU P={world} paper-t{t}-e{e}-cf1"), c)
            });
        }
    }
    for model in kernel_presets() {
        let mut c = model.config();
        c.world = 8;
        out.push(Case {
            ranks_per_gpu: Some(1),
            sample: Some(16),
            timed: true,
            ..case(format!("multi-GPU P=8 preset {}", model.name), c)
        });
    }
    for world in [2, 8] {
        for t in [4096, 8192, 16384] {
            let mut c = presets::paper(t, 32);
            c.world = world;
            c.dtype = DType::F32;
            out.push(Case {
                ranks_per_gpu: Some(1),
                sample: Some(64),
                timed: true,
                ..case(format!("multi-GPU P={world} paper-t{t}-e32-cf1 tf32"), c)
            });
        }
    }
    out
}

/// The model presets the kernel computes (all of them today: shared experts included); any
/// other is refused by the backend before any device work.
fn kernel_presets() -> impl Iterator<Item = &'static presets::ModelShape> {
    presets::MODELS.iter().filter(|m| flashdmoe_cuda::spec::computes(&m.config()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the GPU machine will run is checked here first: every case is a valid layer the
    /// kernel computes (a bad placement table or router would otherwise surface only there),
    /// and names are unique (results are keyed by them).
    #[test]
    fn every_case_is_a_valid_layer_the_kernel_computes() {
        for quick in [true, false] {
            let cases = cases(quick);
            let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
            for case in &cases {
                case.config.validate().unwrap_or_else(|e| panic!("{}: {e}", case.name));
                assert!(flashdmoe_cuda::spec::computes(&case.config), "{}", case.name);
            }
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(names.len(), n, "case names repeat");
        }
        let quick: Vec<String> = cases(true).into_iter().map(|c| c.name).collect();
        for needle in [
            "deepseek-v3 router and experts",
            "gpt-oss router and experts",
            "scattered",
            "small deepseek-v2 m2 shared experts",
            "small qwen2-moe m4 gated shared experts",
            "virtual P=4 deepseek-v2 m2 shared experts",
            "virtual P=4 qwen2-moe m4 gated shared experts",
            "tile 256x64 swiglu virtual P=2",
            "combine stream small top-8",
            "combine stream virtual P=2 top-8",
            "combine registers small top-8",
        ] {
            assert!(quick.iter().any(|n| n.contains(needle)), "{needle} not in the quick check");
        }
        // The whole presets with shared experts are checked (and timed) in the full run.
        let full: Vec<String> = cases(false).into_iter().map(|c| c.name).collect();
        for preset in ["deepseek-v3", "qwen1.5-moe-a2.7b", "qwen2-57b-a14b", "deepseek-v2-lite"] {
            assert!(full.contains(&format!("preset {preset}")), "preset {preset}");
        }
    }

    #[test]
    fn the_tile_cases_ask_for_tiles_the_engine_has() {
        let tiled: Vec<Case> = cases(true).into_iter().filter(|c| c.tile.is_some()).collect();
        assert_eq!(tiled.len(), 4);
        for case in &tiled {
            let tile = case.tile.unwrap();
            assert!(case.name.contains(&tile.to_string()), "{}", case.name);
            let spec = flashdmoe_cuda::spec::MoeSpec::with_tile(
                &case.config,
                131,
                flashdmoe_cuda::Arch::SM90,
                tile,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(spec.tile.bm, 256, "{}", case.name);
        }
    }

    #[test]
    fn the_column_groups_cases_have_groups() {
        for world in [1, 2] {
            let config = column_groups(world);
            let spec =
                flashdmoe_cuda::spec::MoeSpec::candidates(&config, 131, flashdmoe_cuda::Arch::SM90)
                    [0];
            assert!(spec.tile.gemm0_group > 0, "{}", spec.label());
            assert!(spec.tile.gemm0_group < config.inter / spec.tile.bn, "{}", spec.label());
        }
        assert!(cases(true).iter().any(|c| c.name == "small column groups"));
    }

    /// The `--only` patterns of the run scripts `docs/dev/gpu-queue.md` names (the queued
    /// calls, and the examples it points to): `--only "..."` or a variable it expands, each
    /// comma-separated pattern naming a check exactly (`=NAME`) or by a part of its name. A
    /// pattern that keeps nothing would spend a GPU call's time on nothing, and a renamed case
    /// would otherwise be found only there.
    #[test]
    fn the_queued_run_scripts_keep_checks_that_exist() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let queue = std::fs::read_to_string(format!("{root}/docs/dev/gpu-queue.md")).unwrap();
        let mut scripts: Vec<&str> = queue
            .match_indices("docs/dev/gpu-runs/")
            .filter_map(|(at, _)| {
                let end = queue[at..].find("-script.sh")? + at + "-script.sh".len();
                let path = &queue[at..end];
                (!path.contains(char::is_whitespace)).then_some(path)
            })
            .collect();
        scripts.sort_unstable();
        scripts.dedup();
        assert!(scripts.len() >= 3, "{scripts:?}");
        let names: Vec<String> =
            cases(false).into_iter().chain(cases(true)).map(|c| c.name).collect();
        let mut checked = 0;
        for script in scripts {
            let text = std::fs::read_to_string(format!("{root}/{script}")).unwrap();
            // The first quoted string after `key`, e.g. `--only "` or `cases="`.
            let quoted = |key: &str| -> Vec<String> {
                text.match_indices(key)
                    .filter_map(|(at, _)| {
                        let from = at + key.len();
                        text[from..].find('"').map(|end| text[from..from + end].to_owned())
                    })
                    .collect()
            };
            for only in quoted("--only \"") {
                let list = match only.strip_prefix('$') {
                    Some(var) => {
                        quoted(&format!("{var}=\"")).into_iter().next().unwrap_or_else(|| {
                            panic!("{script}: --only \"${var}\" without {var}=\"...\"")
                        })
                    }
                    None => only,
                };
                for pattern in list.split(',') {
                    let keeps = match pattern.strip_prefix('=') {
                        Some(exact) => names.iter().any(|n| n == exact),
                        None => names.iter().any(|n| n.contains(pattern)),
                    };
                    assert!(keeps, "{script}: --only pattern {pattern:?} keeps no check");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 10, "only {checked} patterns found");
    }
}
