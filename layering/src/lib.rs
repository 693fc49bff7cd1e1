//! The module graph of a crate, read from its own sources: which top-level module names which
//! through a `crate::` path. The service's and the harness's `layering` tests use it to refuse an
//! import cycle and an import from a lower layer into a higher one, each against its own table of
//! layers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// The directory of the crate whose test is running: `CARGO_MANIFEST_DIR` as cargo and nextest
/// set it for the test process, else `compiled` (the same variable at build time, which a caller
/// passes as `env!("CARGO_MANIFEST_DIR")`). Run time first: the target directory is shared
/// between checkouts (the CI's clone and the working tree), cargo's fingerprints do not name the
/// checkout, and a test binary built in another one would read that checkout's files — an
/// older tree, or one deleted since.
pub fn crate_dir(compiled: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(compiled))
}

/// Layers, bottom first: a name and its modules.
pub type Layers<'a> = &'a [(&'a str, &'a [&'a str])];

/// Panics, naming a cycle, when any module of `src`'s crate is part of an import cycle; and when a
/// module names a `crate::` path that is not a module.
pub fn assert_no_cycle(src: &Path) {
    let graph = graph(src);
    for (module, uses) in &graph {
        for used in uses {
            assert!(
                graph.contains_key(used),
                "{module} names crate::{used}, which is not a module: name items by their module"
            );
        }
    }
    let components = components(&graph);
    let largest = &components[0];
    println!(
        "{} modules; largest strongly connected component: {} ({largest:?})",
        graph.len(),
        largest.len()
    );
    assert!(
        largest.len() == 1,
        "import cycle among {largest:?} ({} modules), for instance {}",
        largest.len(),
        cycle_through(&graph, &largest[0])
    );
}

/// Panics when a module of `src`'s crate is in no layer of `layers` (`table` says where the table
/// is), or uses a module of a higher layer, naming both.
pub fn assert_layers(src: &Path, layers: Layers<'_>, table: &str) {
    let layer_of: BTreeMap<&str, (usize, &str)> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, (name, modules))| modules.iter().map(move |m| (*m, (i, *name))))
        .collect();
    for (module, uses) in graph(src) {
        let Some(&(layer, name)) = layer_of.get(module.as_str()) else {
            panic!("module {module} is in no layer: place it in the layers ({table})");
        };
        for used in uses {
            let Some(&(used_layer, used_name)) = layer_of.get(used.as_str()) else {
                continue;
            };
            assert!(
                used_layer <= layer,
                "{module} ({name}) uses {used} ({used_name}), a higher layer"
            );
        }
    }
}

/// Module → the modules it names through `crate::` paths (itself left out).
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `*.rs` of `src` (a crate's `src/`), by module name; a module that is a directory is all
/// its files together. `main.rs` and `bin/` are left out: they are binaries, whose `crate` is
/// another crate.
fn sources(src: &Path) -> BTreeMap<String, String> {
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("the source directory is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        let name = name.to_owned();
        let text = if path.is_dir() && name == "bin" {
            continue;
        } else if path.is_dir() {
            let mut files = Vec::new();
            collect(&path, &mut files);
            files.sort();
            files
                .iter()
                .map(|f| std::fs::read_to_string(f).expect("a source file is readable"))
                .collect::<Vec<_>>()
                .join("\n")
        } else if path.extension().is_some_and(|e| e == "rs") && name != "main" {
            std::fs::read_to_string(&path).expect("a source file is readable")
        } else {
            continue;
        };
        sources
            .entry(name)
            .or_insert_with(String::new)
            .push_str(&text);
    }
    sources
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The source with comments (doc comments too), string and character literals blanked out, so
/// that only code is searched.
fn code_only(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < c.len() {
        // An `r` that opens a raw string: not the end of an identifier, except of a lone `b`.
        let raw_prefix = c[i] == 'r'
            && match i {
                0 => true,
                1 => !is_ident(c[0]) || c[0] == 'b',
                _ => !is_ident(c[i - 1]) || (c[i - 1] == 'b' && !is_ident(c[i - 2])),
            };
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if raw_prefix && matches!(c.get(i + 1), Some('"' | '#')) {
            // A raw string: r"…", r#"…"#, br#"…"# (an identifier such as `r#type` is not one).
            let hashes = c[i + 1..].iter().take_while(|ch| **ch == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            i += hashes + 2;
            while i < c.len()
                && !(c[i] == '"'
                    && c[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|ch| **ch == '#')
                        .count()
                        == hashes)
            {
                i += 1;
            }
            i += 1 + hashes;
            out.push(' ');
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            // An escaped character literal: '\n', '\'', '\u{…}'.
            i += 3;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push(' ');
        } else {
            // Anything else, lifetimes (`'a`) included, is code.
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The first path segment of every `crate::` path in `code`: `use crate::x::…`, an inline
/// `crate::x::y(…)`, and each item of a group `use crate::{a, b::{c, d}}`.
fn referenced(code: &str) -> BTreeSet<String> {
    referenced_after(code, "crate::")
}

/// The first path segment after every `prefix` (`crate::`, `crate::scenario::`, `super::`) in
/// `code`, group items included.
fn referenced_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| {
        s.chars()
            .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
            .collect::<String>()
    };
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + prefix.len()..].trim_start();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|ch| ch.is_alphanumeric() || ch == '_') {
            continue;
        }
        let Some(group) = after.strip_prefix('{') else {
            names.insert(ident(after));
            continue;
        };
        // Split the group at its top-level commas, up to its closing brace.
        let (mut depth, mut item_start) = (0usize, 0usize);
        for (i, ch) in group.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                ',' | '}' if depth == 0 => {
                    names.insert(ident(group[item_start..i].trim()));
                    item_start = i + 1;
                    if ch == '}' {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// The module graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Graph {
    sources(src)
        .into_iter()
        .map(|(module, source)| {
            let mut uses = referenced(&code_only(&source));
            uses.remove(&module);
            (module, uses)
        })
        .collect()
}

/// Panics, naming a cycle, when the submodules of `module` (each file and directory under
/// `src/<module>/` but its `mod.rs`) import each other in a circle, through `crate::<module>::`
/// paths or `super::` paths that climb back to `module`.
pub fn assert_no_cycle_within(src: &Path, module: &str) {
    let dir = src.join(module);
    let qualified = format!("crate::{module}::");
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(&dir).expect("the module's directory is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let mut files = Vec::new();
        if path.is_dir() {
            collect(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "mod" {
            files.push(path.clone());
        }
        let uses = graph.entry(name.clone()).or_default();
        for file in files {
            let code =
                code_only(&std::fs::read_to_string(&file).expect("a source file is readable"));
            // How many `super::` lead from this file back to `module`: one per directory below
            // it, and one for the file itself unless it is a `mod.rs`.
            let below = file
                .strip_prefix(&dir)
                .expect("under the module")
                .components()
                .count();
            let climbs = below - usize::from(file.file_name().is_some_and(|f| f == "mod.rs"));
            uses.extend(referenced_after(&code, &qualified));
            uses.extend(referenced_after(&code, &"super::".repeat(climbs)));
        }
        uses.remove(&name);
    }
    if graph.is_empty() {
        panic!("{module} has no submodules under {}", dir.display());
    }
    let components = components(&graph);
    let largest = &components[0];
    assert!(
        largest.len() == 1,
        "import circle inside {module} among {largest:?} ({} modules), for instance {}",
        largest.len(),
        cycle_through(&graph, &largest[0])
    );
}

/// The strongly connected components (Tarjan), largest first.
fn components(graph: &Graph) -> Vec<Vec<String>> {
    struct Search<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            let graph = self.graph;
            for w in graph
                .get(v)
                .into_iter()
                .flatten()
                .filter(|w| graph.contains_key(*w))
            {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self
                    .stack
                    .iter()
                    .position(|m| *m == v)
                    .expect("v is on the stack");
                let component = self
                    .stack
                    .split_off(at)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                self.found.push(component);
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !search.index.contains_key(v.as_str()) {
            search.visit(v);
        }
    }
    search.found.sort_by_key(|c| std::cmp::Reverse(c.len()));
    search.found
}

/// A shortest cycle through `start`, as `start -> … -> start`.
fn cycle_through(graph: &Graph, start: &str) -> String {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flatten() {
            if w == start {
                // Back from `v` to `start` through the parents, then reversed.
                let mut path = vec![start, v];
                while let Some(p) = parent.get(path[path.len() - 1]) {
                    path.push(*p);
                }
                return path.into_iter().rev().collect::<Vec<_>>().join(" -> ");
            }
            if !parent.contains_key(w.as_str()) && w != start {
                parent.insert(w.as_str(), v);
                queue.push_back(w.as_str());
            }
        }
    }
    format!("no cycle through {start}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_crate_path_is_seen_and_comments_and_strings_are_not() {
        let source = r##"
            //! See [`crate::in_module_doc`].
            use crate::plain::Thing;
            use crate::{grouped, nested::{inner, other}, self_ish::{self}};
            pub(crate) fn f<'a>(x: &'a str) -> char {
                let _ = crate::inline::call(x); // crate::in_comment
                /* crate::in_block /* nested */ crate::still_comment */
                let _ = "crate::in_string \" crate::after_escape";
                let _ = r#"crate::in_raw_string"#;
                let _ = harbor_crate::not_ours;
                '"'
            }
            const AFTER_CHAR: () = crate::after_char::X;
        "##;
        let names: Vec<String> = referenced(&code_only(source)).into_iter().collect();
        assert_eq!(
            names,
            [
                "after_char",
                "grouped",
                "inline",
                "nested",
                "plain",
                "self_ish"
            ]
        );
    }

    fn crate_of(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const LAYERS: Layers<'static> = &[("low", &["a"]), ("high", &["b", "lib"])];

    #[test]
    fn a_directory_module_is_one_module_and_binaries_are_left_out() {
        let dir = crate_of(&[
            ("lib.rs", "pub mod a; pub mod b;"),
            ("a.rs", ""),
            ("b/mod.rs", "mod inner;"),
            ("b/inner.rs", "use crate::a::X;"),
            ("bin/tool.rs", "use crate::b;"),
            ("main.rs", "use crate::b;"),
        ]);
        let graph = graph(dir.path());
        assert_eq!(graph.keys().collect::<Vec<_>>(), ["a", "b", "lib"]);
        assert_eq!(graph["b"].iter().collect::<Vec<_>>(), ["a"]);
        assert_no_cycle(dir.path());
        assert_layers(dir.path(), LAYERS, "the test's");
    }

    #[test]
    #[should_panic(expected = "import cycle")]
    fn a_cycle_is_refused() {
        let dir = crate_of(&[("a.rs", "use crate::b::Y;"), ("b.rs", "use crate::a::X;")]);
        assert_no_cycle(dir.path());
    }

    #[test]
    fn submodules_are_checked_for_a_circle_through_both_kinds_of_path() {
        let layered = crate_of(&[
            ("m/mod.rs", "pub mod a; pub mod b; pub mod c;"),
            ("m/a.rs", ""),
            ("m/b.rs", "use super::a::X;"),
            ("m/c/mod.rs", "use crate::m::b::Y;"),
            (
                "m/c/inner.rs",
                "use super::super::a::Z; use super::mod_item;",
            ),
        ]);
        assert_no_cycle_within(layered.path(), "m");
        let circle = crate_of(&[
            ("m/mod.rs", "pub mod a; pub mod c;"),
            ("m/a.rs", "use crate::m::c::Y;"),
            ("m/c/mod.rs", "pub mod inner;"),
            ("m/c/inner.rs", "use super::super::a::Z;"),
        ]);
        let refused = std::panic::catch_unwind(|| assert_no_cycle_within(circle.path(), "m"));
        let message = *refused.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("import circle inside m"), "{message}");
    }

    #[test]
    #[should_panic(expected = "a (low) uses b (high), a higher layer")]
    fn an_upward_import_is_refused() {
        let dir = crate_of(&[("a.rs", "use crate::b::Y;"), ("b.rs", "")]);
        assert_layers(dir.path(), LAYERS, "the test's");
    }

    #[test]
    #[should_panic(expected = "module c is in no layer")]
    fn a_module_in_no_layer_is_refused() {
        let dir = crate_of(&[("c.rs", "")]);
        assert_layers(dir.path(), LAYERS, "the test's");
    }
}
