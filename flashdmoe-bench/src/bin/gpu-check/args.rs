//! The command line: [`USAGE`], its parse into [`Args`], and `--only`'s patterns.

use flashdmoe_cuda::{CombineForm, EngineChoice, PairChoice, TileChoice};

/// What `--help` prints (the module's usage line and options, in short).
pub(super) const USAGE: &str = "\
usage: gpu-check [--quick] [--list] [--json PATH] [--only PATTERN[,PATTERN...]]
                 [--iters N] [--sustain N] [--engine auto|mma-sync|wgmma]
                 [--combine registers|stream] [--pairs | --no-pairs] [--tile BMxBN[sS]]
  --quick        the short list (about 3 minutes on an H200)
  --list         print the checks' names and exit (no GPU needed)
  --json PATH    one results line per check (flashdmoe-bench/1, flashdmoe-check/1)
  --only P,...   checks whose names contain a pattern, or equal one written =NAME
  --iters N      host-path and device-resident forwards a timed case (default 20)
  --sustain N    N device-resident forwards back to back instead (the power cap's rate)
  --engine E     the tile engine: auto (default), mma-sync or wgmma
  --combine F    combine tasks read into registers, or streamed (default where it applies)
  --pairs        paired GEMM0 tasks in 2-CTA clusters (docs/dev/paired-tasks.md): every
                 case's layer with them, or its build fails naming `pairs`
  --no-pairs     no layer paired (default: paired where the GEMM0 weights go in column
                 groups, PairChoice::Auto)
  --tile T       every case's layer in this Hopper tile (e.g. 64x128s5) instead of the one
                 the backend or the case chooses; a case the tile cannot run fails naming it
Exits non-zero if any check failed; GPU checks need a CUDA GPU and NVRTC.";

pub(super) struct Args {
    pub(super) help: bool,
    pub(super) quick: bool,
    pub(super) list: bool,
    pub(super) json: Option<String>,
    pub(super) only: Option<String>,
    pub(super) iters: usize,
    /// Device-resident forwards timed back to back (`--sustain`; `iters` when not given).
    pub(super) sustain: Option<usize>,
    pub(super) engine: EngineChoice,
    pub(super) combine: CombineForm,
    /// `--pairs` (On), `--no-pairs` (Off), else Auto (`CudaOptions::pairs`).
    pub(super) pairs: PairChoice,
    /// `--tile`: every case's tile (`CudaOptions::tile`), over the case's own.
    pub(super) tile: Option<TileChoice>,
}

pub(super) fn parse_args() -> Result<Args, String> {
    parse_args_from(std::env::args().skip(1))
}

fn parse_args_from(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        help: false,
        quick: false,
        list: false,
        json: None,
        only: None,
        iters: 20,
        sustain: None,
        engine: EngineChoice::Auto,
        combine: CombineForm::default(),
        pairs: PairChoice::Auto,
        tile: None,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => args.help = true,
            "--quick" => args.quick = true,
            "--list" => args.list = true,
            "--json" => args.json = Some(it.next().ok_or("--json needs a path")?),
            "--only" => args.only = Some(it.next().ok_or("--only needs a pattern")?),
            "--iters" => {
                args.iters =
                    it.next().and_then(|v| v.parse().ok()).ok_or("--iters needs a number")?
            }
            "--sustain" => {
                let n = it.next().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
                args.sustain = Some(n.ok_or("--sustain needs a positive number of forwards")?);
            }
            "--engine" => {
                let v = it.next().ok_or("--engine needs auto, mma-sync or wgmma")?;
                args.engine = EngineChoice::parse(&v)
                    .ok_or(format!("--engine {v:?}: expected auto, mma-sync or wgmma"))?;
            }
            "--combine" => {
                let v = it.next().ok_or("--combine needs registers or stream")?;
                args.combine = CombineForm::parse(&v)
                    .ok_or(format!("--combine {v:?}: expected registers or stream"))?;
            }
            "--pairs" | "--no-pairs" if args.pairs != PairChoice::Auto => {
                return Err("--pairs and --no-pairs: give one of them".into());
            }
            "--tile" => {
                let v = it.next().ok_or("--tile needs a tile, e.g. 64x128s5")?;
                args.tile = Some(v.parse().map_err(|e| format!("--tile {v:?}: {e}"))?);
            }
            "--pairs" => args.pairs = PairChoice::On,
            "--no-pairs" => args.pairs = PairChoice::Off,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Whether `--only`'s comma-separated patterns keep the check `name`: a pattern keeps the names
/// that contain it, or with a leading `=` only the name equal to the rest.
pub(super) fn only_matches(only: &str, name: &str) -> bool {
    only.split(',').any(|p| p.strip_prefix('=').map_or(name.contains(p), |exact| name == exact))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args_from(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn sustain_takes_a_positive_count_and_leaves_iters_alone() {
        let a = parse(&["--sustain", "2000"]).unwrap();
        assert_eq!((a.sustain, a.iters), (Some(2000), 20));
        assert_eq!(parse(&[]).unwrap().sustain, None);
        for bad in [&["--sustain"][..], &["--sustain", "0"], &["--sustain", "many"]] {
            let err = parse(bad).err().unwrap();
            assert!(err.contains("--sustain"), "{err}");
        }
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().help && parse(&["-h"]).unwrap().help);
    }

    #[test]
    fn pairs_are_auto_by_default_on_or_off_by_flag_and_in_the_usage() {
        assert_eq!(parse(&[]).unwrap().pairs, PairChoice::Auto);
        assert_eq!(parse(&["--pairs", "--quick"]).unwrap().pairs, PairChoice::On);
        assert_eq!(parse(&["--no-pairs"]).unwrap().pairs, PairChoice::Off);
        assert!(parse(&["--pairs", "--no-pairs"]).is_err());
        assert!(USAGE.contains("--pairs") && USAGE.contains("--no-pairs"));
    }

    #[test]
    fn tile_parses_a_hopper_tile_and_names_itself_on_bad_input() {
        assert_eq!(parse(&[]).unwrap().tile, None);
        let t = parse(&["--tile", "64x128s5"]).unwrap().tile.unwrap();
        assert_eq!(t.to_string(), "64x128s5");
        for bad in [&["--tile"][..], &["--tile", "64by128"]] {
            let err = parse(bad).err().unwrap();
            assert!(err.contains("--tile"), "{err}");
        }
        assert!(USAGE.contains("--tile"));
    }

    #[test]
    fn only_keeps_substrings_or_exact_names() {
        assert!(only_matches("kimi", "preset kimi-k2 routed part"));
        assert!(only_matches("=preset kimi-k2", "preset kimi-k2"));
        assert!(!only_matches("=preset kimi-k2", "preset kimi-k2 routed part"));
        assert!(only_matches("x,=preset kimi-k2", "preset kimi-k2"));
        assert!(!only_matches("x,y", "preset kimi-k2"));
    }
}
