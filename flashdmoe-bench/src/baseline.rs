//! The PyTorch baselines (`bench/baselines/`) as subprocesses, on the configs we run.
//!
//! Each baseline runs once per case, with the case's layer passed as explicit flags (never a
//! preset name, so both sides run the same layer whatever the presets' defaults; a real model's
//! layer also as `--layer`, the record's `config` object, which carries its router, shared
//! experts and activation parameters) and the same
//! seed, iterations and warm-up as ours, and writes its records (schema `flashdmoe-bench/1`) to
//! a JSONL file this module reads back. The scripts exit 0 when every result verified, 1 when
//! some did not (their records say which), 2 for bad input.
//!
//! Invariant: a baseline runs only where it computes the same layer as ours
//! ([`Baseline::applies_to`]): the scripts place experts contiguously, `torch_single.py` is one
//! GPU (world 1), and `torch_ep.py` computes the paper's layer only (no model features, top-k
//! weights renormalised).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::BenchError;
use crate::record::{LayerKey, Record, parse_jsonl};
use flashdmoe_core::{CapacityPolicy, MoeConfig, Placement};

/// A baseline script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// `torch_single.py`: one GPU, eager loop, grouped GEMM eager and CUDA-graph replayed.
    TorchSingle,
    /// `torch_ep.py`: expert parallel over NCCL all-to-all, one process per GPU.
    TorchEp,
}

/// How the baselines run.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineOptions {
    /// The Python interpreter (with PyTorch).
    pub python: PathBuf,
    /// The directory holding the scripts (`bench/baselines`).
    pub dir: PathBuf,
    /// `cuda` or `cpu` (functional check only: CPU times are never compared).
    pub device: String,
    /// Timed iterations.
    pub iterations: u32,
    /// Untimed iterations first.
    pub warmup: u32,
    /// Seed of the shared generator.
    pub seed: u64,
    /// Token rows per rank the script verifies.
    pub verify_rows: u32,
}

impl Baseline {
    /// Every baseline.
    pub const ALL: [Baseline; 2] = [Baseline::TorchSingle, Baseline::TorchEp];

    /// The name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Baseline::TorchSingle => "torch-single",
            Baseline::TorchEp => "torch-ep",
        }
    }

    /// The script's file name.
    pub const fn script(self) -> &'static str {
        match self {
            Baseline::TorchSingle => "torch_single.py",
            Baseline::TorchEp => "torch_ep.py",
        }
    }

    /// The baseline called `name`.
    pub fn parse(name: &str) -> Result<Baseline, BenchError> {
        Baseline::ALL.into_iter().find(|b| b.name() == name.trim()).ok_or_else(|| {
            BenchError::Options(format!(
                "unknown baseline {name:?} (expected {})",
                Baseline::ALL.map(Baseline::name).join(", ")
            ))
        })
    }

    /// `Ok` if the script computes `config`'s layer, else why not.
    pub fn applies_to(self, config: &MoeConfig) -> Result<(), String> {
        if self == Baseline::TorchEp && (!config.renormalize || !config.features().is_empty()) {
            return Err(format!(
                "{} computes the paper's layer only (renormalised, softmax router, no shared \
                 experts); torch-single computes this one",
                self.name()
            ));
        }
        if config.placement != Placement::Contiguous {
            return Err("the baselines place experts contiguously".into());
        }
        if self == Baseline::TorchSingle && config.world != 1 {
            return Err(format!(
                "{} is one GPU; the layer has world {}",
                self.name(),
                config.world
            ));
        }
        Ok(())
    }

    /// The command running this baseline on `config`, appending its records to `out`.
    pub fn command(self, config: &MoeConfig, options: &BaselineOptions, out: &Path) -> Command {
        let mut cmd = Command::new(&options.python);
        cmd.arg(options.dir.join(self.script()));
        let capacity = match config.capacity {
            CapacityPolicy::Dropless => "dropless".to_owned(),
            CapacityPolicy::Factor(f) => f.to_string(),
        };
        let flags = [
            ("--tokens", config.tokens_per_rank.to_string()),
            ("--hidden", config.hidden.to_string()),
            ("--inter", config.inter.to_string()),
            ("--experts", config.experts.to_string()),
            ("--top-k", config.top_k.to_string()),
            ("--activation", config.activation.to_string()),
            ("--dtype", config.dtype.to_string()),
            ("--capacity", capacity),
            ("--seed", options.seed.to_string()),
            ("--iters", options.iterations.to_string()),
            ("--warmup", options.warmup.to_string()),
            ("--verify-rows", options.verify_rows.to_string()),
            ("--device", options.device.clone()),
        ];
        for (flag, value) in flags {
            cmd.arg(flag).arg(value);
        }
        cmd.arg(if config.bias { "--bias" } else { "--no-bias" });
        if !config.renormalize || !config.features().is_empty() {
            let layer = serde_json::to_string(&LayerKey::of(config))
                .expect("a layer key always serialises");
            cmd.arg("--layer").arg(layer);
        }
        if self == Baseline::TorchEp {
            cmd.arg("--world").arg(config.world.to_string());
        }
        cmd.arg("--out").arg(out);
        cmd
    }

    /// Runs the baseline on `config` (a fresh `scratch` file receives its records) and returns
    /// its records. Errors when it cannot start, fails (exit other than 0 or 1: 1 only means
    /// some result did not verify), or writes no record.
    pub fn run(
        self,
        config: &MoeConfig,
        options: &BaselineOptions,
        scratch: &Path,
    ) -> Result<Vec<Record>, BenchError> {
        let fail = |message: String| BenchError::Baseline { name: self.name(), message };
        let script = options.dir.join(self.script());
        if !script.is_file() {
            return Err(fail(format!("{} not found (see --baseline-dir)", script.display())));
        }
        match std::fs::remove_file(scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BenchError::io(scratch, e)),
        }
        let output = self
            .command(config, options, scratch)
            .output()
            .map_err(|e| fail(format!("cannot run {}: {e}", options.python.display())))?;
        if !matches!(output.status.code(), Some(0 | 1)) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(fail(format!("{} ({})", output.status, tail.join(" | "))));
        }
        let text = std::fs::read_to_string(scratch).map_err(|e| BenchError::io(scratch, e))?;
        std::fs::remove_file(scratch).map_err(|e| BenchError::io(scratch, e))?;
        let records = parse_jsonl(&text, self.script())?;
        if records.is_empty() {
            return Err(fail("wrote no result".into()));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashdmoe_core::config::presets;

    fn options() -> BaselineOptions {
        BaselineOptions {
            python: "python3".into(),
            dir: "bench/baselines".into(),
            device: "cuda".into(),
            iterations: 20,
            warmup: 5,
            seed: 0,
            verify_rows: 64,
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_layer_is_passed_as_explicit_flags() {
        let c = presets::paper(16384, 8);
        let cmd = Baseline::TorchSingle.command(&c, &options(), Path::new("out.jsonl"));
        assert_eq!(cmd.get_program(), "python3");
        let a = args(&cmd).join(" ");
        assert_eq!(
            a,
            "bench/baselines/torch_single.py --tokens 16384 --hidden 2048 --inter 2048 \
             --experts 8 --top-k 2 --activation relu --dtype bf16 --capacity 1 --seed 0 \
             --iters 20 --warmup 5 --verify-rows 64 --device cuda --no-bias --out out.jsonl"
        );
        let mut m = presets::preset("gpt-oss-20b-shape").unwrap(); // SwiGLU with biases, dropless
        m.world = 2;
        let a = args(&Baseline::TorchEp.command(&m, &options(), Path::new("o"))).join(" ");
        assert!(a.starts_with("bench/baselines/torch_ep.py "), "{a}");
        for part in ["--activation swiglu", "--capacity dropless", "--bias", "--world 2"] {
            assert!(a.contains(part), "{a}");
        }
        assert!(!a.contains("--layer"), "{a}");
        // A real model's layer also goes as its record's config object.
        let v3 = presets::preset("deepseek-v3").unwrap();
        let a = args(&Baseline::TorchSingle.command(&v3, &options(), Path::new("o")));
        let at = a.iter().position(|x| x == "--layer").unwrap();
        let key: LayerKey = serde_json::from_str(&a[at + 1]).unwrap();
        assert_eq!(key.config(1), v3);
    }

    #[test]
    fn baselines_run_only_where_they_compute_our_layer() {
        let mut c = presets::paper(128, 8);
        assert!(Baseline::TorchSingle.applies_to(&c).is_ok());
        c.world = 2;
        assert!(Baseline::TorchSingle.applies_to(&c).unwrap_err().contains("world 2"));
        assert!(Baseline::TorchEp.applies_to(&c).is_ok());
        c.renormalize = false;
        assert!(Baseline::TorchEp.applies_to(&c).is_err());
        c.renormalize = true;
        // Real models' layers: the single-GPU script computes them, the EP one does not.
        let v3 = presets::preset("deepseek-v3").unwrap();
        assert!(Baseline::TorchSingle.applies_to(&v3).is_ok());
        assert!(Baseline::TorchEp.applies_to(&v3).unwrap_err().contains("paper's layer only"));
        let olmoe = presets::preset("olmoe-1b-7b").unwrap(); // not renormalised
        assert!(Baseline::TorchSingle.applies_to(&olmoe).is_ok());
        c.placement = Placement::Table(vec![1, 0, 1, 0, 1, 0, 1, 0]);
        assert!(Baseline::TorchEp.applies_to(&c).is_err());
    }

    #[test]
    fn names_parse() {
        assert_eq!(Baseline::parse("torch-ep").unwrap(), Baseline::TorchEp);
        assert_eq!(Baseline::parse(" torch-single").unwrap(), Baseline::TorchSingle);
        let err = Baseline::parse("megatron").unwrap_err().to_string();
        assert!(err.contains("torch-single, torch-ep"), "{err}");
    }

    #[test]
    fn a_missing_script_or_interpreter_is_an_error() {
        let dir = std::env::temp_dir().join(format!("flashdmoe-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = presets::paper(128, 8);
        let mut o = options();
        o.dir = dir.clone();
        let scratch = dir.join("scratch.jsonl");
        let err = Baseline::TorchSingle.run(&c, &o, &scratch).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        std::fs::write(dir.join("torch_single.py"), "").unwrap();
        o.python = dir.join("no-such-python");
        let err = Baseline::TorchSingle.run(&c, &o, &scratch).unwrap_err().to_string();
        assert!(err.contains("cannot run"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
