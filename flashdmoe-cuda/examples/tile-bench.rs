//! The Hopper tile engine's standalone bench (`flashdmoe_cuda::tile_bench`).
//!
//! ```text
//! tile-bench [--compile-only] [--dump-cubin DIR] [--iters N] [--seed S] [--only SUBSTRING]
//! ```
//!
//! Runs every configuration of `tile_bench::suite()` on GPU 0 (an sm_90 device): checks it
//! against the f64 reference, times it, and prints a table (TFLOP/s over the median of
//! `--iters` launches). `--compile-only` compiles the suite for sm_90a and prints registers
//! and shared memory (no GPU needed; NVRTC is); `--dump-cubin DIR` also writes each image to
//! `DIR/<label>.cubin` for `cuobjdump --dump-sass`. Exit status 1 if any configuration failed.

use std::process::ExitCode;

use flashdmoe_cuda::tile_bench::{self, BenchConfig};
use flashdmoe_cuda::{Arch, Device, Jit};

struct Args {
    compile_only: bool,
    dump: Option<std::path::PathBuf>,
    iters: u32,
    seed: u64,
    only: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { compile_only: false, dump: None, iters: 20, seed: 0x7117, only: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--compile-only" => args.compile_only = true,
            "--dump-cubin" => {
                args.compile_only = true;
                args.dump = Some(value("--dump-cubin")?.into());
            }
            "--iters" => {
                args.iters = value("--iters")?.parse().map_err(|e| format!("--iters: {e}"))?;
                if args.iters == 0 {
                    return Err("--iters must be at least 1".into());
                }
            }
            "--seed" => args.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--only" => args.only = Some(value("--only")?),
            "-h" | "--help" => {
                println!(
                    "tile-bench [--compile-only] [--dump-cubin DIR] [--iters N] [--seed S] [--only SUBSTRING]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tile-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let jit = match Jit::from_env() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("tile-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let suite: Vec<BenchConfig> = tile_bench::suite()
        .into_iter()
        .filter(|c| args.only.as_ref().is_none_or(|o| c.label().contains(o.as_str())))
        .collect();
    let mut failed = 0;
    if args.compile_only {
        for c in &suite {
            match jit.compile_variant(&c.variant(), Arch::SM90A) {
                Ok(compiled) => {
                    if let Some(dir) = &args.dump {
                        let path = dir.join(format!("{}.cubin", c.label().replace(' ', "_")));
                        if let Err(e) = std::fs::create_dir_all(dir)
                            .and_then(|()| std::fs::write(&path, compiled.cubin.image()))
                        {
                            eprintln!("tile-bench: cannot write {}: {e}", path.display());
                            failed += 1;
                        }
                    }
                    let report = compiled.cubin.report();
                    let entry = report.entry(flashdmoe_cuda::kernels::TILE_BENCH.entry);
                    println!(
                        "ok   {:<44} {:>3} registers, {:>6} B dynamic smem",
                        c.label(),
                        entry.and_then(|e| e.registers).unwrap_or(0),
                        c.smem_bytes()
                    );
                    if let Some(line) = report.wgmma_serialized() {
                        println!("     {line}");
                    }
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL {}: {e}", c.label());
                }
            }
        }
        return if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let device = match Device::open(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tile-bench: {e}");
            return ExitCode::from(2);
        }
    };
    println!("device: {} ({} SMs)", device.gpu().name, device.gpu().sm_count);
    let mut rows = Vec::new();
    for c in &suite {
        match tile_bench::run(&jit, &device, c, args.iters, args.seed) {
            Ok(r) => {
                println!(
                    "ok   {:<44} {:>8.3} ms {:>6.1} TFLOP/s  err {:.2e} ({} rows)  {} regs",
                    c.label(),
                    r.median.as_secs_f64() * 1e3,
                    r.tflops,
                    r.rel_err,
                    r.rows_checked,
                    r.registers.unwrap_or(0)
                );
                rows.push(r);
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {}: {e}", c.label());
            }
        }
    }
    println!("\n| config | median ms | min-max ms | TFLOP/s | rel err |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.3}-{:.3} | {:.1} | {:.1e} |",
            r.config.label(),
            r.median.as_secs_f64() * 1e3,
            r.min.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3,
            r.tflops,
            r.rel_err
        );
    }
    println!("tile-bench: {} passed, {failed} failed", rows.len());
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
