//! The figures of GPU measurements (ours and the baselines timed on a GPU), each drawn only
//! when its data can make a line or a bar, and otherwise named with the reason:
//!
//! * `latency-vs-tokens.svg`: the paper layer (cf1) on one GPU over the tokens per GPU, at
//!   E = 8 (solid) and E = 32 (dashed), per implementation, with those layers' floors; drawn
//!   when some implementation has two or more token counts;
//! * `latency-vs-experts.svg`: the same layer over E at the token count with the most expert
//!   counts, with its floor; drawn when some implementation has two or more expert counts;
//! * `speedup.svg`: baseline median / our median per layer both ran (above 1: ours faster);
//! * `percent-of-floor.svg`: floor / median per layer of ours, ours and its baselines, with
//!   the 1.3x-of-floor target;
//! * `weak-scaling.svg`: T = 8192 per GPU, E = 32 over the GPUs (one rank each), with the ideal
//!   (flat at our one-GPU time); drawn when some implementation has two or more world sizes.
//!
//! Times are drawn as medians with their p10-p90 spread.

use crate::chart::{BarChart, Bars, LineChart, Point, REFERENCE, Scale, Series, Stroke};
use crate::error::BenchError;
use crate::record::{IMPL_CUDA, IMPL_CUDA_VIRTUAL, Record};

use super::figure::{Figure, color};
use super::select::{Measured, implementations, pairs, paper_cf1, short_label};

/// Every GPU figure, in page order.
pub fn figures(gpu: &[&Measured]) -> Result<Vec<Figure>, BenchError> {
    Ok(vec![
        latency_vs_tokens(gpu)?,
        latency_vs_experts(gpu)?,
        speedup(gpu)?,
        percent_of_floor(gpu)?,
        weak_scaling(gpu)?,
    ])
}

const PAPER: &str = "paper layer: H = I = 2048, top-2, ReLU, bf16, capacity factor 1";

/// A measured point: the median with its p10-p90 spread.
fn timed(x: f64, r: &Record) -> Point {
    Point { x, y: r.median_ms, spread: Some((r.p10_ms, r.p90_ms)) }
}

/// One series per implementation of the `chosen` records over `x`.
fn by_implementation(
    chosen: &[&Measured],
    x: impl Fn(&Record) -> f64,
    suffix: &str,
    stroke: Stroke,
) -> Vec<Series> {
    implementations(chosen.iter().map(|m| &m.value))
        .into_iter()
        .map(|imp| Series {
            name: format!("{imp}{suffix}"),
            points: chosen
                .iter()
                .filter(|m| m.implementation == imp)
                .map(|m| timed(x(m), m))
                .collect(),
            color: color(&imp),
            stroke,
        })
        .collect()
}

/// The floor of the `chosen` records over `x` (the smallest recorded at each x), if any.
fn floor(chosen: &[&Measured], x: impl Fn(&Record) -> f64, name: String) -> Option<Series> {
    let mut points: Vec<Point> = Vec::new();
    for m in chosen {
        let Some(f) = m.floor_ms else { continue };
        match points.iter_mut().find(|p| p.x == x(m)) {
            Some(p) => p.y = p.y.min(f),
            None => points.push(Point { x: x(m), y: f, spread: None }),
        }
    }
    (!points.is_empty()).then_some(Series {
        name,
        points,
        color: REFERENCE,
        stroke: Stroke::Reference,
    })
}

/// A chart of median latencies (log scale) over a power-of-two x axis.
fn latency_chart(title: String, x_label: &str, series: Vec<Series>) -> LineChart {
    LineChart {
        title,
        x_label: x_label.into(),
        y_label: "median latency per forward (ms)".into(),
        x_scale: Scale::Log2,
        y_scale: Scale::Log10,
        series,
    }
}

/// Whether some measured series has two or more distinct x values.
fn has_a_line(series: &[Series]) -> bool {
    series.iter().filter(|s| s.stroke != Stroke::Reference).any(|s| {
        let mut xs: Vec<f64> = s.points.iter().map(|p| p.x).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        xs.len() >= 2
    })
}

fn latency_vs_tokens(gpu: &[&Measured]) -> Result<Figure, BenchError> {
    const FILE: &str = "latency-vs-tokens.svg";
    const TITLE: &str = "Latency vs tokens per GPU";
    let tokens = |r: &Record| f64::from(r.config.tokens_per_rank);
    let mut series = Vec::new();
    let mut floors = Vec::new();
    for (e, stroke) in [(8, Stroke::Solid), (32, Stroke::Dashed)] {
        let chosen: Vec<&Measured> = gpu
            .iter()
            .copied()
            .filter(|m| paper_cf1(&m.config) && m.world == 1 && m.config.experts == e)
            .collect();
        series.extend(by_implementation(&chosen, tokens, &format!(", E = {e}"), stroke));
        floors.extend(floor(&chosen, tokens, format!("floor, E = {e}")));
    }
    if !has_a_line(&series) {
        return Ok(Figure::not_drawn(
            FILE,
            TITLE,
            "no implementation has the paper layer (cf1) on one GPU at E = 8 or E = 32 for two or \
             more token counts",
        ));
    }
    series.extend(floors);
    let chart =
        latency_chart(format!("Latency vs tokens, one GPU ({PAPER})"), "tokens per GPU", series);
    Figure::drawn(FILE, TITLE, chart.render())
}

fn latency_vs_experts(gpu: &[&Measured]) -> Result<Figure, BenchError> {
    const FILE: &str = "latency-vs-experts.svg";
    const TITLE: &str = "Latency vs experts";
    let one_gpu: Vec<&Measured> =
        gpu.iter().copied().filter(|m| paper_cf1(&m.config) && m.world == 1).collect();
    // The token count with the most expert counts (the larger on a tie).
    let experts_at = |t: u32| {
        let mut e: Vec<u32> = one_gpu
            .iter()
            .filter(|m| m.config.tokens_per_rank == t)
            .map(|m| m.config.experts)
            .collect();
        e.sort_unstable();
        e.dedup();
        e.len()
    };
    let best = one_gpu.iter().map(|m| m.config.tokens_per_rank).max_by_key(|&t| (experts_at(t), t));
    let experts = |r: &Record| f64::from(r.config.experts);
    let (mut series, t) = match best {
        Some(t) => {
            let chosen: Vec<&Measured> =
                one_gpu.iter().copied().filter(|m| m.config.tokens_per_rank == t).collect();
            let mut series = by_implementation(&chosen, experts, "", Stroke::Solid);
            if has_a_line(&series) {
                series.extend(floor(&chosen, experts, "floor".into()));
            }
            (series, t)
        }
        None => (Vec::new(), 0),
    };
    if !has_a_line(&series) {
        return Ok(Figure::not_drawn(
            FILE,
            TITLE,
            "no implementation has the paper layer (cf1) on one GPU at one token count for two \
             or more expert counts",
        ));
    }
    series.sort_by_key(|s| s.stroke == Stroke::Reference);
    let chart = latency_chart(
        format!("Latency vs experts at T = {t} per GPU, one GPU (paper layer, cf1)"),
        "experts E",
        series,
    );
    Figure::drawn(FILE, TITLE, chart.render())
}

fn speedup(gpu: &[&Measured]) -> Result<Figure, BenchError> {
    const FILE: &str = "speedup.svg";
    const TITLE: &str = "Speedup over each baseline";
    let pairs: Vec<_> = pairs(gpu).into_iter().filter(|(_, b)| !b.is_empty()).collect();
    if pairs.is_empty() {
        return Ok(Figure::not_drawn(
            FILE,
            TITLE,
            "no GPU result of ours (one rank per GPU) has a baseline result of the same layer \
             and world",
        ));
    }
    let baselines = implementations(pairs.iter().flat_map(|(_, b)| b.iter().map(|m| &m.value)));
    let bars = baselines
        .iter()
        .map(|imp| Bars {
            name: format!("vs {imp}"),
            values: pairs
                .iter()
                .map(|(o, b)| {
                    b.iter().find(|b| &b.implementation == imp).map(|b| b.median_ms / o.median_ms)
                })
                .collect(),
            color: color(imp),
        })
        .collect();
    let chart = BarChart {
        title: "Speedup of flashdmoe-cuda: baseline median / flashdmoe median".into(),
        value_label: "speedup (x; above 1: flashdmoe is faster)".into(),
        categories: pairs.iter().map(|(o, _)| short_label(o)).collect(),
        bars,
        references: vec![(1.0, "1x: same speed".into())],
        value_text: |v| format!("{v:.2}x"),
        full_scale: None,
    };
    Figure::drawn(FILE, TITLE, chart.render())
}

fn percent_of_floor(gpu: &[&Measured]) -> Result<Figure, BenchError> {
    const FILE: &str = "percent-of-floor.svg";
    const TITLE: &str = "Percent of the floor";
    let pairs: Vec<_> =
        pairs(gpu).into_iter().filter(|(o, _)| o.percent_of_floor().is_some()).collect();
    if pairs.is_empty() {
        return Ok(Figure::not_drawn(FILE, TITLE, "no GPU result of ours records a floor"));
    }
    let ours = implementations(pairs.iter().map(|(o, _)| &o.value));
    let baselines = implementations(pairs.iter().flat_map(|(_, b)| b.iter().map(|m| &m.value)));
    let bars = ours
        .iter()
        .chain(&baselines)
        .map(|imp| Bars {
            name: imp.clone(),
            values: pairs
                .iter()
                .map(|(o, b)| {
                    std::iter::once(o)
                        .chain(b)
                        .find(|m| &m.implementation == imp)
                        .and_then(|m| m.percent_of_floor())
                })
                .collect(),
            color: color(imp),
        })
        .filter(|b: &Bars| b.values.iter().any(Option::is_some)) // the ceiling has none
        .collect();
    let chart = BarChart {
        title: "Percent of the floor: floor / median (100% = at the floor)".into(),
        value_label: "% of the floor (max(FLOPs / peak, bytes / bandwidth), H200)".into(),
        categories: pairs.iter().map(|(o, _)| short_label(o)).collect(),
        bars,
        references: vec![(100.0 / 1.3, "target: within 1.3x of the floor (77%)".into())],
        value_text: |v| format!("{v:.0}%"),
        full_scale: Some(100.0),
    };
    Figure::drawn(FILE, TITLE, chart.render())
}

fn weak_scaling(gpu: &[&Measured]) -> Result<Figure, BenchError> {
    const FILE: &str = "weak-scaling.svg";
    const TITLE: &str = "Weak scaling";
    let chosen: Vec<&Measured> = gpu
        .iter()
        .copied()
        .filter(|m| {
            paper_cf1(&m.config)
                && (m.config.tokens_per_rank, m.config.experts) == (8192, 32)
                && m.implementation != IMPL_CUDA_VIRTUAL
        })
        .collect();
    let world = |r: &Record| f64::from(r.world);
    let mut series = by_implementation(&chosen, world, "", Stroke::Solid);
    if !has_a_line(&series) {
        return Ok(Figure::not_drawn(
            FILE,
            TITLE,
            "no implementation has the paper layer (cf1) at T = 8192 per GPU, E = 32 on two or \
             more GPU counts",
        ));
    }
    let gpus = chosen.iter().map(|m| f64::from(m.world));
    let (lo, hi) = gpus.clone().fold((f64::INFINITY, 0.0f64), |(a, b), w| (a.min(w), b.max(w)));
    if let Some(one) = chosen.iter().find(|m| m.implementation == IMPL_CUDA && m.world == 1) {
        let flat = |x| Point { x, y: one.median_ms, spread: None };
        series.push(Series {
            name: "ideal: flashdmoe-cuda's 1-GPU time".into(),
            points: vec![flat(lo), flat(hi)],
            color: REFERENCE,
            stroke: Stroke::Reference,
        });
    }
    let chart = latency_chart(
        "Weak scaling: T = 8192 tokens per GPU, E = 32 (paper layer, cf1)".into(),
        "GPUs (one rank each)",
        series,
    );
    Figure::drawn(FILE, TITLE, chart.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::svg_text::parse;
    use crate::record::tests::ours;
    use crate::record::tflops;
    use crate::results::Sourced;

    fn at(tokens: u32, experts: u32, world: u32, implementation: &str, median_ms: f64) -> Measured {
        let mut r = ours(median_ms, "cuda");
        r.config.tokens_per_rank = tokens;
        r.config.experts = experts;
        r.world = world;
        r.implementation = implementation.into();
        r.tflops = tflops(r.flops, median_ms);
        Sourced { source: "x.jsonl".into(), value: r }
    }

    fn texts(f: &Figure) -> Vec<String> {
        parse(f.svg.as_ref().unwrap()).unwrap().0
    }

    #[test]
    fn one_x_value_draws_no_line_and_says_why() {
        let records =
            [at(16384, 8, 1, IMPL_CUDA, 1.954), at(16384, 8, 1, "torch-grouped-graph", 1.475)];
        let refs: Vec<&Measured> = records.iter().collect();
        let figures = figures(&refs).unwrap();
        let why =
            |file: &str| figures.iter().find(|f| f.file == file).unwrap().svg.clone().unwrap_err();
        assert!(why("latency-vs-tokens.svg").contains("two or more token counts"));
        assert!(why("latency-vs-experts.svg").contains("two or more expert counts"));
        assert!(why("weak-scaling.svg").contains("two or more GPU counts"));
        let speedup = figures.iter().find(|f| f.file == "speedup.svg").unwrap();
        assert!(texts(speedup).iter().any(|t| t == "0.75x"));
    }

    #[test]
    fn latency_vs_experts_draws_its_floor() {
        let records = [
            at(16384, 8, 1, IMPL_CUDA, 1.954),
            at(16384, 32, 1, IMPL_CUDA, 1.990),
            at(16384, 128, 1, IMPL_CUDA, 2.014),
            at(4096, 8, 1, IMPL_CUDA, 0.545),
        ];
        let refs: Vec<&Measured> = records.iter().collect();
        let figure = latency_vs_experts(&refs).unwrap();
        let t = texts(&figure);
        assert!(t.iter().any(|t| t.contains("T = 16384")), "{t:?}");
        for x in ["8", "32", "128", "floor", "experts E"] {
            assert!(t.iter().any(|t| t == x), "{x:?} in {t:?}");
        }
        // The floor is a drawn line (a dashed series is drawn as several path segments).
        let svg = figure.svg.unwrap();
        assert!(svg.matches("stroke=\"#555555\"").count() >= 2, "{svg}");
    }

    #[test]
    fn weak_scaling_leaves_out_virtual_ranks_and_draws_the_ideal() {
        let records = [
            at(8192, 32, 1, IMPL_CUDA, 0.989),
            at(8192, 32, 2, IMPL_CUDA, 1.078),
            at(8192, 32, 2, IMPL_CUDA_VIRTUAL, 1.928),
            at(8192, 32, 2, "torch-ep-a2a-graph", 1.356),
        ];
        let refs: Vec<&Measured> = records.iter().collect();
        let t = texts(&weak_scaling(&refs).unwrap());
        assert!(t.iter().any(|t| t == "ideal: flashdmoe-cuda's 1-GPU time"), "{t:?}");
        assert!(t.iter().any(|t| t == "torch-ep-a2a-graph"));
        assert!(!t.iter().any(|t| t.contains("virtual")), "{t:?}");
    }
}
