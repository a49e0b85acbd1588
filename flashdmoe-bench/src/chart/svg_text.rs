//! Test support: an SVG document's texts and element names, read by an XML parser.

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
