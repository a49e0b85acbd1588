//! Line and bar charts drawn with the [`svg`](crate::svg) writer.
//!
//! Invariants: a chart maps only finite, positive-where-logarithmic values (others are left
//! out, never drawn at a bogus place); axes always have at least one tick; the output is the
//! writer's well-formed SVG whatever the data (empty series included).

use crate::svg::{Anchor, Svg};

/// An axis scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Linear from 0.
    Linear,
    /// Logarithmic with ticks at powers of two (token and expert counts, world sizes).
    Log2,
    /// Logarithmic with ticks at 1, 2, 5 x 10^n (times).
    Log10,
}

/// How a series' line is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    /// Solid.
    Solid,
    /// Dashed.
    Dashed,
    /// Thin and dashed, for reference lines such as floors.
    Reference,
}

/// One line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points, drawn in x order.
    pub points: Vec<(f64, f64)>,
    /// Colour (any SVG colour).
    pub color: String,
    /// Line style.
    pub stroke: Stroke,
}

/// A chart of lines over a numeric x axis.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    /// Title, drawn above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X scale.
    pub x_scale: Scale,
    /// Y scale.
    pub y_scale: Scale,
    /// The lines.
    pub series: Vec<Series>,
}

/// One set of bars of a [`BarChart`]: one value (or none) per category.
#[derive(Clone, Debug, PartialEq)]
pub struct Bars {
    /// Legend entry.
    pub name: String,
    /// Per category, in the chart's category order.
    pub values: Vec<Option<f64>>,
    /// Colour.
    pub color: String,
}

/// Grouped bars over named categories, linear y from 0.
#[derive(Clone, Debug)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Category labels along x; a `\n` starts a second line.
    pub categories: Vec<String>,
    /// The bar sets.
    pub bars: Vec<Bars>,
    /// Horizontal reference lines (dashed, listed in the legend): value and label.
    pub references: Vec<(f64, String)>,
    /// Writes a bar's value above it.
    pub value_label: fn(f64) -> String,
}

const WIDTH: f64 = 760.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 44.0;

/// A mapping of data values to one axis's pixels, with its ticks.
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// An axis covering `values` (finite, and positive for the log scales; others ignored).
    fn fit(scale: Scale, values: impl IntoIterator<Item = f64>) -> Axis {
        let usable: Vec<f64> = values
            .into_iter()
            .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0))
            .collect();
        let min = usable.iter().copied().fold(f64::INFINITY, f64::min);
        let max = usable.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match scale {
            Scale::Linear => {
                let top = if max.is_finite() && max > 0.0 { max * 1.1 } else { 1.0 };
                let step = nice_step(top / 5.0);
                let ticks: Vec<f64> = (0..)
                    .map(|i| i as f64 * step)
                    .take_while(|t| *t <= top + step * 1e-9)
                    .collect();
                Axis { scale, lo: 0.0, hi: top.max(step), ticks }
            }
            Scale::Log2 => {
                let (lo, hi) = if min.is_finite() {
                    (min.log2().floor(), max.log2().ceil())
                } else {
                    (0.0, 1.0)
                };
                let (lo, hi) = if hi - lo < 1.0 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
                let every = ((hi - lo) / 8.0).ceil().max(1.0);
                let ticks = (0..)
                    .map(|i| lo + i as f64 * every)
                    .take_while(|e| *e <= hi)
                    .map(f64::exp2)
                    .collect();
                Axis { scale, lo, hi, ticks }
            }
            Scale::Log10 => {
                let (lo, hi) = if min.is_finite() {
                    ((min / 1.25).log10(), (max * 1.25).log10())
                } else {
                    (-1.0, 1.0)
                };
                let ticks_with = |mantissas: &[f64]| -> Vec<f64> {
                    let mut ticks = Vec::new();
                    for decade in lo.floor() as i32..=hi.ceil() as i32 {
                        for m in mantissas {
                            let t = m * 10f64.powi(decade);
                            if (lo..=hi).contains(&t.log10()) {
                                ticks.push(t);
                            }
                        }
                    }
                    ticks
                };
                let mut ticks = ticks_with(&[1.0, 2.0, 5.0]);
                if ticks.len() < 3 {
                    // A narrow range: evenly spaced ticks of a nice step instead.
                    let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
                    let step = nice_step((b - a) / 8.0);
                    ticks = ((a / step).ceil() as i64..=(b / step).floor() as i64)
                        .map(|k| k as f64 * step)
                        .collect();
                }
                if ticks.is_empty() {
                    ticks.push(10f64.powf((lo + hi) / 2.0));
                }
                Axis { scale, lo, hi, ticks }
            }
        }
    }

    /// Position of `v` in `[0, 1]` along the axis; `None` for values the scale cannot show.
    fn unit(&self, v: f64) -> Option<f64> {
        let t = match self.scale {
            Scale::Linear => v,
            Scale::Log2 if v > 0.0 => v.log2(),
            Scale::Log10 if v > 0.0 => v.log10(),
            _ => return None,
        };
        let u = (t - self.lo) / (self.hi - self.lo);
        (u.is_finite() && (-1e-9..=1.0 + 1e-9).contains(&u)).then_some(u)
    }
}

/// A step of 1, 2 or 5 x 10^n at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw.is_finite() && raw > 0.0 { raw } else { 1.0 };
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

/// A tick label: at most three decimals, trailing zeros dropped.
fn tick_label(v: f64) -> String {
    if v >= 1000.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Title, axes box, grid and tick labels; returns the plot area `(x0, y0, w, h)`.
fn frame(
    svg: &mut Svg,
    title: &str,
    y_label: &str,
    y: &Axis,
    height: f64,
    bottom: f64,
) -> (f64, f64, f64, f64) {
    let (x0, y0) = (LEFT, TOP);
    let (w, h) = (WIDTH - LEFT - RIGHT, height - TOP - bottom);
    svg.text((WIDTH / 2.0, 26.0), title, 16.0, Anchor::Middle, 0.0);
    svg.rect(x0, y0, w, h, "#fafafa", Some("#888888"));
    for &t in &y.ticks {
        if let Some(u) = y.unit(t) {
            let py = y0 + h - u * h;
            svg.line((x0, py), (x0 + w, py), "#e0e0e0", 1.0, false);
            svg.text((x0 - 6.0, py + 4.0), &tick_label(t), 11.0, Anchor::End, 0.0);
        }
    }
    svg.text((18.0, y0 + h / 2.0), y_label, 12.0, Anchor::Middle, -90.0);
    (x0, y0, w, h)
}

/// A legend entry per `(name, color, stroke)` to the right of the plot.
fn legend(svg: &mut Svg, entries: &[(String, String, Stroke)]) {
    let x = WIDTH - RIGHT + 14.0;
    for (i, (name, color, stroke)) in entries.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 18.0;
        let width = if *stroke == Stroke::Reference { 1.5 } else { 2.5 };
        svg.line((x, y), (x + 22.0, y), color, width, *stroke != Stroke::Solid);
        svg.text((x + 28.0, y + 4.0), name, 11.0, Anchor::Start, 0.0);
    }
}

impl LineChart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let height = 440.0;
        let bottom = 56.0;
        let x =
            Axis::fit(self.x_scale, self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
        let y =
            Axis::fit(self.y_scale, self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        let mut svg = Svg::new(WIDTH, height);
        let (x0, y0, w, h) = frame(&mut svg, &self.title, &self.y_label, &y, height, bottom);
        for &t in &x.ticks {
            if let Some(u) = x.unit(t) {
                let px = x0 + u * w;
                svg.line((px, y0), (px, y0 + h), "#e0e0e0", 1.0, false);
                svg.text((px, y0 + h + 16.0), &tick_label(t), 11.0, Anchor::Middle, 0.0);
            }
        }
        svg.text((x0 + w / 2.0, y0 + h + 40.0), &self.x_label, 12.0, Anchor::Middle, 0.0);
        for s in &self.series {
            let mut pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter_map(|&(px, py)| Some((x0 + x.unit(px)? * w, y0 + h - y.unit(py)? * h)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let width = if s.stroke == Stroke::Reference { 1.5 } else { 2.5 };
            svg.polyline(&pts, &s.color, width, s.stroke != Stroke::Solid);
            if s.stroke != Stroke::Reference {
                for &p in &pts {
                    svg.circle(p, 3.5, &s.color);
                }
            }
        }
        let entries: Vec<_> =
            self.series.iter().map(|s| (s.name.clone(), s.color.clone(), s.stroke)).collect();
        legend(&mut svg, &entries);
        svg.finish()
    }
}

impl BarChart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let height = 470.0;
        let bottom = 110.0;
        let values = self.bars.iter().flat_map(|b| b.values.iter().flatten().copied());
        let y = Axis::fit(Scale::Linear, values.chain(self.references.iter().map(|r| r.0)));
        let mut svg = Svg::new(WIDTH, height);
        let (x0, y0, w, h) = frame(&mut svg, &self.title, &self.y_label, &y, height, bottom);
        let n = self.categories.len().max(1) as f64;
        let group = w / n;
        let bar = group * 0.8 / self.bars.len().max(1) as f64;
        for (c, label) in self.categories.iter().enumerate() {
            let gx = x0 + c as f64 * group;
            // Rotated by -30 degrees, ending under the group; each further line 12 px below the
            // previous one, perpendicular to the text.
            for (i, line) in label.lines().enumerate() {
                let d = 12.0 * i as f64;
                let at = (gx + group / 2.0 + d * 0.5, y0 + h + 14.0 + d * 0.866);
                svg.text(at, line, 10.0, Anchor::End, -30.0);
            }
            for (i, b) in self.bars.iter().enumerate() {
                let Some(v) = b.values.get(c).copied().flatten() else { continue };
                let Some(u) = y.unit(v) else { continue };
                let bx = gx + group * 0.1 + i as f64 * bar;
                svg.rect(bx, y0 + h - u * h, bar * 0.92, u * h, &b.color, None);
                let label = (self.value_label)(v);
                svg.text((bx + bar * 0.46, y0 + h - u * h - 3.0), &label, 9.0, Anchor::Middle, 0.0);
            }
        }
        for (v, _) in &self.references {
            if let Some(u) = y.unit(*v) {
                let py = y0 + h - u * h;
                svg.line((x0, py), (x0 + w, py), "#444444", 1.5, true);
            }
        }
        let bars = self.bars.iter().map(|b| (b.name.clone(), b.color.clone(), Stroke::Solid));
        let refs =
            self.references.iter().map(|r| (r.1.clone(), "#444444".into(), Stroke::Reference));
        let entries: Vec<_> = bars.chain(refs).collect();
        legend(&mut svg, &entries);
        svg.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svg::tests::well_formed;

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, color: "#1f77b4".into(), stroke: Stroke::Solid }
    }

    #[test]
    fn log_axes_tick_at_powers_and_decades() {
        let x = Axis::fit(Scale::Log2, [128.0, 4096.0, 16384.0]);
        assert_eq!(x.ticks, [128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0]);
        assert_eq!((x.unit(128.0), x.unit(16384.0)), (Some(0.0), Some(1.0)));
        assert_eq!(x.unit(0.0), None);
        let y = Axis::fit(Scale::Log10, [0.137, 1.954]);
        assert_eq!(y.ticks, [0.2, 0.5, 1.0, 2.0]);
        // A narrow range (1.18 to 2.49 after padding): steps of 0.2.
        let narrow = Axis::fit(Scale::Log10, [1.475, 1.99]);
        assert_eq!(narrow.ticks.len(), 7);
        assert!((narrow.ticks[0] - 1.2).abs() < 1e-12 && (narrow.ticks[6] - 2.4).abs() < 1e-12);
        let one = Axis::fit(Scale::Log2, [8.0]);
        assert_eq!(one.ticks, [4.0, 8.0, 16.0]);
        let wide = Axis::fit(Scale::Log2, [1.0, 65536.0]);
        assert!(wide.ticks.len() <= 9 && wide.ticks[0] == 1.0);
        assert!(!Axis::fit(Scale::Log10, []).ticks.is_empty());
    }

    #[test]
    fn linear_axes_start_at_zero_with_nice_steps() {
        let y = Axis::fit(Scale::Linear, [0.4, 8.9]);
        assert_eq!(y.ticks, [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert!(y.hi >= 8.9 * 1.1 - 1e-9);
        let empty = Axis::fit(Scale::Linear, [f64::NAN]).ticks;
        assert_eq!(empty.len(), 6);
        assert!(
            empty.iter().zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]).all(|(a, b)| (a - b).abs() < 1e-12)
        );
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(16384.0), "16384");
        assert_eq!(tick_label(2.0), "2");
    }

    #[test]
    fn line_charts_are_well_formed_svg_even_without_data() {
        let mut chart = LineChart {
            title: "latency vs tokens <E=8>".into(),
            x_label: "tokens per GPU".into(),
            y_label: "ms".into(),
            x_scale: Scale::Log2,
            y_scale: Scale::Log10,
            series: vec![
                series("ours", vec![(16384.0, 1.954), (128.0, 0.137), (4096.0, 0.545)]),
                series("bad", vec![(0.0, 1.0), (128.0, f64::NAN)]),
            ],
        };
        let doc = chart.render();
        let names = well_formed(&doc).unwrap();
        assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 1);
        assert_eq!(names.iter().filter(|n| *n == "circle").count(), 3);
        assert!(doc.contains("latency vs tokens &lt;E=8&gt;") && doc.contains(">16384<"));
        chart.series.clear();
        well_formed(&chart.render()).unwrap();
    }

    #[test]
    fn bar_charts_draw_one_bar_per_value_and_the_references() {
        let chart = BarChart {
            title: "speedup".into(),
            y_label: "x".into(),
            categories: vec!["T128 E8".into(), "T16384 E8\nH4096 swiglu".into()],
            bars: vec![
                Bars {
                    name: "graph".into(),
                    values: vec![Some(1.42), Some(0.75)],
                    color: "red".into(),
                },
                Bars { name: "eager".into(), values: vec![Some(8.9), None], color: "blue".into() },
            ],
            references: vec![(1.0, "parity".into())],
            value_label: |v| format!("{v:.2}x"),
        };
        let doc = chart.render();
        let names = well_formed(&doc).unwrap();
        // The background, the plot box and three bars.
        assert_eq!(names.iter().filter(|n| *n == "rect").count(), 2 + 3);
        assert!(doc.contains(">1.42x<") && doc.contains(">8.90x<") && doc.contains(">parity<"));
        // Title, 5 y ticks, y label, 3 category lines, 3 values, 3 legend entries (2 bars and
        // the reference line).
        assert_eq!(names.iter().filter(|n| *n == "text").count(), 16);
        assert!(doc.contains(">H4096 swiglu<"));
        let empty = BarChart { categories: vec![], bars: vec![], references: vec![], ..chart };
        well_formed(&empty.render()).unwrap();
    }
}
