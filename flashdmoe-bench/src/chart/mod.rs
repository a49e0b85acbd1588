//! Line and bar charts as SVG documents, drawn with `plotters` (its SVG backend: text stays
//! text, so no font library is involved).
//!
//! * [`axis`]: scales and ticks (powers of two for counts, 1-2-5 for times).
//! * [`LineChart`]: lines over a numeric x axis, each point with an optional spread (drawn as an
//!   error bar), reference lines such as floors drawn thin and dashed.
//! * [`BarChart`]: horizontal grouped bars, one row per bar, the category labels on the left
//!   and each bar's value written past its end; vertical reference lines. One row per bar
//!   means no two labels share a place, whatever the number of categories or the length of
//!   their names: the chart grows instead.
//!
//! Every chart has a title, axis labels with units, and its legend in a column to the right of
//! the plot, outside the data. This module knows nothing of records or layers.
//!
//! Invariant: a chart draws only finite values that its scales can show (others are left
//! out); rendering never panics, and a drawing error is returned as a message.

pub mod axis;

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub use axis::{Axis, Scale};

/// A colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    fn plotters(self) -> RGBColor {
        RGBColor(self.0, self.1, self.2)
    }
}

/// The colour of reference lines.
pub const REFERENCE: Rgb = Rgb(85, 85, 85);

/// How a line is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    /// Solid, with a marker per point.
    Solid,
    /// Dashed, with a marker per point.
    Dashed,
    /// Thin and dashed, no markers: a reference such as a floor.
    Reference,
}

/// One point of a [`Series`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// X value.
    pub x: f64,
    /// Y value.
    pub y: f64,
    /// Spread around `y` (for times: p10 and p90), drawn as an error bar.
    pub spread: Option<(f64, f64)>,
}

/// One line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points, drawn in x order.
    pub points: Vec<Point>,
    /// Colour.
    pub color: Rgb,
    /// Line style.
    pub stroke: Stroke,
}

/// Lines over a numeric x axis.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    /// Title, above the plot.
    pub title: String,
    /// X axis label, with its unit.
    pub x_label: String,
    /// Y axis label, with its unit.
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
    pub color: Rgb,
}

/// Horizontal grouped bars over named categories (module doc); the value axis is linear from
/// 0.
#[derive(Clone, Debug)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Value axis label, with its unit.
    pub value_label: String,
    /// Category names, top to bottom.
    pub categories: Vec<String>,
    /// The bar sets, drawn in this order within a category.
    pub bars: Vec<Bars>,
    /// Vertical reference lines (thin, dashed, listed in the legend): value and name.
    pub references: Vec<(f64, String)>,
    /// The text written past a bar's end.
    pub value_text: fn(f64) -> String,
    /// A value the axis reaches whatever the data (100 for percentages), if any.
    pub full_scale: Option<f64>,
}

const WIDTH: u32 = 860;
const LINE_HEIGHT: u32 = 500;
const FONT: &str = "sans-serif";
/// Font sizes as plotters takes them (it writes `size / 1.24` px into the SVG).
const TITLE_SIZE: f64 = 20.0;
const LABEL_SIZE: f64 = 15.0;
const DESC_SIZE: f64 = 16.0;
const VALUE_SIZE: f64 = 14.0;
/// One bar's row and the gap between categories (px).
const ROW: u32 = 20;
const GROUP_GAP: u32 = 12;

type DrawResult<T> = Result<T, String>;

/// An axis as plotters sees it: linear in axis units from `lo` to `hi`, with a tick (a grid
/// line and a label) at exactly `ticks` and nowhere else.
struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn of(axis: &Axis) -> Ticked {
        Ticked { lo: axis.lo, hi: axis.hi, ticks: axis.tick_units() }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    /// As plotters' own `f64` axis maps.
    fn map(&self, v: &f64, (from, to): (i32, i32)) -> i32 {
        if self.hi == self.lo {
            return (to - from) / 2;
        }
        let u = (v - self.lo) / (self.hi - self.lo);
        let length = f64::from(to - from);
        if to >= from {
            from + (length * u + 1e-3).floor() as i32
        } else {
            from + (length * u - 1e-3).ceil() as i32
        }
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}

/// A generous width of `text` at plotters font size `size` (px): an average glyph of a
/// sans-serif font is about half an em wide, this takes 0.6.
fn text_width(text: &str, size: f64) -> u32 {
    (text.chars().count() as f64 * 0.6 * size / 1.24).ceil() as u32
}

/// The legend column's width for `names`.
fn legend_width(names: impl Iterator<Item = impl AsRef<str>>) -> u32 {
    let widest = names.map(|n| text_width(n.as_ref(), LABEL_SIZE)).max().unwrap_or(0);
    (widest + 56).clamp(120, 320)
}

/// One legend entry's sample.
#[derive(Clone, Copy)]
enum Sample {
    Line(Rgb, Stroke),
    Block(Rgb),
}

/// The legend, one entry per row from the top of `area`.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(String, Sample)],
) -> DrawResult<()> {
    let style = (FONT, LABEL_SIZE).into_font().color(&BLACK);
    for (i, (name, sample)) in entries.iter().enumerate() {
        let y = 24 + 22 * i as i32;
        match *sample {
            Sample::Line(color, stroke) => {
                let shape = line_style(color, stroke);
                if stroke == Stroke::Solid {
                    area.draw(&PathElement::new([(6, y), (34, y)], shape)).map_err(err)?;
                } else {
                    for x in [6, 16, 26] {
                        area.draw(&PathElement::new([(x, y), (x + 6, y)], shape)).map_err(err)?;
                    }
                }
                if stroke != Stroke::Reference {
                    area.draw(&Circle::new((20, y), 4, color.plotters().filled())).map_err(err)?;
                }
            }
            Sample::Block(color) => {
                area.draw(&Rectangle::new([(10, y - 6), (30, y + 6)], color.plotters().filled()))
                    .map_err(err)?;
            }
        }
        area.draw(&Text::new(
            name.clone(),
            (42, y),
            style.clone().pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn line_style(color: Rgb, stroke: Stroke) -> ShapeStyle {
    let width = if stroke == Stroke::Reference { 1 } else { 2 };
    color.plotters().stroke_width(width)
}

/// A white canvas of `width x height` with `title` on top: the area below the title split
/// into the plot (left) and the legend column (right, `legend` px wide).
fn canvas<'a>(
    svg: &'a mut String,
    (width, height): (u32, u32),
    title: &str,
    legend: u32,
) -> DrawResult<(DrawingArea<SVGBackend<'a>, Shift>, DrawingArea<SVGBackend<'a>, Shift>)> {
    let root = SVGBackend::with_string(svg, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled(title, (FONT, TITLE_SIZE)).map_err(err)?;
    Ok(body.split_horizontally(width - legend))
}

impl LineChart {
    /// The chart as an SVG document.
    pub fn render(&self) -> DrawResult<String> {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let x = Axis::fit(self.x_scale, points().map(|p| p.x));
        let spreads = points().flat_map(|p| p.spread.map_or([p.y, p.y], |(a, b)| [a, b]));
        let y = Axis::fit(self.y_scale, points().map(|p| p.y).chain(spreads));
        let y_tick_width = y.ticks.iter().map(|&t| text_width(&axis::tick_label(t), LABEL_SIZE));
        let y_area = y_tick_width.max().unwrap_or(0) + 40;
        let legend = legend_width(self.series.iter().map(|s| &s.name));
        let mut svg = String::new();
        {
            let (plot, side) = canvas(&mut svg, (WIDTH, LINE_HEIGHT), &self.title, legend)?;
            let mut chart = ChartBuilder::on(&plot)
                .margin(14)
                .x_label_area_size(52)
                .y_label_area_size(y_area)
                .build_cartesian_2d(Ticked::of(&x), Ticked::of(&y))
                .map_err(err)?;
            let x_fmt = |u: &f64| axis::tick_label(x.value(*u));
            let y_fmt = |u: &f64| axis::tick_label(y.value(*u));
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .label_style((FONT, LABEL_SIZE))
                .axis_desc_style((FONT, DESC_SIZE))
                .bold_line_style(RGBColor(228, 228, 228))
                .axis_style(RGBColor(90, 90, 90))
                .draw()
                .map_err(err)?;
            for s in &self.series {
                // The points in axis units, in x order.
                let mut at: Vec<Point> = s
                    .points
                    .iter()
                    .filter_map(|p| {
                        let spread = p.spread.and_then(|(a, b)| Some((y.units(a)?, y.units(b)?)));
                        Some(Point { x: x.units(p.x)?, y: y.units(p.y)?, spread })
                    })
                    .collect();
                at.sort_by(|a, b| a.x.total_cmp(&b.x));
                let line: Vec<(f64, f64)> = at.iter().map(|p| (p.x, p.y)).collect();
                let style = line_style(s.color, s.stroke);
                match s.stroke {
                    Stroke::Solid => {
                        chart.draw_series(LineSeries::new(line, style)).map_err(err)?;
                    }
                    Stroke::Dashed => {
                        chart.draw_series(DashedLineSeries::new(line, 8, 5, style)).map_err(err)?;
                    }
                    Stroke::Reference => {
                        chart.draw_series(DashedLineSeries::new(line, 5, 4, style)).map_err(err)?;
                    }
                }
                if s.stroke == Stroke::Reference {
                    continue;
                }
                // A point with a spread is an error bar, whose marker is its filled centre; a
                // point without one gets the same marker alone.
                let filled = s.color.plotters().filled();
                let bars = at.iter().filter_map(|p| {
                    let (lo, hi) = p.spread?;
                    Some(ErrorBar::new_vertical(p.x, lo, p.y, hi, filled, 8))
                });
                chart.draw_series(bars).map_err(err)?;
                let marks = at
                    .iter()
                    .filter(|p| p.spread.is_none())
                    .map(|p| Circle::new((p.x, p.y), 4, filled));
                chart.draw_series(marks).map_err(err)?;
            }
            let entries: Vec<(String, Sample)> = self
                .series
                .iter()
                .map(|s| (s.name.clone(), Sample::Line(s.color, s.stroke)))
                .collect();
            draw_legend(&side, &entries)?;
            plot.present().map_err(err)?;
        }
        Ok(svg)
    }
}

/// Where a [`BarChart`]'s rows go: per category its first row and its row count (bars with a
/// value), in rows from the top, and the total height in rows.
fn bar_rows(chart: &BarChart) -> (Vec<(f64, usize)>, f64) {
    let gap = f64::from(GROUP_GAP) / f64::from(ROW);
    let mut top = gap / 2.0;
    let mut rows = Vec::with_capacity(chart.categories.len());
    for c in 0..chart.categories.len() {
        let n = chart.bars.iter().filter(|b| b.values.get(c).copied().flatten().is_some()).count();
        rows.push((top, n.max(1)));
        top += n.max(1) as f64 + gap;
    }
    (rows, top - gap / 2.0)
}

impl BarChart {
    /// The chart as an SVG document.
    pub fn render(&self) -> DrawResult<String> {
        let values = self.bars.iter().flat_map(|b| b.values.iter().flatten().copied());
        let longest = values.clone().map(|v| (self.value_text)(v)).max_by_key(|t| t.len());
        let max = values.clone().chain(self.references.iter().map(|r| r.0)).fold(0.0, f64::max);
        let (rows, total) = bar_rows(self);
        let legend = legend_width(
            self.bars
                .iter()
                .map(|b| b.name.as_str())
                .chain(self.references.iter().map(|r| r.1.as_str())),
        );
        let category_width =
            self.categories.iter().map(|c| text_width(c, LABEL_SIZE)).max().unwrap_or(0);
        let plot_width = WIDTH.saturating_sub(legend + category_width + 60).max(200);
        // Room past the longest bar for its value text.
        let room = longest.map_or(0, |t| text_width(&t, VALUE_SIZE) + 8);
        let stretch = f64::from(plot_width) / f64::from(plot_width.saturating_sub(room).max(100));
        let x = Axis::fit(Scale::Linear, [max * stretch, self.full_scale.unwrap_or(0.0)]);
        let height = 60 + 60 + (total * f64::from(ROW)).ceil() as u32;
        let mut svg = String::new();
        {
            let (plot, side) = canvas(&mut svg, (WIDTH, height), &self.title, legend)?;
            let centers: Vec<f64> =
                rows.iter().map(|&(top, n)| total - top - n as f64 / 2.0).collect();
            let mut chart = ChartBuilder::on(&plot)
                .margin(14)
                .x_label_area_size(52)
                .y_label_area_size(category_width + 16)
                .build_cartesian_2d(
                    Ticked::of(&x),
                    Ticked { lo: 0.0, hi: total, ticks: centers.clone() },
                )
                .map_err(err)?;
            let x_fmt = |u: &f64| axis::tick_label(*u);
            let y_fmt = |u: &f64| {
                let nearest = centers.iter().position(|c| (c - u).abs() < 1e-6);
                nearest.map_or_else(String::new, |i| self.categories[i].clone())
            };
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_desc(self.value_label.as_str())
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .label_style((FONT, LABEL_SIZE))
                .axis_desc_style((FONT, DESC_SIZE))
                .bold_line_style(RGBColor(228, 228, 228))
                .axis_style(RGBColor(90, 90, 90))
                .draw()
                .map_err(err)?;
            // Reference lines first: bars and value texts (on a white ground) go over them.
            for &(v, _) in &self.references {
                let Some(at) = x.units(v) else { continue };
                let style = line_style(REFERENCE, Stroke::Reference).stroke_width(2);
                chart
                    .draw_series(DashedLineSeries::new([(at, 0.0), (at, total)], 6, 4, style))
                    .map_err(err)?;
            }
            let text = (FONT, VALUE_SIZE)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center));
            let half = (f64::from(ROW) * 0.38) as i32;
            for (c, &(top, _)) in rows.iter().enumerate() {
                let mut row = 0;
                for b in &self.bars {
                    let Some(v) = b.values.get(c).copied().flatten() else { continue };
                    let (y0, y1) = (total - top - row as f64, total - top - row as f64 - 1.0);
                    row += 1;
                    let Some(end) = x.units(v) else { continue };
                    let inset = 0.12;
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(0.0, y0 - inset), (end, y1 + inset)],
                            b.color.plotters().filled(),
                        )))
                        .map_err(err)?;
                    let value = (self.value_text)(v);
                    let width = text_width(&value, VALUE_SIZE) as i32;
                    let label = EmptyElement::at((end, (y0 + y1) / 2.0))
                        + Rectangle::new([(3, -half), (width + 7, half)], WHITE.filled())
                        + Text::new(value, (5, 0), text.clone());
                    chart.draw_series(std::iter::once(label)).map_err(err)?;
                }
            }
            let bars = self.bars.iter().map(|b| (b.name.clone(), Sample::Block(b.color)));
            let refs = self
                .references
                .iter()
                .map(|r| (r.1.clone(), Sample::Line(REFERENCE, Stroke::Reference)));
            draw_legend(&side, &bars.chain(refs).collect::<Vec<_>>())?;
            plot.present().map_err(err)?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `doc` parsed as XML: the texts of its `<text>` elements and the names of all elements.
    pub(crate) fn parse(doc: &str) -> Result<(Vec<String>, Vec<String>), String> {
        let tree = roxmltree::Document::parse(doc).map_err(|e| e.to_string())?;
        if tree.root_element().tag_name().name() != "svg" {
            return Err("the root is not <svg>".into());
        }
        let texts = tree
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or_default().trim().to_owned())
            .collect();
        let names =
            tree.descendants().filter(|n| n.is_element()).map(|n| n.tag_name().name().to_owned());
        Ok((texts, names.collect()))
    }

    fn point(x: f64, y: f64) -> Point {
        Point { x, y, spread: Some((y * 0.99, y * 1.01)) }
    }

    fn series(name: &str, points: Vec<Point>, stroke: Stroke) -> Series {
        Series { name: name.into(), points, color: Rgb(31, 119, 180), stroke }
    }

    #[test]
    fn line_charts_draw_every_series_and_its_legend() {
        let mut chart = LineChart {
            title: "latency vs tokens <E=8>".into(),
            x_label: "tokens per GPU".into(),
            y_label: "median latency (ms)".into(),
            x_scale: Scale::Log2,
            y_scale: Scale::Log10,
            series: vec![
                series(
                    "ours",
                    vec![point(16384.0, 1.954), point(128.0, 0.137), point(4096.0, 0.545)],
                    Stroke::Solid,
                ),
                series(
                    "floor",
                    vec![point(128.0, 0.031), point(16384.0, 0.697)],
                    Stroke::Reference,
                ),
                series("bad", vec![point(0.0, 1.0), point(128.0, f64::NAN)], Stroke::Dashed),
            ],
        };
        let doc = chart.render().unwrap();
        let (texts, names) = parse(&doc).unwrap();
        for t in [
            "latency vs tokens <E=8>",
            "tokens per GPU",
            "median latency (ms)",
            "128",
            "16384",
            "0.2",
            "2",
            "ours",
            "floor",
            "bad",
        ] {
            assert!(texts.iter().any(|x| x == t), "no text {t:?} in {texts:?}");
        }
        // Three markers for ours (the centres of its error bars; the floor has none, the bad
        // points are left out), plus the legend markers of the two non-reference series.
        assert_eq!(names.iter().filter(|n| *n == "circle").count(), 3 + 2);
        chart.series.clear();
        parse(&chart.render().unwrap()).unwrap();
    }

    fn bar_chart() -> BarChart {
        BarChart {
            title: "speedup".into(),
            value_label: "speedup (x)".into(),
            categories: vec!["T128 E8 cf1".into(), "T16384 E8 cf1, H4096 swiglu".into()],
            bars: vec![
                Bars {
                    name: "graph".into(),
                    values: vec![Some(1.42), Some(0.75)],
                    color: Rgb(214, 39, 40),
                },
                Bars {
                    name: "eager".into(),
                    values: vec![Some(8.9), None],
                    color: Rgb(255, 127, 14),
                },
            ],
            references: vec![(1.0, "parity".into())],
            value_text: |v| format!("{v:.2}x"),
            full_scale: None,
        }
    }

    #[test]
    fn bar_charts_give_every_bar_its_own_row_and_label() {
        let chart = bar_chart();
        let (rows, total) = bar_rows(&chart);
        // Two bars, then one: no two bars share a row.
        assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [2, 1]);
        assert!(rows[1].0 >= rows[0].0 + 2.0 && total >= rows[1].0 + 1.0);
        let doc = chart.render().unwrap();
        let (texts, names) = parse(&doc).unwrap();
        for t in [
            "1.42x",
            "8.90x",
            "0.75x",
            "parity",
            "graph",
            "eager",
            "T128 E8 cf1",
            "T16384 E8 cf1, H4096 swiglu",
            "speedup (x)",
        ] {
            assert_eq!(texts.iter().filter(|x| *x == t).count(), 1, "{t:?} in {texts:?}");
        }
        // Three bars and two legend blocks (the background is a rect too).
        assert!(names.iter().filter(|n| *n == "rect").count() >= 5);
        let empty = BarChart { categories: vec![], bars: vec![], references: vec![], ..chart };
        parse(&empty.render().unwrap()).unwrap();
    }

    #[test]
    fn a_full_scale_axis_reaches_it_whatever_the_data() {
        let percent = |full_scale| BarChart {
            title: "utilisation".into(),
            value_label: "busy (%)".into(),
            categories: vec!["a".into()],
            bars: vec![Bars { name: "busy".into(), values: vec![Some(25.0)], color: Rgb(0, 0, 0) }],
            references: vec![],
            value_text: |v| format!("{v:.0}%"),
            full_scale,
        };
        let ticks = |chart: BarChart| parse(&chart.render().unwrap()).unwrap().0;
        assert!(ticks(percent(Some(100.0))).iter().any(|t| t == "100"));
        assert!(!ticks(percent(None)).iter().any(|t| t == "100"));
    }

    #[test]
    fn value_texts_fit_inside_the_plot() {
        // The longest bar's text must end left of the legend column: the value axis is
        // stretched by the room the text needs.
        let chart = bar_chart();
        let doc = chart.render().unwrap();
        let tree = roxmltree::Document::parse(&doc).unwrap();
        let legend_x = WIDTH - legend_width(["graph", "eager", "parity"].iter());
        let value =
            tree.descendants().find(|n| n.text().is_some_and(|t| t.trim() == "8.90x")).unwrap();
        let x: f64 = value.attribute("x").unwrap().parse().unwrap();
        let end = x + f64::from(text_width("8.90x", VALUE_SIZE));
        assert!(end < f64::from(legend_x), "{end} >= {legend_x}");
    }
}
