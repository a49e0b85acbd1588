//! The choices a caller or the build makes among a layer's specialisations: the tile engine,
//! the combine's form, paired tasks, the engine allowed, a chosen tile.

use super::MoeSpec;
use crate::engine::WgmmaTile;

/// The engine that runs a specialisation's GEMM tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileEngine {
    /// mma.sync tiles with a cp.async pipeline (sm_80 and newer; `FDM_ENGINE=0`).
    MmaSync,
    /// The Hopper engine (`sm_90a`; `FDM_ENGINE=1`) with this pipeline and staging.
    Wgmma(WgmmaTile),
}

/// How a combine task reads the rows its tokens' slots returned (`kernels/combine.cuh`,
/// `kernels/combine_stream.cuh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CombineForm {
    /// Loads into the threads' registers, summed in slot order: every engine and layer.
    Registers,
    /// Streamed through the Hopper engine's pipeline stages by the producer's bulk copies and
    /// summed from shared memory in the same order (the same bits), where it applies: the
    /// Hopper engine, 2-byte elements, 4+ slots a token (`FDM_COMBINE_STREAM`). Elsewhere the
    /// registers' form. The default: run 117 measured Qwen3 0.802 -> 0.790 ms and OLMoE
    /// 0.883 -> 0.867 (its combine tasks 30 -> 23 µs), the paper layer (2 slots) level
    /// (perf-notes v36).
    #[default]
    Streamed,
}

impl CombineForm {
    /// `registers` or `stream` (the GPU check's `--combine`).
    pub fn parse(s: &str) -> Option<CombineForm> {
        match s {
            "registers" => Some(CombineForm::Registers),
            "stream" => Some(CombineForm::Streamed),
            _ => None,
        }
    }
}

/// Whether a layer runs paired GEMM0 tasks ([`MoeSpec::with_pairs`], docs/dev/paired-tasks.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PairChoice {
    /// Paired where it pays ([`PairChoice::auto`]): layers whose GEMM0 weights go in column
    /// groups because an expert's do not fit in L2 (run 158, 1500 sustained forwards:
    /// DeepSeek-V3 -3.4%, Mixtral -1.3%; run 156: Kimi-K2 -6.1%, gpt-oss-120b and Qwen2-57B
    /// level), when the specialisation
    /// and the launch can pair; unpaired elsewhere (Qwen3 +3.3%, T4096 E128 +3.5%, run 155).
    #[default]
    Auto,
    /// Paired, or the build fails naming `pairs`.
    On,
    /// Never paired.
    Off,
}

impl PairChoice {
    /// The choice of a switch that may be left out: `None` Auto, `Some(true)` On,
    /// `Some(false)` Off (the CLI's `--pairs` / `--no-pairs`, Python's `pairs=`).
    pub fn forced(pairs: Option<bool>) -> PairChoice {
        match pairs {
            None => PairChoice::Auto,
            Some(true) => PairChoice::On,
            Some(false) => PairChoice::Off,
        }
    }

    /// The inverse of [`Self::forced`].
    pub fn as_forced(self) -> Option<bool> {
        match self {
            PairChoice::Auto => None,
            PairChoice::On => Some(true),
            PairChoice::Off => Some(false),
        }
    }

    /// Auto's rule for one candidate: pair it when its GEMM0 goes in column groups
    /// ([`super::gemm0_group`] non-zero) and it can pair; otherwise the candidate as it is.
    pub fn auto(spec: MoeSpec) -> MoeSpec {
        if spec.tile.gemm0_group != 0 { spec.with_pairs().unwrap_or(spec) } else { spec }
    }
}

/// Which tile engine a layer may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EngineChoice {
    /// The Hopper engine where the GPU has it (sm_90) and the tile compiles, else mma.sync.
    #[default]
    Auto,
    /// The portable mma.sync tiles only.
    MmaSync,
    /// The Hopper engine only: a layer on another GPU, or whose tile the engine cannot run,
    /// fails to build ([`crate::CudaError::InvalidLaunch`]) instead of falling back.
    Wgmma,
}

impl EngineChoice {
    /// Parses `auto`, `mma-sync` or `wgmma`.
    pub fn parse(s: &str) -> Option<EngineChoice> {
        match s {
            "auto" => Some(EngineChoice::Auto),
            "mma-sync" => Some(EngineChoice::MmaSync),
            "wgmma" => Some(EngineChoice::Wgmma),
            _ => None,
        }
    }

    /// The candidates of [`MoeSpec::candidates`] this choice allows.
    pub fn filter(self, candidates: Vec<MoeSpec>) -> Vec<MoeSpec> {
        candidates
            .into_iter()
            .filter(|s| match self {
                EngineChoice::Auto => true,
                EngineChoice::MmaSync => s.engine == TileEngine::MmaSync,
                EngineChoice::Wgmma => s.engine != TileEngine::MmaSync,
            })
            .collect()
    }
}

/// A tile the caller chose instead of the one [`MoeSpec::candidates`] would
/// (`CudaOptions::tile`, `flashdmoe run --tile 256x64`): `bm` rows by `bn` columns a B operand,
/// on the Hopper engine, optionally with its pipeline depth (`128x256s4`). For measuring one
/// layer in several tiles; see [`MoeSpec::with_tile`] for what it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileChoice {
    /// Rows: 64, 128 or 256.
    pub bm: u32,
    /// Columns a B operand: a multiple of 64 up to 256.
    pub bn: u32,
    /// Pipeline stages (2..=8), or `None` for the deepest that fits with the widest epilogue
    /// staging ([`WgmmaTile::deepest`]). A given depth takes the widest staging that fits with
    /// it.
    pub stages: Option<u32>,
}

impl TileChoice {
    /// A tile of `bm` x `bn` at the engine's own depth.
    pub const fn new(bm: u32, bn: u32) -> TileChoice {
        TileChoice { bm, bn, stages: None }
    }

    /// Parses `BMxBN` or `BMxBNsS`, e.g. `256x64` or `128x256s4`; `None` when it is not two
    /// numbers around an `x`, optionally followed by `s` and a number.
    pub fn parse(s: &str) -> Option<TileChoice> {
        let (bm, rest) = s.split_once('x')?;
        let (bn, stages) = match rest.split_once('s') {
            Some((bn, stages)) => (bn, Some(stages.parse().ok()?)),
            None => (rest, None),
        };
        Some(TileChoice { bm: bm.parse().ok()?, bn: bn.parse().ok()?, stages })
    }
}

/// `BMxBN[sS]`, with the error the command lines print (`flashdmoe run --tile`, `dump-moe`).
impl std::str::FromStr for TileChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<TileChoice, String> {
        TileChoice::parse(s).ok_or_else(|| {
            format!("`{s}` is not a tile: BMxBN or BMxBNsSTAGES, e.g. 256x64 or 128x256s4")
        })
    }
}

impl std::fmt::Display for TileChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.bm, self.bn)?;
        match self.stages {
            Some(stages) => write!(f, "s{stages}"),
            None => Ok(()),
        }
    }
}
