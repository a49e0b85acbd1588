//! A minimal SVG writer: just the elements the plots draw.
//!
//! Invariant: the output is a well-formed standalone SVG 1.1 document: every element is
//! closed, every attribute value quoted, and all text and attribute content goes through
//! [`escape`]; numbers are written with two decimals (finite values only: a non-finite
//! coordinate is written as 0 rather than producing an invalid document).

use std::fmt::Write;

/// An SVG document being drawn; [`Svg::finish`] returns the text.
#[derive(Debug)]
pub struct Svg {
    body: String,
    width: f64,
    height: f64,
}

/// Horizontal anchoring of a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// The position is the start of the text.
    Start,
    /// The position is the middle.
    Middle,
    /// The position is the end.
    End,
}

/// `v` for an attribute: two decimals, 0 when not finite.
fn num(v: f64) -> String {
    if v.is_finite() { format!("{v:.2}") } else { "0".into() }
}

/// `text` with the XML special characters replaced by entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl Svg {
    /// An empty `width x height` drawing on a white background.
    pub fn new(width: f64, height: f64) -> Svg {
        let mut svg = Svg { body: String::new(), width, height };
        svg.rect(0.0, 0.0, width, height, "#ffffff", None);
        svg
    }

    /// A filled rectangle with an optional stroke colour.
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, stroke: Option<&str>) {
        let stroke = stroke.map_or(String::new(), |s| format!(r#" stroke="{}""#, escape(s)));
        let _ = writeln!(
            self.body,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"{stroke}/>"#,
            num(x),
            num(y),
            num(w.max(0.0)),
            num(h.max(0.0)),
            escape(fill)
        );
    }

    /// A straight line; `dash` draws it dashed.
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), color: &str, width: f64, dash: bool) {
        let dash = if dash { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            self.body,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}"{dash}/>"#,
            num(from.0),
            num(from.1),
            num(to.0),
            num(to.1),
            escape(color),
            num(width)
        );
    }

    /// A polyline through `points` (nothing for fewer than two).
    pub fn polyline(&mut self, points: &[(f64, f64)], color: &str, width: f64, dash: bool) {
        if points.len() < 2 {
            return;
        }
        let pts: Vec<String> =
            points.iter().map(|&(x, y)| format!("{},{}", num(x), num(y))).collect();
        let dash = if dash { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"{dash}/>"#,
            pts.join(" "),
            escape(color),
            num(width)
        );
    }

    /// A filled circle.
    pub fn circle(&mut self, center: (f64, f64), r: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{}" cy="{}" r="{}" fill="{}"/>"#,
            num(center.0),
            num(center.1),
            num(r),
            escape(fill)
        );
    }

    /// A text at `(x, y)` (baseline), `size` px, rotated by `rotate` degrees about its anchor.
    pub fn text(&mut self, at: (f64, f64), text: &str, size: f64, anchor: Anchor, rotate: f64) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let transform = if rotate == 0.0 {
            String::new()
        } else {
            format!(r#" transform="rotate({} {} {})""#, num(rotate), num(at.0), num(at.1))
        };
        let _ = writeln!(
            self.body,
            r#"<text x="{}" y="{}" font-size="{}" text-anchor="{anchor}"{transform}>{}</text>"#,
            num(at.0),
            num(at.1),
            num(size),
            escape(text)
        );
    }

    /// The document.
    pub fn finish(self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{w}\" \
             height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"Helvetica, Arial, sans-serif\">\n\
             {}</svg>\n",
            self.body,
            w = num(self.width),
            h = num(self.height)
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks that `doc` is well-formed XML as far as the writer's output goes: one root, every
    /// start tag closed in order, attribute values quoted, no stray `<` or `&` in text.
    /// Returns the element names in document order.
    pub(crate) fn well_formed(doc: &str) -> Result<Vec<String>, String> {
        let body = doc
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .ok_or("no XML declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> without a start tag"))?;
                if top != name {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            if name.is_empty() {
                return Err(format!("bad tag <{tag}>"));
            }
            check_attributes(&tag[name.len()..])?;
            if stack.is_empty() && !names.is_empty() {
                return Err("more than one root element".into());
            }
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        Ok(names)
    }

    fn check_text(text: &str) -> Result<(), String> {
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            let end = rest[amp..].find(';').ok_or("bare &")? + amp;
            if !["&amp", "&lt", "&gt", "&quot", "&apos"].contains(&&rest[amp..end]) {
                return Err(format!("unknown entity {}", &rest[amp..=end]));
            }
            rest = &rest[end + 1..];
        }
        Ok(())
    }

    fn check_attributes(mut attrs: &str) -> Result<(), String> {
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                return Ok(());
            }
            let eq = attrs.find('=').ok_or(format!("attribute without value: {attrs}"))?;
            let name = &attrs[..eq];
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
            {
                return Err(format!("bad attribute name {name:?}"));
            }
            let value = attrs[eq + 1..].strip_prefix('"').ok_or(format!("unquoted {name}"))?;
            let end = value.find('"').ok_or(format!("unterminated {name}"))?;
            if value[..end].contains('<') {
                return Err(format!("< in attribute {name}"));
            }
            check_text(&value[..end])?;
            attrs = &value[end + 1..];
        }
    }

    #[test]
    fn documents_are_well_formed_and_escaped() {
        let mut svg = Svg::new(200.0, 100.0);
        svg.line((0.0, 0.0), (10.0, f64::NAN), "#000", 1.0, true);
        svg.polyline(&[(0.0, 0.0), (5.0, 5.0), (9.0, 1.0)], "#123456", 2.0, false);
        svg.polyline(&[(1.0, 1.0)], "#123456", 2.0, false);
        svg.circle((3.0, 4.0), 2.0, "red");
        svg.text((1.0, 2.0), "T < 16384 & \"E\" > 8's", 12.0, Anchor::Middle, -30.0);
        svg.rect(1.0, 1.0, -5.0, 3.0, "#eee", Some("#000"));
        let doc = svg.finish();
        let names = well_formed(&doc).unwrap();
        assert_eq!(names, ["svg", "rect", "line", "polyline", "circle", "text", "rect"]);
        assert!(doc.contains("T &lt; 16384 &amp; &quot;E&quot; &gt; 8&apos;s"));
        assert!(doc.contains(r#"y2="0""#) && doc.contains(r#"width="0.00""#));
    }

    #[test]
    fn the_checker_rejects_malformed_documents() {
        let decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
        for bad in [
            "<svg><text>a</svg>",
            "<svg>a & b</svg>",
            "<svg x=1/>",
            "<svg/><svg/>",
            "<svg><g></svg></g>",
            "<svg",
        ] {
            assert!(well_formed(&format!("{decl}{bad}")).is_err(), "{bad}");
        }
        assert!(well_formed("<svg/>").is_err());
        assert!(well_formed(&format!("{decl}<svg a=\"1\"><g/></svg>")).is_ok());
    }
}
