//! The layering `docs/architecture.md` documents, checked on the parsed source: the top-level
//! modules of `src/` import only modules below them in the table, and no module of `src/` or of
//! the simulator crate imports one that imports it back (directly or around a loop). Without
//! this, a `use crate::…` added in a hurry would quietly bring back the loops issues 12 and 24
//! removed.
//!
//! The sources are read with `syn` (issue 24: a line scanner missed `use super::{a, b}` trees and
//! bare `child::item` paths, and so the `nodegroup/delete.rs <-> nodegroup/scale.rs` loop). The
//! module tree is walked from the crate root the way rustc does (`mod x;` → `x.rs` or
//! `x/mod.rs`, `#[path]`, inline modules), and every path the code names is resolved in its
//! module: `use` trees with groups, `self`/`super`/`crate`, renames, globs, `pub use`
//! re-exports (followed to the module that defines the item), bare paths in types, expressions
//! and patterns, and paths inside macro calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

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

/// A path as written, segment by segment (`super::scale::NodeRef`).
type RawPath = Vec<String>;

/// What one module declares and names, before resolution.
#[derive(Debug, Default)]
struct Module {
    /// Child modules (`mod x;` and inline `mod x { … }`).
    children: BTreeSet<String>,
    /// Names of the items it defines (a local item shadows a glob import).
    items: BTreeSet<String>,
    /// `use` names: local name → the path it stands for.
    imports: BTreeMap<String, RawPath>,
    /// `use …::*` sources.
    globs: Vec<RawPath>,
    /// Every path its code names (types, expressions, patterns, macro bodies, `use` targets).
    paths: Vec<RawPath>,
}

/// Every module of one crate, by path (`""` is the crate root), and the files read.
#[derive(Debug, Default)]
struct Crate {
    modules: BTreeMap<String, Module>,
    files: BTreeSet<PathBuf>,
}

fn join(module: &str, child: &str) -> String {
    if module.is_empty() {
        child.to_owned()
    } else {
        format!("{module}::{child}")
    }
}

fn segments(module: &str) -> Vec<String> {
    module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The literal of a `#[path = "…"]` attribute, if any.
pub(crate) fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// The names a `use` tree brings in, each with the path it stands for; globs apart.
fn use_tree(prefix: &RawPath, tree: &syn::UseTree, m: &mut Module) {
    match tree {
        syn::UseTree::Path(p) => {
            let mut longer = prefix.clone();
            longer.push(p.ident.to_string());
            use_tree(&longer, &p.tree, m);
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                // `use a::b::{self}` names `b`.
                if let Some(last) = prefix.last() {
                    m.imports.insert(last.clone(), prefix.clone());
                    m.paths.push(prefix.clone());
                }
            } else {
                let mut full = prefix.clone();
                full.push(name.clone());
                m.paths.push(full.clone());
                m.imports.insert(name, full);
            }
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            if r.ident != "self" {
                full.push(r.ident.to_string());
            }
            m.paths.push(full.clone());
            m.imports.insert(r.rename.to_string(), full);
        }
        syn::UseTree::Glob(_) => {
            m.paths.push(prefix.clone());
            m.globs.push(prefix.clone());
        }
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_tree(prefix, t, m);
            }
        }
    }
}

/// The `a::b::c` paths inside a macro call's tokens (`tracing::info!(… crate::x::y …)`,
/// `matches!(e, Err(DomainError::X))`): syn leaves macro bodies unparsed.
fn token_paths(tokens: proc_macro2::TokenStream, out: &mut Vec<RawPath>) {
    let tokens: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
    let mut current: RawPath = Vec::new();
    let mut colons = 0;
    let flush = |current: &mut RawPath, out: &mut Vec<RawPath>| {
        if !current.is_empty() {
            out.push(std::mem::take(current));
        }
    };
    for t in tokens {
        match t {
            proc_macro2::TokenTree::Ident(i) => {
                if colons != 2 {
                    flush(&mut current, out);
                }
                current.push(i.to_string());
                colons = 0;
            }
            proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' && !current.is_empty() => {
                colons += 1;
                if colons > 2 {
                    flush(&mut current, out);
                    colons = 0;
                }
            }
            proc_macro2::TokenTree::Group(g) => {
                flush(&mut current, out);
                colons = 0;
                token_paths(g.stream(), out);
            }
            _ => {
                flush(&mut current, out);
                colons = 0;
            }
        }
    }
    flush(&mut current, out);
}

/// Collects the paths and nested `use` items of one item (function bodies included).
struct Names<'m> {
    module: &'m mut Module,
}

impl<'ast> Visit<'ast> for Names<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.module
            .paths
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        token_paths(mac.tokens.clone(), &mut self.module.paths);
        syn::visit::visit_macro(self, mac);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let prefix = if u.leading_colon.is_some() {
            vec!["::".to_owned()]
        } else {
            Vec::new()
        };
        use_tree(&prefix, &u.tree, self.module);
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // A module inside a function body is not part of the tree we check.
    }
}

/// The name an item defines, for the shadowing rule.
fn item_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        _ => return None,
    };
    Some(ident.to_string())
}

/// Reads source files; tests plant a crate in memory through it.
pub(crate) trait Sources {
    fn read(&self, file: &Path) -> Option<String>;
}

impl Sources for () {
    fn read(&self, file: &Path) -> Option<String> {
        std::fs::read_to_string(file).ok()
    }
}

impl Sources for BTreeMap<PathBuf, String> {
    fn read(&self, file: &Path) -> Option<String> {
        self.get(file).cloned()
    }
}

impl Crate {
    /// Parses the crate whose root file is `root` (`src/lib.rs`), following every `mod`.
    fn parse(root: &Path, sources: &dyn Sources) -> Crate {
        let mut krate = Crate::default();
        let dir = root.parent().expect("root has a directory").to_path_buf();
        krate.file(root, String::new(), dir, sources);
        krate
    }

    /// One file: module `module`, whose child modules' files live in `child_dir`.
    fn file(&mut self, file: &Path, module: String, child_dir: PathBuf, sources: &dyn Sources) {
        let text = sources
            .read(file)
            .unwrap_or_else(|| panic!("{}: cannot read", file.display()));
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.files.insert(file.to_path_buf());
        // `#[path]` outside inline modules is relative to the file's own directory.
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let dirs = Dirs {
            children: child_dir,
            path_base: base,
        };
        self.items(&parsed.items, module, &dirs, sources);
    }

    fn items(&mut self, items: &[syn::Item], module: String, dirs: &Dirs, sources: &dyn Sources) {
        let mut m = Module::default();
        for item in items {
            match item {
                syn::Item::Mod(child) => {
                    let name = child.ident.to_string();
                    m.children.insert(name.clone());
                    let path = join(&module, &name);
                    let explicit = path_attr(&child.attrs);
                    match &child.content {
                        Some((_, inner)) => {
                            // Inside an inline module both rules start from its directory.
                            let inner_dir = match &explicit {
                                Some(p) => dirs.path_base.join(p),
                                None => dirs.children.join(&name),
                            };
                            let inner_dirs = Dirs {
                                children: inner_dir.clone(),
                                path_base: inner_dir,
                            };
                            self.items(inner, path, &inner_dirs, sources);
                        }
                        None => {
                            let (file, child_dir) = child_file(dirs, &name, explicit, sources);
                            self.file(&file, path, child_dir, sources);
                        }
                    }
                }
                syn::Item::Use(u) => Names { module: &mut m }.visit_item_use(u),
                other => {
                    if let Some(name) = item_name(other) {
                        m.items.insert(name);
                    }
                    Names { module: &mut m }.visit_item(other);
                }
            }
        }
        self.modules.insert(module, m);
    }

    /// Resolves `path` as written in `module` to an absolute path of this crate; `None` for
    /// other crates, the prelude and local names.
    fn resolve(&self, module: &str, path: &[String], depth: usize) -> Option<Vec<String>> {
        let first = path.first()?;
        if depth > 8 {
            return None;
        }
        let here = segments(module);
        let absolute = match first.as_str() {
            "crate" => path[1..].to_vec(),
            "self" => [here, path[1..].to_vec()].concat(),
            "super" => {
                let ups = path.iter().take_while(|s| *s == "super").count();
                let base = here.get(..here.len().checked_sub(ups)?)?.to_vec();
                [base, path[ups..].to_vec()].concat()
            }
            "::" | "Self" => return None,
            _ => {
                let m = self.modules.get(module)?;
                if m.children.contains(first) || m.items.contains(first) {
                    [here, path.to_vec()].concat()
                } else if let Some(target) = m.imports.get(first) {
                    if target.len() == 1 && target[0] == *first {
                        return None; // `use tokio;`
                    }
                    let mut longer = target.clone();
                    longer.extend_from_slice(&path[1..]);
                    return self.resolve(module, &longer, depth + 1);
                } else {
                    return m.globs.iter().find_map(|g| {
                        let source = self.resolve(module, g, depth + 1)?.join("::");
                        let s = self.modules.get(&source)?;
                        let visible = s.children.contains(first)
                            || s.items.contains(first)
                            || s.imports.contains_key(first)
                            || !s.globs.is_empty();
                        visible.then(|| self.resolve(&source, path, depth + 1))?
                    });
                }
            }
        };
        Some(absolute)
    }

    /// The module that defines what an absolute path names: its longest module prefix, then,
    /// while the next segment is a name that module only imports (`pub use error::DomainError`,
    /// or a private `use` a child reaches through `super::`), where that import leads.
    fn defining_module(&self, absolute: &[String], depth: usize) -> Option<String> {
        let n = (0..=absolute.len())
            .rev()
            .find(|n| self.modules.contains_key(&absolute[..*n].join("::")))?;
        let module = absolute[..n].join("::");
        let Some(next) = absolute.get(n) else {
            return Some(module);
        };
        let m = &self.modules[&module];
        if depth > 8 || m.items.contains(next) || m.children.contains(next) {
            return Some(module);
        }
        let followed = m.imports.contains_key(next) || !m.globs.is_empty();
        let through = followed
            .then(|| self.resolve(&module, &absolute[n..], depth + 1))
            .flatten()
            .filter(|a| a.as_slice() != absolute)
            .and_then(|a| self.defining_module(&a, depth + 1));
        Some(through.unwrap_or(module))
    }

    /// The import graph: module → the other modules of the crate its code names. A module's own
    /// items and its ancestors' (which it sees anyway) are no edge; an ancestor's re-export is
    /// an edge to where the item is defined.
    fn graph(&self) -> Graph {
        let mut graph = Graph::new();
        for (name, m) in &self.modules {
            let mut deps = BTreeSet::new();
            for p in &m.paths {
                let Some(absolute) = self.resolve(name, p, 0) else {
                    continue;
                };
                let Some(target) = self.defining_module(&absolute, 0) else {
                    continue;
                };
                let ancestor = *name == target
                    || target.is_empty()
                    || name.starts_with(&format!("{target}::"));
                if !ancestor {
                    deps.insert(target);
                }
            }
            graph.insert(name.clone(), deps);
        }
        graph
    }
}

/// Where the modules a module declares are looked for.
pub(crate) struct Dirs {
    /// `mod x;` → `children/x.rs` or `children/x/mod.rs`.
    pub children: PathBuf,
    /// `#[path = "p"] mod x;` → `path_base/p`.
    pub path_base: PathBuf,
}

/// The file of `mod name;` and the directory of its own children (rustc's rules).
pub(crate) fn child_file(
    dirs: &Dirs,
    name: &str,
    explicit: Option<String>,
    sources: &dyn Sources,
) -> (PathBuf, PathBuf) {
    if let Some(p) = explicit {
        let file = dirs.path_base.join(p);
        // A `#[path]` file's children sit beside it, as for a mod.rs.
        let children = file.parent().map(Path::to_path_buf).unwrap_or_default();
        return (file, children);
    }
    let flat = dirs.children.join(format!("{name}.rs"));
    if sources.read(&flat).is_some() {
        return (flat, dirs.children.join(name));
    }
    let nested = dirs.children.join(name);
    (nested.join("mod.rs"), nested)
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

/// The library crate of `src/` or of the simulator, parsed.
fn crate_at(dir: &str) -> Crate {
    Crate::parse(&repo().join(dir).join("lib.rs"), &())
}

fn rust_files(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.insert(path);
        }
    }
}

#[test]
fn top_level_modules_import_only_the_layers_below_them() {
    let graph = crate_at("src").graph();
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
        let graph = crate_at(root).graph();
        assert!(graph.len() > 10, "{root}: {} modules read", graph.len());
        let found = loops(&graph);
        assert!(found.is_empty(), "{root}: import loops {found:#?}");
    }
}

#[test]
fn every_source_file_is_a_module_the_checker_read() {
    // A file the walk misses (a wrong `#[path]` rule) would escape both checks above.
    for root in ["src", "crates/cloudify-sim/src"] {
        let krate = crate_at(root);
        let mut on_disk = BTreeSet::new();
        rust_files(&repo().join(root), &mut on_disk);
        on_disk.remove(&repo().join(root).join("main.rs"));
        let missed: Vec<_> = on_disk.difference(&krate.files).collect();
        assert!(
            missed.is_empty(),
            "{root}: not reached from lib.rs: {missed:#?}"
        );
    }
}

#[test]
fn the_checker_reads_real_edges_and_finds_a_planted_loop() {
    // The checks above pass on an empty graph too: this one shows they read real edges.
    let graph = crate_at("src").graph();
    assert!(graph["config::validate"].contains("config::groups"));
    assert!(graph["nodegroup"].contains("inventory"));
    // Seen through `use super::{…}` trees and re-exports (issue 24).
    assert!(graph["nodegroup::delete"].contains("nodegroup::overlay"));
    assert!(graph["nodegroup::scale"].contains("nodegroup::error"));
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

/// A crate planted in memory: `(file under /planted, source)`.
fn planted(files: &[(&str, &str)]) -> Graph {
    let sources: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(f, s)| (Path::new("/planted").join(f), (*s).to_owned()))
        .collect();
    Crate::parse(Path::new("/planted/lib.rs"), &sources).graph()
}

fn edge(graph: &Graph, from: &str, to: &str) -> bool {
    graph.get(from).is_some_and(|d| d.contains(to))
}

#[test]
fn every_import_form_is_an_edge() {
    let graph = planted(&[
        (
            "lib.rs",
            "mod a; mod b; mod c; mod d; mod e; #[path = \"odd/place.rs\"] mod f; mod g; mod h;
             pub use c::Reexported;",
        ),
        // A `use super::{…}` tree with a nested group and `self`.
        ("a.rs", "use super::{b::{self, Thing}, c};"),
        ("b.rs", "pub struct Thing;"),
        // A bare `child::item` path in an expression, after `use super::d;`.
        (
            "c.rs",
            "use super::d; pub struct Reexported; fn f() { d::run(); }",
        ),
        ("d.rs", "pub fn run() {}"),
        // A path in a type, and one inside a macro call.
        (
            "e.rs",
            "fn f(_: crate::b::Thing) { assert!(matches!(1, crate::g::ONE)); }",
        ),
        // `#[path]`, and an ancestor's `pub use` followed to its definition.
        ("odd/place.rs", "fn f() -> super::Reexported { todo!() }"),
        ("g.rs", "pub const ONE: i32 = 1;"),
        // A glob of an ancestor, then a name it re-exports.
        ("h.rs", "use super::*; fn f(_: Reexported) {}"),
    ]);
    for (from, to) in [
        ("a", "b"),
        ("a", "c"),
        ("c", "d"),
        ("e", "b"),
        ("e", "g"),
        ("f", "c"),
        ("h", "c"),
    ] {
        assert!(
            edge(&graph, from, to),
            "{from} -> {to} not seen: {graph:#?}"
        );
    }
    assert!(!edge(&graph, "b", "a"), "no edge invented: {graph:#?}");
}

#[test]
fn a_loop_through_a_use_tree_and_a_bare_path_is_found() {
    // The shape of issue 24: each file names the other, one through `use super::{…}`, the other
    // through a bare path after importing the module.
    let graph = planted(&[
        ("lib.rs", "mod delete; mod scale;"),
        (
            "delete.rs",
            "use super::scale::NodeRef; pub fn resolve() {}",
        ),
        (
            "scale.rs",
            "use super::{delete}; pub struct NodeRef; fn f() { delete::resolve(); }",
        ),
    ]);
    assert_eq!(
        loops(&graph),
        ["delete -> scale -> delete", "scale -> delete -> scale"]
    );
}
