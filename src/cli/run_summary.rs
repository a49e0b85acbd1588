//! What `flashdmoe run` prints (and `flashdmoe info` for its preset list): pure functions from
//! configs and forward outputs to text.

use std::fmt::Write;
use std::time::Duration;

use flashdmoe::core::routing::DROPPED;
use flashdmoe::core::{
    CapacityPolicy, ConfigError, GroupScore, MoeConfig, Placement, RankOutput, Routing, SharedGate,
};
use flashdmoe::proto::TaskCounts;

fn activation(c: &MoeConfig) -> String {
    c.activation.to_string()
}

/// The router and shared experts where they are not the paper's: `, shared 2 x 1408`, `,
/// sigmoid router + selection bias, 4 of 8 groups (top-2 sums), x2.5`; empty otherwise.
pub(super) fn model(c: &MoeConfig) -> String {
    let mut out = String::new();
    if let Some(s) = c.shared {
        let gate = if s.gate == SharedGate::Sigmoid { " with a sigmoid gate" } else { "" };
        let _ = write!(out, ", shared {} x {}{gate}", s.count, s.inter);
    }
    let r = &c.routing;
    if *r != Routing::SOFTMAX {
        let _ = write!(out, ", {} router", r.scoring.name());
        if r.router_bias {
            out.push_str(" + bias");
        }
        if r.selection_bias {
            out.push_str(" + selection bias");
        }
        if let Some(g) = r.groups {
            let by = match g.score {
                GroupScore::Max => "best score",
                GroupScore::Top2Sum => "top-2 sums",
            };
            let _ = write!(out, ", {} of {} groups (by {by})", g.keep, g.count);
        }
        if r.scaling != 1.0 {
            let _ = write!(out, ", weights x{}", r.scaling);
        }
    }
    out
}

/// The shapes of a config on one line (for preset lists).
pub(super) fn shape(c: &MoeConfig) -> String {
    format!(
        "H {}, I {}, {} experts, top-{}, {}{}{}, {}, world {} x {} tokens",
        c.hidden,
        c.inter,
        c.experts,
        c.top_k,
        activation(c),
        if c.bias { " + bias" } else { "" },
        model(c),
        c.dtype.name(),
        c.world,
        c.tokens_per_rank
    )
}

/// The layer config, on a few lines.
pub(super) fn config(c: &MoeConfig) -> String {
    let capacity = match c.capacity {
        CapacityPolicy::Factor(f) => format!("factor {f} ({} rows/packet)", c.capacity_rows()),
        CapacityPolicy::Dropless => format!("dropless ({} rows/packet)", c.capacity_rows()),
    };
    let placement = match &c.placement {
        Placement::Contiguous => "contiguous".to_string(),
        Placement::Table(t) => format!("table {t:?}"),
    };
    format!(
        "config: world {} x {} tokens, hidden {}, inter {}, {} experts, top-{}, {}{}{}, {}\n\
         \x20       capacity {}, {}, placement {}",
        c.world,
        c.tokens_per_rank,
        c.hidden,
        c.inter,
        c.experts,
        c.top_k,
        activation(c),
        if c.bias { " + bias" } else { "" },
        model(c),
        c.dtype.name(),
        capacity,
        if c.renormalize { "renormalized weights" } else { "raw router weights" },
        placement,
    )
}

/// The device weight memory of a layer with its experts sharded over the config's world: per
/// rank (what every rank holds whole, plus the most loaded rank's experts) and of the whole
/// layer, e.g. `weights per rank: 336.1 MiB (router 64.0 KiB + 1 of 8 experts); whole layer:
/// 2.6 GiB`.
pub(super) fn weights(c: &MoeConfig) -> Result<String, ConfigError> {
    let m = c.memory_estimate()?;
    let local = c.expert_map()?.local_experts();
    let replicated = if c.shared.is_some() { "router and shared experts" } else { "router" };
    Ok(format!(
        "weights per rank: {} ({replicated} {} + {local} of {} experts); whole layer: {}",
        bytes(m.weights),
        bytes(m.replicated_weights),
        c.experts,
        bytes(m.layer_weights)
    ))
}

/// Host memory of a layer ([`flashdmoe::core::MemoryEstimate`]): one rank's process holding
/// its share, and all ranks in one process (what `flashdmoe run` generates and checks; a
/// backend's own copies come on top).
pub(super) fn host_memory(c: &MoeConfig) -> Result<String, ConfigError> {
    let m = c.memory_estimate()?;
    Ok(format!(
        "host memory: {} per rank in a process of its own (its share of the weights); {} for \
         all {} ranks in one process (the whole layer, as `flashdmoe run` generates and checks \
         it)",
        bytes(m.host_per_rank),
        bytes(m.host),
        c.world
    ))
}

/// Rows per expert over all ranks: kept rows (with a bar) and dropped `(token, slot)` pairs.
pub(super) fn routing_histogram(c: &MoeConfig, ranks: &[RankOutput]) -> String {
    let e = c.experts as usize;
    let mut kept = vec![0u64; e];
    let mut dropped = vec![0u64; e];
    for r in ranks {
        for (x, tokens) in r.routing.expert_tokens.iter().enumerate().take(e) {
            kept[x] += tokens.len() as u64;
        }
        for (&x, &row) in r.routing.experts.iter().zip(&r.routing.rows) {
            if row == DROPPED && (x as usize) < e {
                dropped[x as usize] += 1;
            }
        }
    }
    let owners = c.expert_map().ok();
    let widest = kept.iter().copied().max().unwrap_or(0).max(1);
    let mut out =
        String::from("routing: rows per expert (all ranks)\n  expert  rank   rows  dropped\n");
    for x in 0..e {
        let rank = owners.as_ref().map_or(String::from("?"), |m| m.owner(x as u32).0.to_string());
        let bar = "#".repeat((kept[x] * 40).div_ceil(widest) as usize);
        let _ = writeln!(out, "  {x:>6}  {rank:>4}  {:>5}  {:>7}  {bar}", kept[x], dropped[x]);
    }
    let (k, d): (u64, u64) = (kept.iter().sum(), dropped.iter().sum());
    let _ = write!(out, "  total         {k:>5}  {d:>7}");
    out
}

/// Tasks per kind, summed over ranks.
pub(super) fn tasks(ranks: &[RankOutput]) -> String {
    let mut t = TaskCounts::default();
    for r in ranks {
        t.gemm0 += r.stats.tasks.gemm0;
        t.gemm1 += r.stats.tasks.gemm1;
        t.combine += r.stats.tasks.combine;
    }
    format!(
        "tasks: gemm0 {}, gemm1 {}, combine {}, total {}",
        t.gemm0,
        t.gemm1,
        t.combine,
        t.total()
    )
}

/// Rows and bytes sent, against what a capacity-padded protocol would send.
pub(super) fn traffic(ranks: &[RankOutput]) -> String {
    let rows: u64 = ranks.iter().map(|r| r.stats.rows_sent).sum();
    let sent: u64 = ranks.iter().map(|r| r.stats.bytes_sent).sum();
    let padded: u64 = ranks.iter().map(|r| r.stats.padded_bytes).sum();
    let share = if padded == 0 {
        String::from("nothing to pad")
    } else {
        format!("{:.1}% of it", 100.0 * sent as f64 / padded as f64)
    };
    format!(
        "traffic: {rows} rows dispatched; {} sent (dispatched + returned rows) vs {} capacity-padded ({share})",
        bytes(sent),
        bytes(padded)
    )
}

/// The slowest rank's own time of a forward: what the forward costs on the backend (device
/// time on GPUs), without the caller's uploads, readback and output decoding.
pub(super) fn slowest_rank(ranks: &[RankOutput]) -> Duration {
    ranks.iter().map(|r| r.stats.elapsed).max().unwrap_or_default()
}

/// Forward times: each forward's slowest rank (`rank_times`), and the caller's wall time of
/// the whole call (`calls`), which adds staging, readback and decoding on the host.
pub(super) fn time(rank_times: &[Duration], calls: &[Duration]) -> String {
    let median_min = |times: &[Duration]| {
        let mut sorted = times.to_vec();
        sorted.sort();
        (
            sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
            sorted.first().copied().unwrap_or_default(),
        )
    };
    let ((rank, rank_min), (call, _)) = (median_min(rank_times), median_min(calls));
    if rank_times.len() > 1 {
        format!(
            "time: {} forwards, slowest rank median {}, min {}; host call median {} (with staging, readback and decoding)",
            rank_times.len(),
            ms(rank),
            ms(rank_min),
            ms(call)
        )
    } else {
        format!(
            "time: forward {} (slowest rank); host call {} (with staging, readback and decoding)",
            ms(rank),
            ms(call)
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `n` bytes in B, KiB, MiB or GiB.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use flashdmoe::core::Activation;

    use super::*;

    #[test]
    fn bytes_pick_a_unit() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn config_names_every_policy() {
        let c = MoeConfig {
            capacity: CapacityPolicy::Dropless,
            activation: Activation::SiluGated,
            bias: true,
            ..MoeConfig::default()
        };
        let s = config(&c);
        assert!(s.contains("swiglu + bias"), "{s}");
        assert!(s.contains("dropless (64 rows/packet)"), "{s}");
        assert!(s.contains("placement contiguous"), "{s}");
        assert_eq!(model(&c), "");
    }

    #[test]
    fn weights_per_rank_and_of_the_layer() {
        // 8 experts of 2 * 256 * 512 bf16 (512 KiB), router 8 * 256 bf16 (4 KiB), 4 ranks.
        let c = MoeConfig { world: 4, ..MoeConfig::default() };
        assert_eq!(
            weights(&c).unwrap(),
            "weights per rank: 1.0 MiB (router 4.0 KiB + 2 of 8 experts); whole layer: 4.0 MiB"
        );
        let one = MoeConfig { world: 1, ..c.clone() };
        assert!(
            weights(&one).unwrap().starts_with("weights per rank: 4.0 MiB (router 4.0 KiB + 8")
        );
        let q = flashdmoe::core::config::presets::preset("qwen1.5-moe-a2.7b").unwrap();
        assert!(
            weights(&q).unwrap().contains("(router and shared experts "),
            "{}",
            weights(&q).unwrap()
        );
        let h = host_memory(&c).unwrap();
        assert!(h.starts_with("host memory: ") && h.contains(" for all 4 ranks in one process"));
        assert!(weights(&MoeConfig { hidden: 3, ..c }).is_err());
    }

    #[test]
    fn model_features_are_named() {
        use flashdmoe::core::config::presets::preset;
        let v3 = shape(&preset("deepseek-v3").unwrap());
        assert!(
            v3.contains(
                "swiglu, shared 1 x 2048, sigmoid router + selection bias, 4 of 8 groups (by \
                 top-2 sums), weights x2.5, bf16"
            ),
            "{v3}"
        );
        let q = shape(&preset("qwen1.5-moe-a2.7b").unwrap());
        assert!(q.contains("swiglu, shared 1 x 5632 with a sigmoid gate, bf16"), "{q}");
        let oss = shape(&preset("gpt-oss-20b").unwrap());
        assert!(oss.contains("swiglu-oss + bias, topk-softmax router + bias, bf16"), "{oss}");
    }
}
