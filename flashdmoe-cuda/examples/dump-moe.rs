//! Writes the MoE kernel image a preset compiles to on an H200 (sm_90a, 131 processors), for
//! reading its SASS without a GPU (NVRTC is enough), e.g. to check that a change leaves a
//! kernel untouched:
//!
//! ```text
//! dump-moe PRESET OUT.cubin      # prints the chosen specialisation's label
//! FLASHDMOE_EXTRA_DEFINES=FDM_X dump-moe PRESET OUT.cubin   # an experiment's image
//! dump-moe PRESET OUT.cubin 256x64   # the same layer in a chosen tile (`--tile`)
//! nvdisasm -c OUT.cubin > OUT.sass
//! ```
//!
//! Run 80 (docs/dev/perf-notes.md v28) compared two builds' paper-layer images this way.

use std::process::ExitCode;

use flashdmoe_core::config::presets;
use flashdmoe_cuda::jit::CacheMode;
use flashdmoe_cuda::spec::{
    CombineForm, H200_PROCESSORS, MoeSpec, TileChoice, combine_candidates, compile_first,
};
use flashdmoe_cuda::{Arch, Jit, JitConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (preset, out, tile) = match args.as_slice() {
        [preset, out] => (preset, out, None),
        [preset, out, tile] => match tile.parse::<TileChoice>() {
            Ok(tile) => (preset, out, Some(tile)),
            Err(e) => {
                eprintln!("dump-moe: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: dump-moe PRESET OUT.cubin [BMxBN[sS]]");
            return ExitCode::from(2);
        }
    };
    match dump(preset, out, tile) {
        Ok(label) => {
            println!("{label}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dump-moe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dump(preset: &str, out: &str, tile: Option<TileChoice>) -> Result<String, String> {
    let config = presets::preset(preset).map_err(|e| e.to_string())?;
    let jit = Jit::new(JitConfig { cache: CacheMode::MemoryOnly, ..JitConfig::from_env() })
        .map_err(|e| e.to_string())?;
    let candidates = match tile {
        Some(tile) => vec![MoeSpec::with_tile(&config, H200_PROCESSORS, Arch::SM90A, tile)?],
        None => MoeSpec::candidates(&config, H200_PROCESSORS, Arch::SM90A),
    };
    // In the combine's default form, as a layer build compiles it.
    let candidates = combine_candidates(candidates, CombineForm::default());
    let chosen = compile_first(&jit, Arch::SM90A, &candidates).map_err(|e| e.to_string())?;
    // The candidates before it that did not compile cleanly (a spill, a serialised wgmma), so
    // an image that fell back says why.
    for (label, why) in &chosen.skipped {
        eprintln!("dump-moe: skipped {label}: {why}");
    }
    std::fs::write(out, chosen.compiled.cubin.image()).map_err(|e| format!("{out}: {e}"))?;
    Ok(chosen.spec.label())
}
