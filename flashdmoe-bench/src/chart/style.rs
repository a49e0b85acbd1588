//! What every chart shares: colours, line styles, fonts and sizes, and a text's width.

use plotters::prelude::*;

/// A colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub(crate) fn plotters(self) -> RGBColor {
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

pub(crate) const WIDTH: u32 = 860;
pub(crate) const FONT: &str = "sans-serif";
/// Font sizes as plotters takes them (it writes `size / 1.24` px into the SVG).
pub(crate) const TITLE_SIZE: f64 = 20.0;
pub(crate) const LABEL_SIZE: f64 = 15.0;
pub(crate) const DESC_SIZE: f64 = 16.0;
pub(crate) const VALUE_SIZE: f64 = 14.0;

pub(crate) type DrawResult<T> = Result<T, String>;

pub(crate) fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}

/// A generous width of `text` at plotters font size `size` (px): an average glyph of a
/// sans-serif font is about half an em wide, this takes 0.6.
pub(crate) fn text_width(text: &str, size: f64) -> u32 {
    (text.chars().count() as f64 * 0.6 * size / 1.24).ceil() as u32
}

/// The style of a line of `stroke`.
pub(crate) fn line_style(color: Rgb, stroke: Stroke) -> ShapeStyle {
    let width = if stroke == Stroke::Reference { 1 } else { 2 };
    color.plotters().stroke_width(width)
}
