//! What `flashdmoe run` on the simulator will cost this machine, printed before anything runs,
//! and the limits above which it refuses (`--max-sim-seconds`, the host memory available;
//! `--allow-slow` lifts both).
//!
//! Time: generating the weights (and the layer's own copy of them), the forwards at the
//! simulator's conservative rate ([`SimBackend::cost`]), and the verification against core's
//! f64 oracle, whose rate is measured below. Memory: the weights the CLI generates, the built
//! layer (heaps and its copy of the weights) and the inputs and outputs.

use std::fmt;

use flashdmoe::core::MoeConfig;
use flashdmoe::core::oracle::Sample;
use flashdmoe::sim::SimBackend;

use super::CliError;
use super::run_summary::bytes;

/// Weight elements generated (in parallel) and copied into the layer (on one thread) per
/// second: about a third of what one core of a busy 2-core development machine reached for
/// each (130 to 230 million generated, 150 to 200 million checked and copied, 2026-11-29).
const WEIGHT_ELEMENTS_PER_SECOND: f64 = 50e6;

/// FLOP rate of the f64 oracle on one core: about half of what it reached on one core of a busy
/// 2-core development machine (1.2 to 1.9 GFLOP/s, memory bound: every checked row reads its
/// experts' weights, 2026-11-29).
const ORACLE_FLOPS_PER_CORE: f64 = 0.75e9;

/// Default of `--max-sim-seconds`.
pub(super) const DEFAULT_MAX_SECONDS: f64 = 300.0;

/// The estimated cost of one `flashdmoe run` on the simulator.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Estimate {
    /// Cores the estimate assumes (this machine's available parallelism).
    pub cores: u32,
    /// Generating the weights and copying them into the layer.
    pub weights_seconds: f64,
    /// One forward.
    pub forward_seconds: f64,
    /// Forwards run (`--iterations`, plus one with `--trace`).
    pub forwards: u32,
    /// Checking the output rows against the oracle.
    pub verify_seconds: f64,
    /// Host memory of the whole run.
    pub host_bytes: u64,
}

/// Why `run` refuses a layer on the simulator (exit status 2).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The estimated time exceeds `--max-sim-seconds`.
    #[error(
        "refusing to run: the simulator would need about {} for this layer (the estimate \
         above, which errs on the slow side), over --max-sim-seconds {limit}; shrink the layer \
         (--tokens, --hidden, --inter, --experts, --world), raise --max-sim-seconds, or pass \
         --allow-slow to run it anyway",
        duration(*seconds)
    )]
    Time {
        /// Estimated seconds.
        seconds: f64,
        /// `--max-sim-seconds`.
        limit: f64,
    },
    /// The estimated host memory exceeds what the machine has available.
    #[error(
        "refusing to run: the simulator would need about {} of host memory for this layer, \
         more than the {} available; shrink the layer (--tokens, --hidden, --inter, --experts, \
         --world) or pass --allow-slow to run it anyway",
        bytes(*needed),
        bytes(*available)
    )]
    Memory {
        /// Estimated bytes.
        needed: u64,
        /// What this process may still allocate ([`available_memory`]).
        available: u64,
    },
    /// The host part of a GPU run (the f32 weights and rows generated and checked on the
    /// host) exceeds what the machine has available.
    #[error(
        "refusing to run: this layer needs about {} of host memory (its f32 weights, inputs, \
         outputs and routing are generated and checked on the host), more than the {} \
         available; shrink the layer (--tokens, --hidden, --inter, --experts, --world)",
        bytes(*needed),
        bytes(*available)
    )]
    HostMemory {
        /// Estimated bytes.
        needed: u64,
        /// What this process may still allocate ([`available_memory`]).
        available: u64,
    },
}

/// Core's estimate of the layer's host memory ([`flashdmoe::core::MemoryEstimate::host`]).
fn host_memory(config: &MoeConfig) -> Result<u64, flashdmoe::core::BackendError> {
    Ok(config.memory_estimate()?.host)
}

/// Refuses a GPU run whose host part does not fit in the `available` host memory (when
/// known): core's estimate, two more outputs per rank, and the largest tensor's staging copy
/// in the layer's dtype.
pub(super) fn check_gpu_host(config: &MoeConfig, available: Option<u64>) -> Result<(), CliError> {
    let m = config.memory_estimate()?;
    let (e, h, i) = (config.experts as u64, config.hidden as u64, config.inter as u64);
    let rows = 2 * config.world as u64 * config.tokens_per_rank as u64 * h * 4;
    let staging = e * h * i * config.dtype.elem_bytes() as u64;
    let needed = m.host.saturating_add(rows).saturating_add(staging);
    match available {
        Some(available) if needed > available => {
            Err(Refusal::HostMemory { needed, available }.into())
        }
        _ => Ok(()),
    }
}

/// Whether one `flashdmoe bench` case's host memory fits this machine: on the simulator (`sim`,
/// with `forwards` forwards) the whole run's estimate ([`Estimate`]), on a GPU the host part
/// ([`check_gpu_host`]). `Err` says how much it needs and how much there is: the sweep skips
/// the case instead of being killed for memory. `Ok` carries the simulator's estimate line, for
/// the sweep to print before a long case.
pub(super) fn bench_case_fits(
    config: &MoeConfig,
    sim: Option<(&SimBackend, u32)>,
) -> Result<Option<String>, String> {
    let available = available_memory();
    let Some((backend, forwards)) = sim else {
        return check_gpu_host(config, available).map(|()| None).map_err(|e| match e {
            CliError::Refused(Refusal::HostMemory { needed, available }) => {
                too_big(needed, available, "its f32 weights, inputs and routing on the host")
            }
            other => other.to_string(),
        });
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let estimate =
        Estimate::new(config, backend, forwards, &Sample::All, cores).map_err(|e| e.to_string())?;
    match available {
        Some(available) if estimate.host_bytes > available => {
            Err(too_big(estimate.host_bytes, available, "the simulator's estimate"))
        }
        _ => Ok(Some(estimate.to_string())),
    }
}

fn too_big(needed: u64, available: u64, what: &str) -> String {
    format!(
        "needs about {} of host memory ({what}), more than the {} available here",
        bytes(needed),
        bytes(available)
    )
}

impl Estimate {
    /// The estimate of `forwards` forwards of `config` on `backend`, verified with `sample`,
    /// with `cores` cores.
    pub(super) fn new(
        config: &MoeConfig,
        backend: &SimBackend,
        forwards: u32,
        sample: &Sample,
        cores: u32,
    ) -> Result<Estimate, flashdmoe::core::BackendError> {
        let cost = backend.cost(config, cores)?;
        let cores = cores.max(1);
        let (h, i) = (config.hidden as f64, config.inter as f64);
        let matrices = if config.activation.is_gated() { 3.0 } else { 2.0 };
        let weight_elements = cost.weight_bytes as f64 / 4.0;
        let weights_seconds = weight_elements / (WEIGHT_ELEMENTS_PER_SECOND * cores as f64)
            + weight_elements / WEIGHT_ELEMENTS_PER_SECOND;
        let tokens = config.tokens_per_rank as f64;
        let checked_per_rank = match sample {
            Sample::All => tokens,
            Sample::Rows { per_rank, .. } => tokens.min(*per_rank as f64),
        };
        let rows = checked_per_rank * config.world as f64;
        let oracle_flops = rows * config.top_k as f64 * 2.0 * matrices * h * i;
        let activations = config.world as f64 * tokens * h * 4.0;
        // Core's host estimate (the CLI's f32 weights, an input and an output per rank, the
        // oracle's routing), plus the layer (heaps and its copy of the weights), two more
        // outputs per rank (first and traced) and the rows' dtype-encoded copies inside the
        // simulator.
        let host_bytes = host_memory(config)?
            .saturating_add(cost.weight_bytes)
            .saturating_add(cost.heap_bytes)
            .saturating_add((4.0 * activations) as u64);
        Ok(Estimate {
            cores,
            weights_seconds,
            forward_seconds: cost.forward_seconds,
            forwards,
            verify_seconds: oracle_flops / (ORACLE_FLOPS_PER_CORE * cores as f64),
            host_bytes,
        })
    }

    /// Everything together.
    pub(super) fn total_seconds(&self) -> f64 {
        self.weights_seconds + self.forward_seconds * self.forwards as f64 + self.verify_seconds
    }

    /// Refuses the run when the estimate exceeds `max_seconds` or the `available` host memory
    /// (when known).
    pub(super) fn check(&self, max_seconds: f64, available: Option<u64>) -> Result<(), Refusal> {
        let seconds = self.total_seconds();
        if seconds > max_seconds {
            return Err(Refusal::Time { seconds, limit: max_seconds });
        }
        match available {
            Some(available) if self.host_bytes > available => {
                Err(Refusal::Memory { needed: self.host_bytes, available })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Estimate {
    /// `estimate: about 1.2 s on 2 cores (weights 0.1 s, 1 forward 0.3 s, verify 0.8 s);
    /// host memory about 12.0 MiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let forwards = match self.forwards {
            1 => format!("1 forward {}", duration(self.forward_seconds)),
            n => format!("{n} forwards {} each", duration(self.forward_seconds)),
        };
        write!(
            f,
            "estimate: about {} on {} cores (weights {}, {forwards}, verify {}); host memory about {}",
            duration(self.total_seconds()),
            self.cores,
            duration(self.weights_seconds),
            duration(self.verify_seconds),
            bytes(self.host_bytes)
        )
    }
}

/// Seconds in s, min or h.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 99.5 => format!("{s:.1} s"),
        s if s < 5940.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// The host memory this process may still allocate, where the system says: the least of the
/// machine's `MemAvailable` (`/proc/meminfo`), what its address-space and data limits
/// (`ulimit -v`, `ulimit -d`: `/proc/self/limits`) leave over what it already maps
/// (`/proc/self/status`), and what its cgroup's `memory.max` leaves over `memory.current`.
pub(super) fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let status = read("/proc/self/status").unwrap_or_default();
    let mut bounds = vec![read("/proc/meminfo").and_then(|m| kib_field(&m, "MemAvailable:"))];
    if let Some(limits) = read("/proc/self/limits") {
        for (limit, used) in [("Max address space", "VmSize:"), ("Max data size", "VmData:")] {
            bounds.push(
                soft_limit(&limits, limit)
                    .map(|l| l.saturating_sub(kib_field(&status, used).unwrap_or(0))),
            );
        }
    }
    if let Some(dir) = read("/proc/self/cgroup").and_then(|c| cgroup_dir(&c)) {
        let max = read(&format!("{dir}/memory.max")).and_then(|m| m.trim().parse::<u64>().ok());
        let current = read(&format!("{dir}/memory.current"))
            .and_then(|c| c.trim().parse::<u64>().ok())
            .unwrap_or(0);
        bounds.push(max.map(|m| m.saturating_sub(current)));
    }
    bounds.into_iter().flatten().min()
}

/// A `Name:   123 kB` field of `/proc/meminfo` or `/proc/self/status`, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of `/proc/self/limits` line `name`, in bytes (`None` when unlimited).
fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The cgroup v2 directory of this process (`0::/path` of `/proc/self/cgroup`).
fn cgroup_dir(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(format!("/sys/fs/cgroup{}", path.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use flashdmoe::core::config::presets;
    use flashdmoe::sim::SimOptions;

    use super::*;

    #[test]
    fn a_bench_case_larger_than_host_memory_is_refused_with_what_it_needs() {
        // About 700 GiB of f32 experts: more than any machine this runs on.
        let huge = MoeConfig {
            world: 1,
            tokens_per_rank: 64,
            hidden: 7168,
            inter: 2048,
            experts: 4096,
            memory_limit: u64::MAX,
            ..MoeConfig::default()
        };
        let sim = SimBackend::new(SimOptions::default());
        let line = bench_case_fits(&MoeConfig::default(), Some((&sim, 3))).unwrap().unwrap();
        assert!(line.starts_with("estimate: about ") && line.contains("3 forwards"), "{line}");
        if available_memory().is_none() {
            println!("skipped: this system does not say how much memory is available");
            return;
        }
        for sim in [Some((&sim, 1)), None] {
            let why = bench_case_fits(&huge, sim).unwrap_err();
            assert!(why.starts_with("needs about ") && why.contains("available here"), "{why}");
        }
    }

    fn estimate(config: &MoeConfig, forwards: u32, cores: u32) -> Estimate {
        let backend = SimBackend::new(SimOptions::default());
        Estimate::new(config, &backend, forwards, &super::super::run::sample(config), cores)
            .unwrap()
    }

    #[test]
    fn the_default_layer_is_well_under_a_second_and_small() {
        let e = estimate(&MoeConfig::default(), 1, 2);
        assert!(e.total_seconds() < 1.0, "{e}");
        assert!(e.host_bytes < 64 << 20, "{e}");
        assert_eq!(e.check(DEFAULT_MAX_SECONDS, Some(1 << 30)), Ok(()));
    }

    #[test]
    fn parts_add_up_and_forwards_multiply() {
        let c = MoeConfig::default();
        let one = estimate(&c, 1, 2);
        let three = estimate(&c, 3, 2);
        assert_eq!(three.forward_seconds, one.forward_seconds);
        let sum = one.weights_seconds + 3.0 * one.forward_seconds + one.verify_seconds;
        assert!((three.total_seconds() - sum).abs() < 1e-12);
        assert!(three.to_string().contains("3 forwards "), "{three}");
        // More cores, less time; the memory does not change.
        let wide = estimate(&c, 1, 16);
        assert!(wide.total_seconds() < one.total_seconds());
        assert_eq!(wide.host_bytes, one.host_bytes);
    }

    #[test]
    fn the_mixtral_preset_is_refused_naming_the_flags() {
        let c = presets::preset("mixtral-8x7b").unwrap();
        let e = estimate(&c, 1, 2);
        // 2.9 TFLOP of expert GEMMs in the forward; the check samples rows (checking all
        // 4096 would be the same work again in f64: `Sample::sized_for`).
        assert!(e.total_seconds() > 600.0, "{e}");
        assert!(e.verify_seconds < e.forward_seconds / 10.0, "{e}");
        assert!(e.host_bytes > 11_000_000_000, "{e}");
        let err = e.check(DEFAULT_MAX_SECONDS, None).unwrap_err();
        assert!(matches!(err, Refusal::Time { limit: 300.0, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("--max-sim-seconds 300") && msg.contains("--allow-slow"), "{msg}");
        assert!(msg.contains(" min for this layer"), "{msg}");
        let err = e.check(f64::INFINITY, Some(8 << 30)).unwrap_err();
        assert!(matches!(err, Refusal::Memory { available, .. } if available == 8 << 30));
        assert!(err.to_string().contains("8.0 GiB available"), "{err}");
        assert_eq!(e.check(f64::INFINITY, None), Ok(()));
    }

    #[test]
    fn sampled_verification_costs_less() {
        // 2 x 8192 rows: above the full-check limit, 64 sampled rows per rank.
        let c = MoeConfig { tokens_per_rank: 8192, ..MoeConfig::default() };
        assert!(matches!(super::super::run::sample(&c), Sample::Rows { per_rank: 64, .. }));
        let all = Estimate::new(&c, &SimBackend::default(), 1, &Sample::All, 2).unwrap();
        let sampled = estimate(&c, 1, 2);
        assert!((all.verify_seconds / sampled.verify_seconds - 128.0).abs() < 1e-9);
    }

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(duration(0.04), "0.0 s");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(150.0), "2.5 min");
        assert_eq!(duration(7200.0), "2.0 h");
    }

    #[test]
    fn meminfo_limits_and_cgroups_are_parsed() {
        let info = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   12345 kB\n";
        assert_eq!(kib_field(info, "MemAvailable:"), Some(12345 * 1024));
        assert_eq!(kib_field("MemTotal: 1 kB\n", "MemAvailable:"), None);
        assert_eq!(kib_field("MemAvailable: lots kB\n", "MemAvailable:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max data size             unlimited            unlimited            bytes\n\
                      Max address space         4294967296           unlimited            bytes\n";
        assert_eq!(soft_limit(limits, "Max address space"), Some(4 << 30));
        assert_eq!(soft_limit(limits, "Max data size"), None);
        assert_eq!(
            cgroup_dir("0::/user.slice/x.scope\n").as_deref(),
            Some("/sys/fs/cgroup/user.slice/x.scope")
        );
        assert_eq!(cgroup_dir("0::/\n").as_deref(), Some("/sys/fs/cgroup"));
        assert_eq!(cgroup_dir("1:memory:/x\n"), None);
        // On this machine: something is known, and it is less than the memory in it.
        let total =
            std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| kib_field(&m, "MemTotal:"));
        if let (Some(total), Some(available)) = (total, available_memory()) {
            assert!(available <= total, "{available} > {total}");
        }
    }

    #[test]
    fn gpu_runs_check_the_host_part() {
        let c = MoeConfig {
            tokens_per_rank: 8,
            hidden: 64,
            inter: 64,
            experts: 1_000_000,
            ..MoeConfig::default()
        };
        let err = check_gpu_host(&c, Some(8 << 30)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("refusing to run: this layer needs about ")
                && msg.contains("8.0 GiB available"),
            "{msg}"
        );
        assert!(matches!(err.status(), super::super::ExitStatus::Usage));
        assert!(check_gpu_host(&c, None).is_ok());
        assert!(check_gpu_host(&MoeConfig::default(), Some(1 << 30)).is_ok());
    }
}
