//! A figure of the report: its file, its title, and either its SVG or why it was not drawn;
//! and the colour each implementation has in every figure.

use crate::chart::Rgb;
use crate::error::BenchError;

/// One figure (module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// File name, e.g. `speedup.svg`.
    pub file: &'static str,
    /// Title, as the page's image text.
    pub title: &'static str,
    /// The SVG document, or why there is nothing to draw (a sentence a reader can act on).
    pub svg: Result<String, String>,
}

impl Figure {
    /// A figure drawn by `draw` (a drawing error is a [`BenchError::Plot`]).
    pub fn drawn(
        file: &'static str,
        title: &'static str,
        draw: Result<String, String>,
    ) -> Result<Figure, BenchError> {
        let svg = draw.map_err(|message| BenchError::Plot { file, message })?;
        Ok(Figure { file, title, svg: Ok(svg) })
    }

    /// A figure not drawn, and why.
    pub fn not_drawn(file: &'static str, title: &'static str, why: impl Into<String>) -> Figure {
        Figure { file, title, svg: Err(why.into()) }
    }
}

/// A stable colour per implementation (and per protocol figure of the simulator).
pub fn color(name: &str) -> Rgb {
    match name {
        "flashdmoe-cuda" => Rgb(31, 119, 180),
        "flashdmoe-cuda-virtual" => Rgb(23, 190, 207),
        "torch-grouped-graph" => Rgb(214, 39, 40),
        "torch-grouped-eager" => Rgb(255, 127, 14),
        "torch-loop-eager" => Rgb(140, 86, 75),
        "torch-ep-a2a-graph" => Rgb(44, 160, 44),
        "torch-ep-a2a-eager" => Rgb(188, 189, 34),
        _ => Rgb(148, 103, 189),
    }
}
