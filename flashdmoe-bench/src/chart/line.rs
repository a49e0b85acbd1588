//! Lines over a numeric x axis: medians with their spread as error bars, reference lines
//! (floors, ideals) thin and dashed.

use plotters::prelude::*;

use super::axis::{self, Axis, Scale};
use super::frame::{Sample, Ticked, axes_style, canvas, draw_legend, legend_width};
use super::style::{DrawResult, LABEL_SIZE, Rgb, Stroke, WIDTH, err, line_style, text_width};

const HEIGHT: u32 = 500;

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
            let (plot, side) = canvas(&mut svg, (WIDTH, HEIGHT), &self.title, legend)?;
            let mut chart = ChartBuilder::on(&plot)
                .margin(14)
                .x_label_area_size(52)
                .y_label_area_size(y_area)
                .build_cartesian_2d(Ticked::of(&x), Ticked::of(&y))
                .map_err(err)?;
            let x_fmt = |u: &f64| axis::tick_label(x.value(*u));
            let y_fmt = |u: &f64| axis::tick_label(y.value(*u));
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt);
            axes_style(&mut mesh);
            mesh.draw().map_err(err)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::svg_text::parse;

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
}
