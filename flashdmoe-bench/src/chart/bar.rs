//! Horizontal grouped bars over named categories, one row per bar (module doc of
//! [`chart`](super)).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{self, Axis, Scale};
use super::frame::{Sample, Ticked, axes_style, canvas, draw_legend, legend_width};
use super::style::{
    DrawResult, FONT, LABEL_SIZE, REFERENCE, Rgb, Stroke, VALUE_SIZE, WIDTH, err, line_style,
    text_width,
};

/// One bar's row and the gap between categories (px).
const ROW: u32 = 20;
const GROUP_GAP: u32 = 12;

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
            let mut mesh = chart.configure_mesh();
            mesh.disable_y_mesh()
                .x_desc(self.value_label.as_str())
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt);
            axes_style(&mut mesh);
            mesh.draw().map_err(err)?;
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
mod tests {
    use super::*;
    use crate::chart::svg_text::parse;

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
