//! Harbor's reference service: a multi-tenant SaaS backend that implements, correctly, the two flows
//! the certification harness certifies — workspace activation and third-party OAuth connectors.
//!
//! Map of the modules:
//! - [`app`]: `Application::build` (binds port 0 in tests), the router and the request middleware.
//! - [`state`]: [`state::AppState`], what every handler shares.
//! - [`config`]: environment → typed [`config::Config`]; secrets in `secrecy` types.
//! - [`error`]: [`error::ApiError`], the one mapping from errors to HTTP status + stable code.
//! - [`context`]: request id and the harness's actor tag, per request.
//! - [`domain`]: newtypes that validate on `parse` (ids, providers, roles, actor tags).
//! - [`jwt`]: bearer-token verification against the gateway's keys.
//! - [`auth`]: the verified identity and workspace membership extractors.
//! - [`request_tx`]: [`request_tx::WorkspaceRequest`], a member's request and the one way its
//!   handler opens a transaction (tenant-scoped, tagged with the actor).
//! - [`db`]: pool, migrations, the begin/finish discipline for transactions, [`db::DbError`].
//! - [`locks`]: `lock_key_for_workspace`, the only place advisory-lock keys are derived.
//! - [`lifecycle`]: the connection state machine, the only place transitions are decided.
//! - [`activation`]: `POST /v1/workspaces/{id}/activation`.
//! - [`connections`]: list (metadata only), disconnect and revoke (both give the grant back at
//!   the provider through the outbox).
//! - [`outbox`]: the revocation outbox — intents written with the status change, delivered at
//!   once and retried by every replica's worker until the provider confirms.
//! - [`oauth`]: authorize and callback — the tenant-bound OAuth flow with PKCE.
//! - [`oauth_state`]: [`oauth_state::OAuthStateStore`], states in Redis, consumed once.
//! - [`providers`]: provider configuration and the HTTP client (exchange, refresh, revoke, fetch).
//! - [`vault`]: AES-256-GCM token encryption bound to its row, the key ring, key rotation.
//! - [`tokens`]: a connection's tokens sealed with the vault before storing, opened for use.
//! - [`documents`]: connector sync with single-flight refresh, and the documents list.
//! - [`ratelimit`]: GCRA rate limits in Redis, shared by replicas.
//! - [`clock`]: the service's clock, which the harness can move.
//! - [`flaws`]: seeded v1 flaws for the harness's mutation run (cargo feature `flaws` only).
//! - [`audit`]: the append-only audit trail.
//! - [`syncpoints`]: the named points where the harness can park a request.
//! - [`health`], [`openapi`]: operations endpoints and the API description; [`contract`]: every
//!   operation's errors, from which the document's error responses are generated.
//! - [`telemetry`]: log set-up and the shutdown signal for the binary.
//!
//! The modules form layers, each using only its own and lower ones (ARCHITECTURE.md, "Service
//! layers"); the `layering` unit test below refuses an import cycle or an upward import.

pub mod activation;
pub mod app;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod connections;
pub mod context;
pub mod contract;
pub mod db;
pub mod documents;
pub mod domain;
pub mod error;
pub mod flaws;
pub mod health;
pub mod jwt;
pub mod lifecycle;
pub mod locks;
pub mod oauth;
pub mod oauth_state;
pub mod openapi;
pub mod outbox;
pub mod providers;
pub mod ratelimit;
pub mod request_tx;
pub mod state;
pub mod syncpoints;
pub mod telemetry;
pub mod tokens;
pub mod vault;

pub use app::{Application, Hooks};
pub use config::Config;

/// The module graph of this crate, read from its own sources: which module names which through a
/// `crate::` path. Refuses an import cycle, and an import from a lower layer into a higher one.
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    /// The layers, bottom first. A module may use the modules of its own layer (without a cycle)
    /// and of the layers below it; a new module has to be placed here.
    const LAYERS: &[(&str, &[&str])] = &[
        (
            "leaves",
            &["clock", "context", "domain", "flaws", "telemetry"],
        ),
        (
            "infrastructure",
            &[
                "audit",
                "config",
                "db",
                "jwt",
                "lifecycle",
                "locks",
                "oauth_state",
                "outbox",
                "providers",
                "ratelimit",
                "syncpoints",
                "tokens",
                "vault",
            ],
        ),
        ("errors", &["error"]),
        ("requests", &["auth", "request_tx", "state"]),
        (
            "handlers",
            &["activation", "connections", "documents", "health", "oauth"],
        ),
        ("api description", &["contract", "openapi"]),
        ("application", &["app", "lib"]),
    ];

    type Graph = BTreeMap<String, BTreeSet<String>>;

    /// Every `src/*.rs` of the library, by module name; a module that is a directory
    /// (`src/providers/`) is all its files together. `main.rs` is left out: it is the binary,
    /// whose `crate` is another crate.
    fn sources() -> BTreeMap<String, String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut sources = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("service/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let mut files: Vec<_> = std::fs::read_dir(&path)
                    .expect("a module directory is readable")
                    .map(|e| e.expect("a directory entry").path())
                    .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                    .collect();
                files.sort();
                let joined = files
                    .iter()
                    .map(|p| std::fs::read_to_string(p).expect("a source file is readable"))
                    .collect::<Vec<_>>()
                    .join("\n");
                sources.insert(name, joined);
                continue;
            }
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".rs"))
            else {
                continue;
            };
            if name != "main" {
                sources.insert(
                    name.to_owned(),
                    std::fs::read_to_string(&path).expect("a source file is readable"),
                );
            }
        }
        sources
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
        let ident = |s: &str| {
            s.chars()
                .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                .collect::<String>()
        };
        let mut names = BTreeSet::new();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            let after = rest[at + "crate::".len()..].trim_start();
            rest = &rest[at + "crate::".len()..];
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

    /// Module → the modules it names (itself left out).
    fn graph() -> Graph {
        sources()
            .into_iter()
            .map(|(module, source)| {
                let mut uses = referenced(&code_only(&source));
                uses.remove(&module);
                (module, uses)
            })
            .collect()
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

    #[test]
    fn no_module_is_part_of_an_import_cycle() {
        let graph = graph();
        for (module, uses) in &graph {
            for used in uses {
                assert!(graph.contains_key(used), "{module} names crate::{used}, which is not a module: name items by their module");
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

    #[test]
    fn modules_use_only_their_own_layer_and_the_ones_below() {
        let layer_of: BTreeMap<&str, (usize, &str)> = LAYERS
            .iter()
            .enumerate()
            .flat_map(|(i, (name, modules))| modules.iter().map(move |m| (*m, (i, *name))))
            .collect();
        for (module, uses) in graph() {
            let Some(&(layer, name)) = layer_of.get(module.as_str()) else {
                panic!("module {module} is in no layer: place it in `LAYERS` (service/src/lib.rs)");
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
}
