//! A crate's module dependency graph, read from its sources, and the cycles in it.
//!
//! Every crate's `tests/modules.rs` includes this file (`#[path = ...] mod module_graph;`) and
//! asserts that its modules import only downward: the graph of "module `a` names an item of
//! module `b`" has no cycle.
//!
//! * Nodes are the crate's modules cut to a depth (`depth` 1: the top-level modules, each with
//!   everything under it; 2: their children too, ...). The crate root (`lib.rs`, `main.rs`)
//!   is not a node: it declares and re-exports everything.
//! * Edges come from paths in code: `crate::a::...` (in `use` trees, braced groups included,
//!   and inline paths) and `super::...`, resolved against the module the file is. Comments,
//!   string and char literals are ignored, and so is test-only code: an item under a
//!   `#[cfg(...test...)]` attribute (a test module, inline or in its own file).
//! * An edge between a module and one of its ancestors is structural (a parent declares and
//!   re-exports its children, children use the parent's shared items) and is not counted.
//!   Consequently `use super::Item` inside `a::b` is an edge to `a` even when `a` merely
//!   re-exports `Item` from a sibling `a::c`: sibling cycles through a parent's re-exports are
//!   not seen. Neither are macros that expand to paths (`$crate::` is skipped).
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Where an edge was seen: file and line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    /// The file, relative to the source directory.
    pub file: String,
    /// The 1-based line.
    pub line: usize,
}

/// The module graph of one crate at one depth.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Every module node (`"runtime"`, `"config::file"`, ...).
    pub modules: BTreeSet<String>,
    /// `edges[a][b]`: where module `a` names module `b` (first sighting per file).
    pub edges: BTreeMap<String, BTreeMap<String, Vec<Evidence>>>,
}

impl ModuleGraph {
    /// Reads every `.rs` file under `src` (a crate's source directory); nodes are module paths
    /// cut to `depth` segments (at least 1).
    pub fn read(src: &Path, depth: usize) -> ModuleGraph {
        assert!(depth >= 1, "depth must be at least 1");
        let mut files = Vec::new();
        collect_rs(src, &mut files);
        files.sort();
        let mut test_only = BTreeSet::new();
        let mut sources = Vec::new();
        for file in &files {
            let rel = file.strip_prefix(src).expect("under src").to_string_lossy().into_owned();
            let module = module_of(&rel);
            let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let code = strip_comments_and_literals(&text);
            for child in test_only_children(&code) {
                test_only.insert(join(&module, &child));
            }
            sources.push((rel, module, code));
        }
        // Items the crate root re-exports (`pub use a::b::Item;`): `crate::Item` names `a::b`.
        let mut reexports = BTreeMap::new();
        for (_, module, code) in sources.iter().filter(|(_, m, _)| m.is_empty()) {
            for (_, path) in paths(&code.replace("pub use ", "pub use crate::"), module) {
                if let Some((parent, item)) = path.rsplit_once("::") {
                    reexports.insert(item.to_string(), parent.to_string());
                }
            }
        }
        let is_test = |m: &String| test_only.iter().any(|t| is_ancestor_or_self(t, m));
        let sources: Vec<_> =
            sources.into_iter().filter(|(_, m, _)| !m.is_empty() && !is_test(m)).collect();
        let all: BTreeSet<&str> = sources.iter().map(|(_, m, _)| m.as_str()).collect();
        // The module a path names: its longest prefix that is a module (a path may go on into
        // items, and into modules declared inline in a file).
        let module_of_path = |path: &str| {
            let segments: Vec<&str> = path.split("::").collect();
            (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|prefix| all.contains(prefix.as_str()))
        };
        let mut graph = ModuleGraph::default();
        for (rel, module, code) in &sources {
            let from = cut(module, depth);
            graph.modules.insert(from.clone());
            let code = without_test_items(code);
            for (line, path) in paths(&code, module) {
                let path = match reexports.get(&path) {
                    Some(parent) => format!("{parent}::{path}"),
                    None => path,
                };
                let Some(to) = module_of_path(&path).map(|m| cut(&m, depth)) else { continue };
                if is_ancestor_or_self(&from, &to) || is_ancestor_or_self(&to, &from) {
                    continue;
                }
                let seen = graph.edges.entry(from.clone()).or_default().entry(to).or_default();
                if !seen.iter().any(|e| &e.file == rel) {
                    seen.push(Evidence { file: rel.clone(), line });
                }
            }
        }
        graph
    }

    /// The strongly connected components with more than one module: each is a set of modules
    /// that (transitively) import each other. Empty when the graph is acyclic.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let nodes: Vec<&String> = self.modules.iter().collect();
        let index: BTreeMap<&String, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges
                    .get(*n)
                    .map(|t| t.keys().filter_map(|k| index.get(k).copied()).collect())
                    .unwrap_or_default()
            })
            .collect();
        tarjan(&succ)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut names: Vec<String> = c.into_iter().map(|i| nodes[i].clone()).collect();
                names.sort();
                names
            })
            .collect()
    }

    /// A readable account of `cycles`: each component with the edges inside it and where each
    /// was seen.
    pub fn describe(&self, cycles: &[Vec<String>]) -> String {
        let mut out = String::new();
        for component in cycles {
            out.push_str(&format!("cycle among {{{}}}:\n", component.join(", ")));
            for from in component {
                for (to, evidence) in self.edges.get(from).into_iter().flatten() {
                    if component.contains(to) {
                        let at: Vec<String> =
                            evidence.iter().map(|e| format!("{}:{}", e.file, e.line)).collect();
                        out.push_str(&format!("  {from} -> {to}  ({})\n", at.join(", ")));
                    }
                }
            }
        }
        out
    }
}

/// Panics, naming every cycle and the imports that make it, unless the modules of the crate
/// whose source directory is `src` import only downward at `depth`.
pub fn assert_acyclic(src: &Path, depth: usize) {
    let graph = ModuleGraph::read(src, depth);
    assert!(!graph.modules.is_empty(), "{}: no module found", src.display());
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "{}: module import cycles\n{}",
        src.display(),
        graph.describe(&cycles)
    );
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `runtime/mod.rs` -> `runtime`, `config/file.rs` -> `config::file`, `lib.rs` -> ``.
fn module_of(rel: &str) -> String {
    let rel = rel.replace('\\', "/");
    let rel = rel.strip_suffix(".rs").expect(".rs file");
    let mut parts: Vec<&str> = rel.split('/').collect();
    if matches!(parts.last(), Some(&"mod")) {
        parts.pop();
    }
    if parts.len() == 1 && matches!(parts[0], "lib" | "main") {
        parts.clear();
    }
    parts.join("::")
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}::{child}") }
}

fn cut(module: &str, depth: usize) -> String {
    module.split("::").filter(|s| !s.is_empty()).take(depth).collect::<Vec<_>>().join("::")
}

fn is_ancestor_or_self(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}::"))
}

/// Blanks comments and the contents of string and char literals (keeping line breaks, so line
/// numbers stay right).
fn strip_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut nest = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    nest += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    nest -= 1;
                    out.push_str("  ");
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r' && matches!(c.get(i + 1), Some('"') | Some('#')) && !ident(&c, i) {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let close: Vec<char> = std::iter::once('"').chain((0..hashes).map(|_| '#')).collect();
            out.push('"');
            j += 1;
            while j < c.len() && !c[j..].starts_with(&close) {
                out.push(blank(c[j]));
                j += 1;
            }
            out.push('"');
            i = (j + close.len()).min(c.len());
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only literals close.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push('\'');
                    (i + 1..end).for_each(|_| out.push(' '));
                    out.push('\'');
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Whether `c[i]` continues an identifier (so `r` in `for"` is not a raw-string prefix).
fn ident(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// Names of `mod name;` declarations under a `#[cfg(...test...)]` attribute.
fn test_only_children(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cfg_test = false;
    for line in code.lines().map(str::trim) {
        if is_test_cfg(line) {
            cfg_test = true;
            continue;
        }
        if let Some(name) = declared_mod(line).filter(|_| cfg_test && line.ends_with(';')) {
            out.push(name);
        }
        if !line.starts_with("#[") && !line.is_empty() {
            cfg_test = false;
        }
    }
    out
}

fn is_test_cfg(line: &str) -> bool {
    line.starts_with("#[cfg(")
        && line.split(|ch: char| !(ch.is_alphanumeric() || ch == '_')).any(|w| w == "test")
        && !line.contains("not(test")
}

fn declared_mod(line: &str) -> Option<String> {
    let rest = line.strip_prefix("pub ").or(Some(line))?;
    let rest = rest.strip_prefix("pub(crate) ").unwrap_or(rest);
    let rest = rest.strip_prefix("mod ")?;
    let name: String = rest.chars().take_while(|ch| ch.is_alphanumeric() || *ch == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// Blanks every item that follows a `#[cfg(...test...)]` attribute (inline test modules, test
/// helpers), up to its closing brace or semicolon.
fn without_test_items(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let text: Vec<char> = out.clone();
    let mut i = 0;
    let mut line_start = true;
    while i < text.len() {
        if line_start {
            let rest: String = text[i..].iter().take_while(|&&ch| ch != '\n').collect();
            if is_test_cfg(rest.trim()) {
                // Blank from the attribute to the end of the item it applies to.
                let mut j = i;
                let mut depth = 0i32;
                let mut opened = false;
                while j < text.len() {
                    match text[j] {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        ';' if !opened => {
                            j += 1;
                            break;
                        }
                        _ => {}
                    }
                    j += 1;
                    if opened && depth == 0 {
                        break;
                    }
                }
                for ch in &mut out[i..j] {
                    if *ch != '\n' {
                        *ch = ' ';
                    }
                }
                i = j;
                continue;
            }
        }
        line_start = text[i] == '\n' || (line_start && text[i].is_whitespace());
        i += 1;
    }
    out.into_iter().collect()
}

/// Every module path named in `code` of module `module`: `(line, absolute module path)`.
fn paths(code: &str, module: &str) -> Vec<(usize, String)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
        }
        let boundary =
            i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_' || c[i - 1] == '$');
        let after_colons = i >= 2 && c[i - 1] == ':' && c[i - 2] == ':';
        if boundary && !after_colons {
            if let Some(rest) = starts(&c, i, "crate::") {
                for path in tree(&c, rest) {
                    out.push((line, path));
                }
            } else if starts(&c, i, "super::").is_some() {
                let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
                let mut j = i;
                while let Some(next) = starts(&c, j, "super::") {
                    base.pop();
                    j = next;
                }
                for path in tree(&c, j) {
                    out.push((line, join(&base.join("::"), &path)));
                }
            }
        }
        i += 1;
    }
    out
}

fn starts(c: &[char], i: usize, word: &str) -> Option<usize> {
    let w: Vec<char> = word.chars().collect();
    c[i..].starts_with(&w).then_some(i + w.len())
}

/// The module-ish paths of a use tree (or plain path) starting at `c[i]`: `a::b::C` gives
/// `a::b::C`; `{a::X, b}` gives `a::X` and `b`. Identifier segments only.
fn tree(c: &[char], i: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = i;
    let mut segments = Vec::new();
    loop {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        if c.get(i) == Some(&'{') {
            if !segments.is_empty() {
                out.push(segments.join("::"));
            }
            // Split the group at top-level commas.
            let mut depth = 0;
            let mut start = i + 1;
            let mut j = i;
            while j < c.len() {
                match c[j] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        for p in tree(c, start) {
                            out.push(join(&segments.join("::"), &p));
                        }
                        start = j + 1;
                    }
                    _ => {}
                }
                j += 1;
            }
            for p in tree(c, start) {
                out.push(join(&segments.join("::"), &p));
            }
            return out;
        }
        let name: String =
            c[i..].iter().take_while(|ch| ch.is_alphanumeric() || **ch == '_').collect();
        if name.is_empty() || name == "self" {
            break;
        }
        segments.push(name.clone());
        i += name.chars().count();
        match starts(c, i, "::") {
            Some(next) => i = next,
            None => break,
        }
    }
    if !segments.is_empty() {
        out.push(segments.join("::"));
    }
    out
}

/// Tarjan's strongly connected components of the graph `succ` (node -> successors).
fn tarjan(succ: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        succ: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.succ[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let n = succ.len();
    let mut s = State {
        succ,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}
