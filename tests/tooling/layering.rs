//! The layering `docs/architecture.md` documents, checked on the source text: the top-level
//! modules of `src/` import only modules below them in the table, and no module of `src/` or of
//! the simulator crate imports one that imports it back (directly or around a loop). Without
//! this, a `use crate::…` added in a hurry would quietly bring back the loops issue 12 removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, as in the architecture table: each may import only those
/// after it.
const LAYERS: [&str; 10] = [
    "cli",
    "app",
    "kube",
    "grpc",
    "nodegroup",
    "inventory",
    "config",
    "cloudify",
    "observability",
    "proto",
];

/// Module path (`config::validate`) → the modules of the same crate its code names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` → `a::b`, `a/mod.rs` → `a`; `lib.rs` and `main.rs` are the crate root (`""`).
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(root)
        .expect("under root")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The identifier path that starts at `text` (`config::model::X` → `["config", "model", "X"]`).
fn path_at(text: &str) -> Vec<&str> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end].split("::").filter(|s| !s.is_empty()).collect()
}

/// The longest known module a path names.
fn known_prefix(modules: &BTreeSet<String>, path: &[&str]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// The import graph of one crate whose sources are under `root`. Comment lines are skipped: a
/// doc comment may name a module it does not import.
fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(root, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let me = module_of(root, file);
        let parent = me.rsplit_once("::").map_or("", |(p, _)| p).to_owned();
        let text = std::fs::read_to_string(file).expect("source file");
        let mut deps = BTreeSet::new();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (anchor, base) in [("crate::", String::new()), ("super::", parent.clone())] {
                for (at, _) in line.match_indices(anchor) {
                    if at > 0 && line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let mut path: Vec<&str> = base.split("::").filter(|s| !s.is_empty()).collect();
                    path.extend(path_at(&line[at + anchor.len()..]));
                    let Some(m) = known_prefix(&modules, &path) else {
                        continue;
                    };
                    // A module's own items and its ancestors (whose items it sees) are no edge.
                    let ancestor = me == m || me.starts_with(&format!("{m}::")) || m.is_empty();
                    if !ancestor {
                        deps.insert(m);
                    }
                }
            }
        }
        graph.entry(me).or_default().extend(deps);
    }
    graph
}

/// Every import loop of a graph, each as the path that closes it.
fn loops(graph: &Graph) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(next.clone());
                    found.insert(cycle.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn top_level_modules_import_only_the_layers_below_them() {
    let graph = graph(&repo().join("src"));
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        let from = top(module);
        let Some(rank) = LAYERS.iter().position(|l| *l == from) else {
            assert!(
                module.is_empty(),
                "{module}: a top-level module missing from LAYERS"
            );
            continue;
        };
        for dep in deps.iter().map(|d| top(d)).filter(|d| *d != from) {
            if LAYERS
                .iter()
                .position(|l| *l == dep)
                .is_none_or(|r| r <= rank)
            {
                wrong.push(format!("{module} imports {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports: {wrong:#?}");
}

#[test]
fn no_module_of_the_provider_or_the_simulator_imports_itself_around_a_loop() {
    for root in ["src", "crates/cloudify-sim/src"] {
        let graph = graph(&repo().join(root));
        assert!(graph.len() > 10, "{root}: {} modules read", graph.len());
        let found = loops(&graph);
        assert!(found.is_empty(), "{root}: import loops {found:#?}");
    }
}

#[test]
fn the_checker_reads_real_edges_and_finds_a_planted_loop() {
    // The checks above pass on an empty graph too: this one shows they read real edges.
    let graph = graph(&repo().join("src"));
    assert!(graph["config::validate"].contains("config::groups"));
    assert!(graph["nodegroup"].contains("inventory"));
    let mut looped = graph.clone();
    looped
        .entry("config::groups".into())
        .or_default()
        .insert("config::validate".into());
    assert_eq!(
        loops(&looped)
            .iter()
            .filter(|l| l.starts_with("config::groups"))
            .count(),
        1
    );
}
