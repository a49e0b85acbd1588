//! What a launch of the MoE kernel's shape costs by itself (`flashdmoe_cuda::launch_cost`).
//!
//! ```text
//! launch-cost [--launches N]
//! ```
//!
//! On GPU 0, times empty launches over the whole GPU at 256 and 384 threads a block and
//! 0 / 64 / 128 / 200 KiB of dynamic shared memory a block (the MoE kernel's Hopper images
//! use 384 threads and ~190-200 KiB), cooperative and plain, and prints a table of medians;
//! then, at 384 threads and 200 KiB, launches whose grid stores 0-256 MiB as its last act:
//! the events around each launch against the grid's own span (first block start to last block
//! end) say whether a launch's end waits for the stores it leaves in flight.

use std::process::ExitCode;

use flashdmoe_cuda::launch_cost::{launch_cost, store_drain};
use flashdmoe_cuda::{Device, Jit};

fn main() -> ExitCode {
    let mut launches = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().map(|v| v.parse::<usize>())) {
            ("--launches", Some(Ok(n))) if n > 0 => launches = n,
            _ => {
                eprintln!("usage: launch-cost [--launches N (N >= 1)]");
                return ExitCode::from(2);
            }
        }
    }
    let (jit, device) = match (Jit::from_env(), Device::open(0)) {
        (Ok(jit), Ok(device)) => (jit, device),
        (Err(e), _) => {
            eprintln!("launch-cost: {e}");
            return ExitCode::FAILURE;
        }
        (_, Err(e)) => {
            eprintln!("skipped: no GPU ({e})");
            return ExitCode::SUCCESS;
        }
    };
    println!(
        "{:>7} {:>9} {:>6} {:>12} {:>14} {:>9} {:>11}",
        "threads", "smem KiB", "grid", "coop us", "coop b2b us", "plain us", "plain b2b us"
    );
    let mut failed = false;
    for block in [256u32, 384] {
        for kib in [0u32, 64, 128, 200] {
            match launch_cost(&jit, &device, block, kib * 1024, launches) {
                Ok(c) => println!(
                    "{block:>7} {kib:>9} {:>6} {:>12.1} {:>14.1} {:>9.1} {:>11.1}",
                    c.shape.grid,
                    c.cooperative_us,
                    c.cooperative_back_to_back_us,
                    c.plain_us,
                    c.plain_back_to_back_us
                ),
                Err(e) => {
                    failed = true;
                    println!("{block:>7} {kib:>9} failed: {e}");
                }
            }
        }
    }
    println!("\n{:>8} {:>10} {:>10} {:>10}", "MiB", "event us", "span us", "gap us");
    match store_drain(&jit, &device, 384, 200 * 1024, &[0, 16, 64, 256], launches) {
        Ok(rows) => {
            for r in rows {
                let gap = r.event_us - r.span_us;
                println!("{:>8} {:>10.1} {:>10.1} {:>10.1}", r.mib, r.event_us, r.span_us, gap);
            }
        }
        Err(e) => {
            failed = true;
            println!("store drain failed: {e}");
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
