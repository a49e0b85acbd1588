//! `flashdmoe bench` as one process of a world of processes, one GPU each (`flashdmoe launch
//! --nproc N bench ...`, or torchrun: `RANK` set). One case only (`--preset NAME` or a grid
//! file of one case), `--backend cuda`, no baselines; a preset's layer (one rank) is run on
//! `N x ranks-per-gpu` ranks, T tokens each.
//!
//! Each process joins the group, builds its part of the layer, runs one host-path forward of
//! its ranks and verifies it against the oracle; then it times `--iters` device-resident
//! forwards queued back to back on its GPU's stream after a group barrier (after `--warmup`
//! untimed ones), each forward's time between consecutive events on that stream, and checks
//! the last output bitwise against the verified host-path one. Rank 0 gathers every
//! process's summary and writes the record: the slowest GPU's times (by median), verified only
//! if every process verified, with `processes` and `ranks_per_process` set. The host path's
//! per-forward times are not used across processes: its ~100 ms of host work a call lets the
//! processes drift apart, and a kernel's events then include its wait for the other's.

use std::time::Duration;

use flashdmoe::bench::record::{IMPL_CUDA, IMPL_CUDA_VIRTUAL, LayerKey, Record, SCHEMA, to_jsonl};
use flashdmoe::bench::resident::{BackToBackOptions, back_to_back_all};
use flashdmoe::bench::runner::BenchBackend;
use flashdmoe::bench::{csv, table};
use flashdmoe::core::oracle::{self, Sample, VerifyOptions};
use flashdmoe::core::perf::{self, TimeSummary};
use flashdmoe::core::rendezvous::Env;
use flashdmoe::core::{BackendError, ForwardOptions, LayerWeights, MoeConfig, generate_input};
use flashdmoe::cuda::{CudaBackend, CudaOptions, GroupOptions, ProcessGroup};

use super::{BackendArg, BenchArgs, CliError, cases, write};

/// The one case a process rank runs, on `processes x ranks_per_gpu` ranks (module doc);
/// everything a process rank does not support is a usage error, before anything runs.
pub(super) fn the_case(
    args: &BenchArgs,
    processes: usize,
) -> Result<(String, MoeConfig), CliError> {
    if args.backend != BackendArg::Cuda {
        return Err(CliError::Usage(
            "bench as one process per GPU runs --backend cuda only (the simulator runs the \
             whole world in one process: run it without flashdmoe launch)"
                .into(),
        ));
    }
    if !args.baselines.is_empty() {
        return Err(CliError::Usage(
            "bench as one process per GPU runs no --baselines (run them in one process)".into(),
        ));
    }
    if args.preset.is_empty() && args.config.is_none() {
        return Err(CliError::Usage(
            "bench as one process per GPU runs one case: give --preset NAME (or a --config \
             file of one case), not a --grid"
                .into(),
        ));
    }
    let mut cases = cases(args)?;
    if cases.len() != 1 {
        return Err(CliError::Usage(format!(
            "bench as one process per GPU runs one case, not {} ({}); launch once per case",
            cases.len(),
            cases.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let case = cases.remove(0);
    let rpg = args.ranks_per_gpu.unwrap_or(1);
    let world = processes as u32 * rpg;
    let mut config = case.config;
    if config.world == 1 {
        config.world = world;
    } else if config.world != world {
        return Err(CliError::Usage(format!(
            "{}: a layer of {} ranks, but {processes} processes of {rpg} ranks run {world}",
            case.name, config.world
        )));
    }
    Ok((case.name, config))
}

/// One process's results as they travel to rank 0: whether its first forward verified, its
/// largest relative error, whether the last back-to-back output was bitwise the host path's,
/// the experts its ranks touched (`0`/`1` each) and its GPU's time summary (median, p10, p90,
/// min, max in ms).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Part {
    pub(super) verified: bool,
    pub(super) max_rel: f64,
    pub(super) same: bool,
    pub(super) touched: Vec<bool>,
    pub(super) times: [f64; 5],
    pub(super) note: String,
}

impl Part {
    pub(super) fn encode(&self) -> Vec<u8> {
        let touched: String = self.touched.iter().map(|&t| if t { '1' } else { '0' }).collect();
        let t: Vec<String> = self.times.iter().map(|x| format!("{x:e}")).collect();
        format!(
            "{}\t{:e}\t{}\t{touched}\t{}\t{}",
            u8::from(self.verified),
            self.max_rel,
            u8::from(self.same),
            t.join(","),
            self.note.replace(['\t', '\n'], " ")
        )
        .into_bytes()
    }

    pub(super) fn decode(blob: &[u8]) -> Result<Part, String> {
        let text = std::str::from_utf8(blob).map_err(|e| e.to_string())?;
        let f: Vec<&str> = text.splitn(6, '\t').collect();
        if f.len() != 6 {
            return Err(format!("{text:?}: {} fields, 6 expected", f.len()));
        }
        let flag = |s: &str| match s {
            "1" => Ok(true),
            "0" => Ok(false),
            o => Err(format!("{o:?} is not 0 or 1")),
        };
        let num = |s: &str| s.parse::<f64>().map_err(|e| format!("{s:?}: {e}"));
        let times: Vec<f64> = f[4].split(',').map(num).collect::<Result<_, _>>()?;
        Ok(Part {
            verified: flag(f[0])?,
            max_rel: num(f[1])?,
            same: flag(f[2])?,
            touched: f[3].chars().map(|c| c == '1').collect(),
            times: times
                .try_into()
                .map_err(|t: Vec<f64>| format!("{} times, 5 expected", t.len()))?,
            note: f[5].to_owned(),
        })
    }
}

/// Rank 0's record of every process's part (rank order).
pub(super) fn record(
    name: &str,
    config: &MoeConfig,
    parts: &[Part],
    iterations: u32,
    seed: u64,
    device: String,
    ranks_per_process: u32,
) -> Result<Record, CliError> {
    let slowest = parts
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.times[0].total_cmp(&b.1.times[0]))
        .ok_or_else(|| CliError::Failed("no process reported".into()))?;
    let [median_ms, p10_ms, p90_ms, min_ms, max_ms] = slowest.1.times;
    let mut notes: Vec<String> = Vec::new();
    for (rank, p) in parts.iter().enumerate() {
        if !p.verified {
            notes.push(format!("process {rank}: {}", p.note));
        }
        if !p.same {
            notes.push(format!(
                "process {rank}: the last back-to-back output differs from the host path's"
            ));
        }
    }
    let verified = notes.is_empty();
    let medians: Vec<String> = parts.iter().map(|p| format!("{:.3}", p.times[0])).collect();
    notes.push(format!(
        "one process per GPU: device-resident forwards back to back after a group barrier, \
         times between consecutive events on each process's stream; the slowest process's \
         (rank {}); medians per process {} ms",
        slowest.0,
        medians.join(", ")
    ));
    let touched: Vec<bool> = (0..config.experts as usize)
        .map(|e| parts.iter().any(|p| p.touched.get(e).copied().unwrap_or(false)))
        .collect();
    let floor_ms = perf::floor_ms(config, experts_touched(config, &touched)?);
    let flops = perf::layer_flops(config);
    let max_rel = parts.iter().map(|p| p.max_rel).fold(0.0, f64::max);
    let r = Record {
        schema: SCHEMA.into(),
        implementation: if ranks_per_process > 1 { IMPL_CUDA_VIRTUAL } else { IMPL_CUDA }.into(),
        backend: "cuda".into(),
        device,
        world: config.world,
        config: LayerKey::of(config),
        iterations,
        median_ms,
        p10_ms,
        p90_ms,
        min_ms,
        max_ms,
        verified,
        max_rel_err: max_rel.is_finite().then_some(max_rel),
        flops,
        tflops: flashdmoe::bench::record::tflops(flops, median_ms),
        timestamp: flashdmoe::bench::record::timestamp(std::time::SystemTime::now()),
        seed,
        floor_ms: Some(floor_ms),
        notes: notes.join("; "),
        name: Some(name.to_owned()),
        protocol: None,
        processes: Some(parts.len() as u32),
        ranks_per_process: Some(ranks_per_process),
        kernel: None,
        host_path_median_ms: None,
    };
    r.check().map_err(|e| CliError::Failed(format!("the record is malformed: {e}")))?;
    Ok(r)
}

/// The most touched experts on any rank (`perf::experts_touched` of the union of the
/// processes' routings).
fn experts_touched(config: &MoeConfig, touched: &[bool]) -> Result<u32, CliError> {
    let map = config.expert_map()?;
    Ok((0..config.world)
        .map(|rank| map.experts_of(rank).iter().filter(|&&e| touched[e as usize]).count() as u32)
        .max()
        .unwrap_or(0))
}

/// Runs this process's part of the bench (module doc).
pub(super) fn bench(args: &BenchArgs) -> Result<(), CliError> {
    let env = Env::from_env().map_err(|e| CliError::Usage(format!("RANK is set, but {e}")))?;
    let (name, config) = the_case(args, env.world_size)?;
    args.sim.reject_for_cuda()?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(CliError::Usage(format!("--timeout {} must be > 0 seconds", args.timeout)));
    }
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|e| CliError::Usage(format!("--timeout {}: {e}", args.timeout)))?;
    flashdmoe::cuda::spec::check_computed(&config).map_err(CliError::kernel_refusal)?;
    flashdmoe::cuda::cuda_available()
        .map_err(|e| CliError::Backend(BackendError::Unavailable(e.to_string())))?;
    super::estimate::check_gpu_host(&config, super::estimate::available_memory())?;
    let group = ProcessGroup::from_env(&GroupOptions::default())?;
    let rpg = args.ranks_per_gpu.unwrap_or(1);
    println!(
        "bench: {name} on {} ranks, one process per GPU: process rank {} of {} on GPU {}",
        config.world,
        group.rank(),
        group.world(),
        group.device()
    );
    let weights = LayerWeights::generate(&config, args.seed)?;
    let cuda = CudaBackend::new(CudaOptions {
        ranks_per_gpu: Some(rpg),
        remote_copiers: args.remote_copiers,
        tile: args.tile,
        ..CudaOptions::default()
    });
    let layer = cuda.build_process(&config, &weights, &group)?;
    let ranks = layer.local_ranks();
    let inputs = ranks
        .clone()
        .map(|r| generate_input(&config, r, args.seed))
        .collect::<Result<Vec<_>, _>>()?;
    let options = ForwardOptions { trace: false, timeout };
    let host = layer
        .forward_local(&inputs, &options)
        .map_err(|e| super::super::run::timeout_named(e, "cuda", args.timeout))?;
    let check = oracle::verify_ranks(
        &config,
        &weights,
        ranks.start,
        &inputs,
        &host,
        &VerifyOptions { sample: Sample::sized_for(&config, args.verify_rows), tolerance: None },
    )?;
    println!("verify: ranks {ranks:?}: {check}");
    // Every process goes on to the barrier even when its check failed: the record says so.
    let options =
        BackToBackOptions { calls: args.iters as usize, warmup: args.warmup as usize, timeout };
    let mut barrier = || group.barrier().map_err(|e| format!("group barrier: {e}"));
    let m = back_to_back_all(&layer, &config, &inputs, &host, options, &mut barrier)
        .map_err(CliError::Failed)?;
    let all: Vec<f64> = m.forwards_ms.iter().flatten().copied().collect();
    let slowest_gpu = m
        .forwards_ms
        .iter()
        .filter_map(|f| TimeSummary::of(f))
        .max_by(|a, b| a.median_ms.total_cmp(&b.median_ms))
        .ok_or_else(|| CliError::Failed(format!("invalid event times: {all:?}")))?;
    let mut touched = vec![false; config.experts as usize];
    for out in &host {
        for (t, tokens) in touched.iter_mut().zip(&out.routing.expert_tokens) {
            *t |= !tokens.is_empty();
        }
    }
    let s = slowest_gpu;
    let part = Part {
        verified: check.passed(),
        max_rel: check.max_rel,
        same: m.same,
        touched,
        times: [s.median_ms, s.p10_ms, s.p90_ms, s.min_ms, s.max_ms],
        note: check.to_string().lines().next().unwrap_or_default().to_owned(),
    };
    println!(
        "time: {} forwards back to back, this process: median {:.3} ms (p10 {:.3}, p90 {:.3}); \
         {:.3} ms a forward from the events around all of them; last output {}",
        m.calls,
        s.median_ms,
        s.p10_ms,
        s.p90_ms,
        m.per_gpu_ms.iter().copied().fold(0.0, f64::max),
        if m.same { "bitwise = the host path's" } else { "DIFFERS from the host path's" }
    );
    let parts = group
        .all_gather(&part.encode())?
        .iter()
        .enumerate()
        .map(|(rank, b)| {
            Part::decode(b).map_err(|e| CliError::Failed(format!("process {rank}'s part: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let r = record(&name, &config, &parts, args.iters, args.seed, cuda.device(), rpg)?;
    if group.rank() == 0 {
        std::fs::create_dir_all(&args.out)
            .map_err(|e| CliError::Failed(format!("{}: {e}", args.out.display())))?;
        let jsonl = args.out.join("results.jsonl");
        let csv_path = args.out.join("results.csv");
        write(&jsonl, &to_jsonl(std::slice::from_ref(&r)))?;
        write(&csv_path, &csv::to_csv(std::slice::from_ref(&r)))?;
        println!("\n{}", table::render(std::slice::from_ref(&r)));
        println!("wrote {} and {}", jsonl.display(), csv_path.display());
    }
    println!(
        "{}: {} median {:.3} ms (p10 {:.3}, p90 {:.3}), slowest of {} processes, {}",
        name,
        r.implementation,
        r.median_ms,
        r.p10_ms,
        r.p90_ms,
        parts.len(),
        if r.verified { "verified".to_owned() } else { format!("NOT VERIFIED: {}", r.notes) }
    );
    if r.verified { Ok(()) } else { Err(CliError::Mismatch(r.notes)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &str) -> BenchArgs {
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            b: BenchArgs,
        }
        P::try_parse_from(std::iter::once("bench").chain(line.split_whitespace())).unwrap().b
    }

    #[test]
    fn a_process_rank_runs_one_cuda_case_on_every_process() {
        let (name, c) = the_case(&args("--backend cuda --preset paper-t4096-e32"), 2).unwrap();
        assert_eq!((name.as_str(), c.world, c.tokens_per_rank), ("paper-t4096-e32", 2, 4096));
        let (_, c) =
            the_case(&args("--backend cuda --preset paper-t4096-e32 --ranks-per-gpu 2"), 2)
                .unwrap();
        assert_eq!(c.world, 4);
        for (line, needle) in [
            ("--preset paper-t4096-e32", "--backend cuda only"),
            ("--backend cuda", "one case"),
            ("--backend cuda --grid small", "one case"),
            ("--backend cuda --preset paper-t4096-e32 paper-t4096-e8", "not 2"),
            ("--backend cuda --preset paper-t4096-e32 --baselines torch-ep", "no --baselines"),
        ] {
            let err = the_case(&args(line), 2).unwrap_err();
            assert!(matches!(err, CliError::Usage(_)), "{line}: {err:?}");
            assert!(err.to_string().contains(needle), "{line}: {err}");
        }
    }

    fn part(median: f64, verified: bool) -> Part {
        Part {
            verified,
            max_rel: 4.5e-3,
            same: true,
            touched: vec![true; 32],
            times: [median, median * 0.99, median * 1.02, median * 0.98, median * 1.1],
            note: if verified { String::new() } else { "FAIL: 3 rows".into() },
        }
    }

    #[test]
    fn parts_travel_unchanged() {
        let mut p = part(0.371, false);
        p.touched[3] = false;
        p.note = "FAIL:\tthree\nrows".into();
        let back = Part::decode(&p.encode()).unwrap();
        assert_eq!(back, Part { note: "FAIL: three rows".into(), ..p });
        assert!(Part::decode(b"1\t0").is_err());
        assert!(Part::decode(b"2\t0\t1\t1\t1,2,3,4,5\t").is_err());
        assert!(Part::decode(b"1\t0\t1\t1\t1,2\t").is_err());
    }

    #[test]
    fn the_record_is_the_slowest_process_and_says_it_was_multi_process() {
        let config = MoeConfig { world: 2, ..flashdmoe::core::config::presets::paper(4096, 32) };
        let parts = [part(0.371, true), part(0.402, true)];
        let r = record("paper-t4096-e32", &config, &parts, 200, 0, "H200".into(), 1).unwrap();
        assert_eq!((r.processes, r.ranks_per_process, r.world), (Some(2), Some(1), 2));
        assert!((r.median_ms - 0.402).abs() < 1e-12 && r.verified);
        assert!(r.notes.contains("slowest process's (rank 1)"), "{}", r.notes);
        assert!(r.to_json_line().contains(r#""processes":2,"ranks_per_process":1"#));
        assert!(r.floor_ms.is_some_and(|f| f > 0.0));
        let bad = record("x", &config, &[part(0.4, true), part(0.3, false)], 5, 0, "H".into(), 1)
            .unwrap();
        assert!(!bad.verified && bad.notes.contains("process 1: FAIL: 3 rows"), "{}", bad.notes);
    }
}
