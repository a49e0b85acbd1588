//! The frame of a chart: the canvas with its title, the plot and legend areas, the legend,
//! and the axes as plotters sees them.

use std::ops::Range;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Axis;
use super::style::{
    DESC_SIZE, DrawResult, FONT, LABEL_SIZE, Rgb, Stroke, TITLE_SIZE, err, line_style, text_width,
};

/// An axis as plotters sees it: linear in axis units from `lo` to `hi`, with a tick (a grid
/// line and a label) at exactly `ticks` and nowhere else.
pub(crate) struct Ticked {
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) ticks: Vec<f64>,
}

impl Ticked {
    pub(crate) fn of(axis: &Axis) -> Ticked {
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

/// The legend column's width for `names`.
pub(crate) fn legend_width(names: impl Iterator<Item = impl AsRef<str>>) -> u32 {
    let widest = names.map(|n| text_width(n.as_ref(), LABEL_SIZE)).max().unwrap_or(0);
    (widest + 56).clamp(120, 320)
}

/// One legend entry's sample.
#[derive(Clone, Copy)]
pub(crate) enum Sample {
    Line(Rgb, Stroke),
    Block(Rgb),
}

/// The legend, one entry per row from the top of `area`.
pub(crate) fn draw_legend(
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

/// A white canvas of `width x height` with `title` on top: the area below the title split
/// into the plot (left) and the legend column (right, `legend` px wide).
pub(crate) fn canvas<'a>(
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

/// The look every chart's axes share: label fonts, light grid lines, grey axes.
pub(crate) fn axes_style<X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &mut MeshStyle<'_, '_, X, Y, DB>,
) {
    mesh.label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, DESC_SIZE))
        .bold_line_style(RGBColor(228, 228, 228))
        .axis_style(RGBColor(90, 90, 90));
}
