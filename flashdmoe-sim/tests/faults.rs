//! Fault injection: delayed, reordered and duplicated signals leave the output correct; a lost
//! signal or a stale epoch ends in a typed timeout naming the rank, role and signal.

mod common;

use std::time::Duration;

use common::{check, data, traced};
use flashdmoe_core::{Backend, BackendError, ForwardOptions, Layer, MoeConfig, TimeoutReport};
use flashdmoe_sim::{FaultPlan, SignalId, SimBackend, SimOptions};

fn config() -> MoeConfig {
    MoeConfig {
        world: 3,
        tokens_per_rank: 20,
        hidden: 64,
        inter: 64,
        experts: 4,
        ..MoeConfig::default()
    }
}

fn with_faults(faults: FaultPlan) -> SimOptions {
    SimOptions { processors_per_rank: 2, subscribers_per_rank: 2, faults, ..SimOptions::default() }
}

#[test]
fn delayed_reordered_and_duplicated_signals_keep_the_output() {
    let config = config();
    let (weights, inputs) = data(&config, 8);
    let clean = SimBackend::default().build(&config, &weights).unwrap();
    let want = clean.forward(&inputs, &ForwardOptions::default()).unwrap();
    for faults in [
        FaultPlan { seed: 1, max_delay: Duration::from_millis(3), ..FaultPlan::none() },
        FaultPlan { seed: 2, duplicate: true, ..FaultPlan::none() },
        FaultPlan {
            seed: 3,
            max_delay: Duration::from_millis(2),
            duplicate: true,
            ..FaultPlan::none()
        },
    ] {
        let layer = SimBackend::new(with_faults(faults)).build(&config, &weights).unwrap();
        // Twice: a delayed or duplicated signal of one forward must not disturb the next.
        for _ in 0..2 {
            let out = layer.forward(&inputs, &traced()).unwrap();
            check(&layer, &weights, &inputs, &out);
            for (a, b) in out.ranks.iter().zip(&want.ranks) {
                assert_eq!(a.output, b.output);
            }
        }
    }
}

/// Runs every rank's forward on its own thread and returns each rank's result.
fn forward_all(faults: FaultPlan) -> Vec<Result<(), BackendError>> {
    let config = config();
    let (weights, inputs) = data(&config, 9);
    let layer = SimBackend::new(with_faults(faults)).build(&config, &weights).unwrap();
    let options = ForwardOptions { trace: false, timeout: Duration::from_secs(1) };
    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(r, input)| {
                let (layer, options) = (&layer, &options);
                s.spawn(move || layer.forward_rank(r as u32, input, options).map(|_| ()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn timeout(result: &Result<(), BackendError>) -> &TimeoutReport {
    match result {
        Err(BackendError::Timeout(report)) => report,
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn a_lost_dispatch_signal_is_a_timeout_naming_it() {
    // Rank 0's zero-or-more-row packet for rank 2's expert: only rank 2 waits for it directly.
    let lost = SignalId::Dispatch { source: 0, owner: 2, local_expert: 0 };
    let results = forward_all(FaultPlan { lost: vec![lost], ..FaultPlan::none() });
    let report = timeout(&results[2]);
    assert_eq!(report.rank, 2);
    assert!(report.role.starts_with("subscriber"), "{report}");
    assert_eq!(report.awaited, "dispatch signal from rank 0 for local expert 0");
    assert_eq!(report.expected_epoch, 1);
    assert_eq!(report.seen, 0, "never written");
}

#[test]
fn a_stale_epoch_is_a_timeout_showing_the_epoch_seen() {
    let stale = SignalId::Dispatch { source: 1, owner: 0, local_expert: 1 };
    let results = forward_all(FaultPlan { stale: vec![stale], ..FaultPlan::none() });
    let report = timeout(&results[0]);
    assert_eq!((report.rank, report.expected_epoch), (0, 1));
    assert_eq!(report.awaited, "dispatch signal from rank 1 for local expert 1");
    // Epoch 1's predecessor wraps to u32::MAX.
    assert_eq!(report.seen >> 32, u32::MAX as u64, "{report}");
}

#[test]
fn a_lost_return_signal_is_a_timeout_naming_the_tile() {
    let config = config();
    let (weights, inputs) = data(&config, 9);
    // Find a tile rank 1 is owed: the first row tile it sent to any expert.
    let layer = SimBackend::default().build(&config, &weights).unwrap();
    let out = layer.forward(&inputs, &ForwardOptions::default()).unwrap();
    let plan = layer.routing_plan(&out.ranks).unwrap();
    let g = *layer.layout().geometry();
    let (owner, local_expert) = (0..g.world)
        .flat_map(|o| (0..g.local_experts).map(move |e| (o, e)))
        .find(|&(o, e)| plan.source(1).rows(o, e) > 0)
        .expect("rank 1 routes something");
    let lost = SignalId::Return { owner, source: 1, local_expert, row_tile: 0, col_tile: 1 };
    let results = forward_all(FaultPlan { lost: vec![lost], ..FaultPlan::none() });
    let report = timeout(&results[1]);
    assert_eq!(report.rank, 1);
    assert_eq!(
        report.awaited,
        format!(
            "return signal from rank {owner} for local expert {local_expert}, row tile 0, column tile 1"
        )
    );
    assert_eq!(report.seen, 0);
    // Ranks that were not owed that tile finish normally.
    assert!(results.iter().enumerate().all(|(r, res)| r == 1 || res.is_ok()), "{results:?}");
}
