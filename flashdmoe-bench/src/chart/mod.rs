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
mod bar;
mod frame;
mod line;
mod style;
#[cfg(test)]
pub(crate) mod svg_text;

pub use axis::{Axis, Scale};
pub use bar::{BarChart, Bars};
pub use line::{LineChart, Point, Series};
pub use style::{REFERENCE, Rgb, Stroke};
