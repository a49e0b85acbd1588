//! The CI kernel compile check: every variant of [`kernel_variants`] compiled for every
//! architecture in [`Arch::SUPPORTED`] through the real JIT (NVRTC needs no GPU), failing on
//! any compile error, register spill or serialised wgmma (ptxas C7512). Passes with a
//! `skipped:` line when NVRTC is absent.
//!
//! `FLASHDMOE_VARIANTS=SUBSTRING` restricts the first test to the variants whose label
//! contains it (a development shortcut; CI compiles them all).
//!
//! Run with the pinned NVRTC on the loader path, e.g.
//! `LD_LIBRARY_PATH=$DIR/nvidia/cu13/lib FLASHDMOE_CUDA_HOME=$DIR/nvidia/cu13 cargo test -p
//! flashdmoe-cuda --test nvrtc_compile -- --nocapture`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use flashdmoe_core::config::presets;
use flashdmoe_cuda::engine::STATIC_SMEM_RESERVE;
use flashdmoe_cuda::jit::CacheMode;
use flashdmoe_cuda::spec::{self, CombineForm, MoeSpec, PairChoice};
use flashdmoe_cuda::{
    Arch, CudaError, Jit, JitConfig, KernelVariant, kernel_variants, nvrtc_version,
};

/// A JIT without disk cache (CI must really compile), or `None` when NVRTC is not installed.
fn jit() -> Option<Jit> {
    match nvrtc_version() {
        Err(CudaError::NvrtcMissing) => {
            println!("skipped: NVRTC not found (see scripts/install-nvrtc.sh)");
            None
        }
        Err(e) => panic!("{e}"),
        Ok(version) => {
            println!("NVRTC {version}");
            let config = JitConfig { cache: CacheMode::MemoryOnly, ..JitConfig::from_env() };
            Some(Jit::new(config).unwrap_or_else(|e| panic!("{e}")))
        }
    }
}

#[test]
fn every_kernel_variant_compiles_without_spills() {
    let Some(jit) = jit() else { return };
    let only = std::env::var("FLASHDMOE_VARIANTS").ok();
    let jobs: Vec<(Arch, KernelVariant)> = kernel_variants()
        .into_iter()
        .filter(|v| only.as_ref().is_none_or(|o| v.label.contains(o.as_str())))
        .flat_map(|v| v.archs().iter().map(move |&arch| (arch, v.clone())))
        .collect();
    assert!(!jobs.is_empty(), "no variant to compile (FLASHDMOE_VARIANTS filter: {only:?})");
    // NVRTC compiles independent programs concurrently; one worker per core.
    let next = AtomicUsize::new(0);
    let workers = thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len());
    let mut outcomes: Vec<(usize, Result<String, String>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((arch, variant)) = jobs.get(i) else { break done };
                        done.push((i, check(&jit, *arch, variant)));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("compile worker panicked")).collect()
    });
    outcomes.sort_by_key(|(i, _)| *i);
    assert_eq!(outcomes.len(), jobs.len(), "every job ran once");
    let mut failures = Vec::new();
    for (_, outcome) in outcomes {
        match outcome {
            Ok(line) => println!("{line}"),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} variant(s) failed:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n\n")
    );
}

/// Each model preset compiles the way a layer build compiles it on an H200: the first of its
/// candidate specialisations (with their fallbacks; combine tasks in the default form) that does
/// not spill. On Hopper that must be the Hopper engine's first tile: a preset that spills there
/// would run on the mma.sync engine, correct and without a word, 1.5-1.7x slower for the gated
/// presets (run 52 in docs/dev/perf-notes.md v23), and the default (streamed) combine must
/// compile too: nothing may be skipped. (Kimi-K2's streamed image compiles through its variant's
/// fallback, the thread index read afresh: config.cuh FDM_FRESH_TID.) Both the default build's
/// images (paired where `PairChoice::Auto` pairs: the column-grouped presets) and, where they
/// differ, the unpaired ones (`--no-pairs`).
#[test]
fn every_model_preset_compiles_through_its_candidates() {
    let Some(jit) = jit() else { return };
    for arch in Arch::SUPPORTED {
        // Presets the kernel does not compute are refused by the layer (today: none).
        for model in presets::MODELS.iter().filter(|m| spec::computes(&m.config())) {
            let unpaired = spec::combine_candidates(
                MoeSpec::candidates(&model.config(), spec::H200_PROCESSORS, arch),
                CombineForm::default(),
            );
            let auto: Vec<MoeSpec> = unpaired.iter().copied().map(PairChoice::auto).collect();
            let forms = if auto == unpaired { vec![auto] } else { vec![auto, unpaired] };
            for candidates in forms {
                let spec::Chosen { spec, compiled, skipped } =
                    spec::compile_first(&jit, arch, &candidates)
                        .unwrap_or_else(|e| panic!("{arch} {}: {e}", model.name));
                if arch.major == 9 {
                    assert!(
                        skipped.is_empty(),
                        "{arch} {}: the Hopper engine's specialisation did not compile: {skipped:?}",
                        model.name
                    );
                }
                let report = compiled.cubin.report();
                if let Some(line) = report.wgmma_serialized() {
                    panic!("{arch} {}: {}: wgmma serialised: {line}", model.name, spec.label());
                }
                let entry = report.entry("fdm_moe_forward").expect("checked by the JIT");
                let registers = entry.registers.unwrap_or(0);
                let fallback = if compiled.fallback {
                    format!(", spill fallback {}", spec.variant().fallback_changes().join(","))
                } else {
                    String::new()
                };
                println!(
                    "ok  {arch} {}: {} ({registers} registers{fallback})",
                    model.name,
                    spec.label()
                );
            }
        }
    }
}

/// Every layer of the paper grid (`presets::paper_grid`, T 128-16384 x E 8-128) compiles the way
/// a layer build compiles it on an H200 and lands on the Hopper engine: its first candidate may
/// give way only to its Hopper twins (64-row router jobs, half the epilogue's staged bytes:
/// `MoeSpec::candidates`), never to mma.sync. In run 118 the T16384 E128 image spilled 8 bytes
/// and ran on mma.sync, 1.71 ms against ~1.2, unnoticed because no test compiled it (that image
/// now compiles through its variant's fallback, the thread index read afresh: config.cuh
/// FDM_FRESH_TID); in session 24 T4096 E64's spilled 24 bytes, fallback and all, until a
/// branch became provably warp-uniform. A layer that leaves its first image is printed with
/// what spilled.
#[test]
fn every_paper_layer_compiles_on_the_hopper_engine() {
    let Some(jit) = jit() else { return };
    let arch = Arch::SM90;
    for (name, config) in presets::paper_grid() {
        let candidates = spec::combine_candidates(
            MoeSpec::candidates(&config, spec::H200_PROCESSORS, arch),
            CombineForm::default(),
        );
        let spec::Chosen { spec, skipped, compiled } = spec::compile_first(&jit, arch, &candidates)
            .unwrap_or_else(|e| panic!("{arch} {name}: {e}"));
        if let Some(line) = compiled.cubin.report().wgmma_serialized() {
            panic!("{arch} {name}: {}: wgmma serialised: {line}", spec.label());
        }
        let hopper: Vec<String> = candidates
            .iter()
            .filter(|c| matches!(c.engine, spec::TileEngine::Wgmma(_)))
            .map(MoeSpec::label)
            .collect();
        assert!(
            matches!(spec.engine, spec::TileEngine::Wgmma(_))
                && skipped.iter().all(|(label, _)| hopper.contains(label)),
            "{arch} {name}: chose {} after {skipped:?}",
            spec.label()
        );
        let spilled: Vec<&str> = skipped.iter().map(|(label, _)| label.as_str()).collect();
        println!(
            "ok  {arch} {name}: {}{}",
            spec.label(),
            if spilled.is_empty() {
                String::new()
            } else {
                format!(" ({} spilled)", spilled.join(", "))
            }
        );
    }
}

/// The Hopper variants' spill fallback (config.cuh `FDM_FRESH_TID`: the thread index read
/// afresh at every use) compiles without spills on its own, not only where a variant spilled
/// first: a fallback that failed to compile would fail the layer's build. A relu layer, a
/// streamed SwiGLU one and a TF32 one.
#[test]
fn the_hopper_spill_fallback_compiles() {
    let Some(jit) = jit() else { return };
    let tf32 = flashdmoe_core::config::MoeConfig {
        dtype: flashdmoe_core::config::DType::F32,
        ..presets::preset("paper-t4096-e32").unwrap()
    };
    let configs = [
        presets::preset("paper-t128-e8").unwrap(),
        presets::preset("qwen3-30b-a3b").unwrap(),
        tf32,
    ];
    for config in configs {
        let candidates = spec::combine_candidates(
            MoeSpec::candidates(&config, spec::H200_PROCESSORS, Arch::SM90),
            CombineForm::default(),
        );
        let first = candidates[0];
        assert!(matches!(first.engine, spec::TileEngine::Wgmma(_)), "{}", first.label());
        let variant = first.variant();
        let fallback = variant.fallback.clone().expect("a Hopper variant has a spill fallback");
        assert!(fallback.iter().any(|(name, _)| name == "FDM_FRESH_TID"));
        let fresh = KernelVariant { defines: fallback, fallback: None, ..variant };
        println!("{}", check(&jit, Arch::SM90A, &fresh).unwrap_or_else(|e| panic!("{e}")));
    }
}

/// Compiles one variant: its summary line, or why it failed.
fn check(jit: &Jit, arch: Arch, variant: &KernelVariant) -> Result<String, String> {
    let result =
        jit.compile_variant(variant, arch).map_err(|e| format!("{arch} {}: {e}", variant.label))?;
    let report = result.cubin.report();
    // ptxas serialising the Hopper engine's wgmma (C7512: a call or register pressure in the
    // consumers' region; C7520: a run-time branch among them, which the two-slab images had
    // until session 25) costs the engine its overlap: a failure like a spill.
    if let Some(line) = report.wgmma_serialized() {
        return Err(format!("{arch} {}: wgmma serialised: {line}", variant.label));
    }
    let entry = report.entry(variant.source.entry).expect("checked by the JIT");
    // The host sizes dynamic shared memory up to SMEM_LIMIT, assuming at most this much static.
    if entry.smem_bytes > STATIC_SMEM_RESERVE {
        return Err(format!(
            "{arch} {}: {} bytes of static shared memory, more than the {STATIC_SMEM_RESERVE} \
             engine.rs reserves for it",
            variant.label, entry.smem_bytes
        ));
    }
    Ok(format!(
        "ok  {arch} {:<44} {:>3} registers, {:>6} B smem, {:>4} B stack",
        variant.label,
        entry.registers.unwrap_or(0),
        entry.smem_bytes,
        entry.stack_frame_bytes,
    ))
}

/// Every kernel experiment waiting for a GPU run (`kernels::EXPERIMENTS`, run through
/// `FLASHDMOE_EXTRA_DEFINES`) compiles on the Hopper engine for a streamed SwiGLU layer and the
/// paper layer at T 16384 and 128 (its 64-row tile), as the layer build would choose them, and
/// the SwiGLU layer with paired tasks (`--pairs`), with no candidate skipped, and on the
/// mma.sync engine for the paper layer at T 16384: an experiment that spills or no longer
/// compiles fails here rather than on the GPU machine.
#[test]
fn every_kernel_experiment_compiles_on_the_hopper_engine() {
    if jit().is_none() {
        return;
    }
    let configs = [
        presets::preset("qwen3-30b-a3b").unwrap(),
        presets::preset("paper-t16384-e8").unwrap(),
        presets::preset("paper-t128-e8").unwrap(),
    ];
    let paired =
        |specs: Vec<MoeSpec>| specs.into_iter().filter_map(|s| s.with_pairs().ok()).collect();
    for experiment in flashdmoe_cuda::kernels::EXPERIMENTS {
        let jit = Jit::new(JitConfig {
            cache: CacheMode::MemoryOnly,
            extra_defines: flashdmoe_cuda::Defines::parse_list(experiment.define),
            ..JitConfig::from_env()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        for (config, pairs) in
            [(&configs[0], false), (&configs[1], false), (&configs[2], false), (&configs[0], true)]
        {
            let candidates = spec::combine_candidates(
                MoeSpec::candidates(config, spec::H200_PROCESSORS, Arch::SM90),
                CombineForm::default(),
            );
            let candidates: Vec<MoeSpec> = if pairs { paired(candidates) } else { candidates };
            let chosen = spec::compile_first(&jit, Arch::SM90, &candidates)
                .unwrap_or_else(|e| panic!("{}: {e}", experiment.define));
            assert!(
                chosen.skipped.is_empty()
                    && matches!(chosen.spec.engine, spec::TileEngine::Wgmma(_)),
                "{} {}: skipped {:?}",
                experiment.define,
                chosen.spec.label(),
                chosen.skipped
            );
            println!("ok  {} {}", experiment.define, chosen.spec.label());
        }
        // The mma.sync engine's image for an sm_90 device, which copies every row in A4 (it
        // reads none in place): where an experiment changes the copies, this is the image a
        // single GPU checks it on (`gpu-check --engine mma-sync`).
        let mma = MoeSpec::for_config(&configs[1], spec::H200_PROCESSORS);
        let chosen = spec::compile_first(&jit, Arch::SM90, &[mma])
            .unwrap_or_else(|e| panic!("{} mma.sync: {e}", experiment.define));
        assert!(
            chosen.skipped.is_empty() && chosen.spec.engine == spec::TileEngine::MmaSync,
            "{} {}: skipped {:?}",
            experiment.define,
            chosen.spec.label(),
            chosen.skipped
        );
        println!("ok  {} {}", experiment.define, chosen.spec.label());
    }
}
