//! `--back-to-back K` of `flashdmoe run --backend cuda` (issue 14 item 7): the latency a model
//! sees, measured the same way in one process driving every GPU and in one process per GPU.
//! After the host path's forwards (verified against the oracle), K device-resident forwards
//! (`CudaLayer::forward_device`) are queued back to back on each GPU's own stream after a
//! group barrier (across processes; nothing to wait for in one process), timed by the events
//! around them on each GPU: `(end - start) / K`. The slowest GPU's is the layer's. The last
//! output must be bitwise the host path's, else the command fails: no time of unverified work.
//!
//! Why not the host path's times across processes: each process's host call is ~100 ms
//! (staging, readback, decoding), the processes drift apart by milliseconds, and a kernel's
//! events then include the time it spins waiting for the other process's kernel (run 28:
//! 5.591 ms on rank 1 against 0.371 ms on rank 0).

use std::time::Duration;

use flashdmoe::bench::resident::{BackToBack, BackToBackOptions, back_to_back_all};
use flashdmoe::core::{MoeConfig, RankOutput};
use flashdmoe::cuda::{CudaLayer, ProcessGroup};

use super::CliError;

/// Untimed device-resident forwards before the timed ones.
const WARMUP: usize = 5;

/// One process's measurement as it travels to the others (`all_gather`): whether the last
/// output matched, then each GPU's device time a forward.
pub(super) fn encode(m: &BackToBack) -> Vec<u8> {
    let times: Vec<String> = m.per_gpu_ms.iter().map(|t| format!("{t:e}")).collect();
    format!("{} {}", u8::from(m.same), times.join(",")).into_bytes()
}

/// [`encode`]'s inverse: `(same, per GPU ms)`.
pub(super) fn decode(blob: &[u8]) -> Result<(bool, Vec<f64>), String> {
    let text = std::str::from_utf8(blob).map_err(|e| format!("not UTF-8: {e}"))?;
    let (same, times) = text.split_once(' ').ok_or_else(|| format!("{text:?}: no times"))?;
    let same = match same {
        "1" => true,
        "0" => false,
        other => return Err(format!("{other:?} is not 0 or 1")),
    };
    let times = times
        .split(',')
        .map(|t| t.parse::<f64>().map_err(|e| format!("{t:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((same, times))
}

/// The one line both modes print, e.g. `back to back: 0.372 ms a forward (slowest of 2 GPUs,
/// one process per GPU, 200 forwards; per GPU 0.371, 0.372 ms); last output bitwise = the
/// host path's`.
pub(super) fn line(per_gpu_ms: &[f64], calls: usize, mode: &str, same: bool) -> String {
    let slowest = per_gpu_ms.iter().copied().fold(0.0, f64::max);
    let each: Vec<String> = per_gpu_ms.iter().map(|t| format!("{t:.3}")).collect();
    format!(
        "back to back: {slowest:.3} ms a forward (slowest of {} GPUs, {mode}, {calls} \
         device-resident forwards queued after a barrier, events around them / {calls}; per GPU \
         {} ms); last output {}",
        per_gpu_ms.len(),
        each.join(", "),
        if same { "bitwise = the host path's (verified)" } else { "DIFFERS from the host path's" }
    )
}

/// The second line of the one-process mode: the spread of the forwards on the slowest GPU,
/// e.g. `per forward: median 4.36 ms, first 4.35, last 5.20, max 5.31`. The first line's mean
/// hides drift (a GPU that slows as it heats over a long run) and outliers; this shows them.
pub(super) fn spread_line(forwards_ms: &[f64]) -> Option<String> {
    let (&first, &last) = (forwards_ms.first()?, forwards_ms.last()?);
    let mut sorted = forwards_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    Some(format!(
        "per forward: median {median:.3} ms, first {first:.3}, last {last:.3}, max {max:.3}"
    ))
}

fn failed(e: String) -> CliError {
    CliError::Failed(e)
}

fn verdict(same: bool) -> Result<(), CliError> {
    if same {
        Ok(())
    } else {
        Err(CliError::Mismatch(
            "the last back-to-back device-resident forward differs from the host path's".into(),
        ))
    }
}

/// One process driving every GPU of `layer`: `inputs` are every rank's, `host` the host
/// path's verified outputs of them.
pub(super) fn single(
    layer: &CudaLayer,
    config: &MoeConfig,
    inputs: &[Vec<f32>],
    host: &[RankOutput],
    calls: u32,
    timeout: Duration,
) -> Result<(), CliError> {
    let options = BackToBackOptions { calls: calls as usize, warmup: WARMUP, timeout };
    let m =
        back_to_back_all(layer, config, inputs, host, options, &mut || Ok(())).map_err(failed)?;
    let mode = if m.per_gpu_ms.len() == 1 { "one process" } else { "one process for all" };
    println!("{}", line(&m.per_gpu_ms, m.calls, mode, m.same));
    if let Some(spread) = spread_line(&m.slowest_per_forward()) {
        println!("{spread}");
    }
    verdict(m.same)
}

/// One process of a world of processes: this process's ranks' `inputs` and verified `host`
/// outputs; every process measures its GPU after a group barrier and every process prints
/// the whole group's line.
pub(super) fn process(
    layer: &CudaLayer,
    group: &ProcessGroup,
    config: &MoeConfig,
    inputs: &[Vec<f32>],
    host: &[RankOutput],
    calls: u32,
    timeout: Duration,
) -> Result<(), CliError> {
    let options = BackToBackOptions { calls: calls as usize, warmup: WARMUP, timeout };
    let mut barrier = || group.barrier().map_err(|e| format!("group barrier: {e}"));
    let m = back_to_back_all(layer, config, inputs, host, options, &mut barrier).map_err(failed)?;
    let all = group.all_gather(&encode(&m))?;
    let (mut same, mut per_gpu) = (true, Vec::new());
    for (rank, blob) in all.iter().enumerate() {
        let (s, t) = decode(blob).map_err(|e| failed(format!("rank {rank}'s times: {e}")))?;
        same &= s;
        per_gpu.extend(t);
    }
    println!("{}", line(&per_gpu, m.calls, "one process per GPU", same));
    verdict(same)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_travel_between_processes_unchanged() {
        let m = BackToBack {
            calls: 200,
            per_gpu_ms: vec![0.371_234_5, 1.0 / 3.0],
            forwards_ms: vec![],
            same: false,
        };
        let (same, times) = decode(&encode(&m)).unwrap();
        assert!(!same);
        assert_eq!(times, m.per_gpu_ms);
        assert!(decode(b"2 1.0").is_err());
        assert!(decode(b"1").is_err());
        assert!(decode(b"1 x").is_err());
    }

    #[test]
    fn the_spread_line_shows_drift_the_mean_hides() {
        let l = spread_line(&[4.35, 4.36, 4.37, 5.2, 5.3]).unwrap();
        assert_eq!(l, "per forward: median 4.370 ms, first 4.350, last 5.300, max 5.300");
        assert_eq!(spread_line(&[]), None);
    }

    #[test]
    fn the_line_names_the_slowest_gpu_and_what_it_measures() {
        let l = line(&[0.371, 0.452], 200, "one process per GPU", true);
        assert!(l.starts_with("back to back: 0.452 ms a forward (slowest of 2 GPUs, one process per GPU, 200 device-resident forwards"), "{l}");
        assert!(l.contains("per GPU 0.371, 0.452 ms") && l.contains("bitwise = the host"), "{l}");
        assert!(line(&[0.4], 10, "one process", false).contains("DIFFERS"));
    }
}
