//! The code's own shape, checked so that it stays as docs/ARCHITECTURE.md
//! draws it: dependencies between the files of `src/` point one way (no
//! import cycle), and no file grows past 450 lines outside its tests.
//!
//! The module tree is read from `src/lib.rs` through its `mod` declarations
//! (test-only modules and items left out), every path in each file that names
//! something of this crate (`use` trees and paths in code, `crate::`,
//! `super::`, `self::` or a child module's name) is resolved to the file that
//! defines it, following re-exports and the names `use` binds. A re-export
//! counts as a use: a `mod.rs` that re-exports its children's items cannot
//! also serve them its own. Paths inside macro calls (`format!`, `json!`,
//! `tracing::info!`) are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module (its path from the crate root is its key in the tree): the file
/// that holds it, what it re-exports and what it uses.
struct Module {
    file: PathBuf,
    /// Names this file re-exports (`pub use a::b::Name;`, or `Name` for each
    /// name of a group), with the full path each stands for.
    reexports: BTreeMap<String, Vec<String>>,
    /// Glob re-exports (`pub use a::b::*;`): the modules they open.
    globs: Vec<Vec<String>>,
    /// Paths this file uses, absolute, with the line that uses each.
    uses: Vec<(Vec<String>, usize)>,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>().is_ok_and(|m| matches!(&m, syn::Meta::Path(p) if p.is_ident("test")))
    })
}

fn is_pub(vis: &syn::Visibility) -> bool {
    !matches!(vis, syn::Visibility::Inherited)
}

/// Expands a `use` tree into full paths (relative as written).
fn expand(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            expand(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            if n.ident != "self" {
                path.push(n.ident.to_string());
            }
            let name = path.last().cloned();
            out.push((path, name));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            path.push(r.ident.to_string());
            out.push((path, Some(r.rename.to_string())));
        }
        syn::UseTree::Glob(_) => out.push((prefix.clone(), None)),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| expand(t, prefix, out)),
    }
}

/// A path as written in a file.
struct Written {
    path: Vec<String>,
    line: usize,
    /// In a `pub use`: a re-export.
    public: bool,
    /// The name a `use` binds.
    name: Option<String>,
    /// A `use ...::*`.
    glob: bool,
    /// The inline module it is in (empty: the file's own).
    within: Vec<String>,
}

/// Collects what one file refers to, skipping test-only items.
struct Refs {
    paths: Vec<Written>,
    /// Child modules declared in this file with files of their own.
    children: BTreeSet<String>,
    /// Inline modules (`mod x { ... }`) of this file, and the one being read.
    inline: BTreeSet<Vec<String>>,
    within: Vec<String>,
}

impl<'ast> Visit<'ast> for Refs {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Type(t) => &t.attrs,
            syn::Item::Macro(m) => &m.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_test_only(attrs) {
            return;
        }
        match item {
            syn::Item::Mod(m) if m.content.is_none() => {
                assert!(self.within.is_empty(), "mod {}; inside an inline module", m.ident);
                self.children.insert(m.ident.to_string());
            }
            syn::Item::Mod(m) => {
                self.within.push(m.ident.to_string());
                self.inline.insert(self.within.clone());
                syn::visit::visit_item_mod(self, m);
                self.within.pop();
            }
            syn::Item::Use(u) => {
                let line = u.use_token.span.start().line;
                let mut out = Vec::new();
                expand(&u.tree, &mut Vec::new(), &mut out);
                for (path, name) in out {
                    let glob = name.is_none() && !matches!(&u.tree, syn::UseTree::Name(_));
                    let public = is_pub(&u.vis);
                    self.paths.push(Written { path, line, public, name, glob, within: self.within.clone() });
                }
            }
            _ => syn::visit::visit_item(self, item),
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() > 1 {
            let line = p.segments.first().map_or(0, |s| s.ident.span().start().line);
            let within = self.within.clone();
            self.paths.push(Written { path: segs, line, public: false, name: None, glob: false, within });
        }
        syn::visit::visit_path(self, p);
    }
}

/// Reads the module tree from `src/lib.rs`.
fn read_tree(src: &Path) -> BTreeMap<Vec<String>, Module> {
    let mut modules = BTreeMap::new();
    let mut todo = vec![(Vec::<String>::new(), src.join("lib.rs"))];
    while let Some((path, file)) = todo.pop() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut refs =
            Refs { paths: Vec::new(), children: BTreeSet::new(), inline: BTreeSet::new(), within: Vec::new() };
        refs.visit_file(&ast);
        // Where this file's children live: beside lib.rs / mod.rs, or in a
        // directory named after a leaf file.
        let dir = if file.file_name().is_some_and(|n| n == "lib.rs" || n == "mod.rs") {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        for child in &refs.children {
            let leaf = dir.join(format!("{child}.rs"));
            let child_file = if leaf.exists() { leaf } else { dir.join(child).join("mod.rs") };
            let mut child_path = path.clone();
            child_path.push(child.clone());
            todo.push((child_path, child_file));
        }
        // Relative to the module the path is written in (this file's, or an
        // inline module of it).
        let absolute = |written: &[String], within: &[String]| -> Option<Vec<String>> {
            let mut path = path.clone();
            path.extend(within.iter().cloned());
            let (first, rest) = written.split_first()?;
            let mut base = match first.as_str() {
                "crate" => Vec::new(),
                "self" => path.clone(),
                "super" => {
                    let mut b = path.clone();
                    let mut rest = rest;
                    b.pop()?;
                    while rest.first().is_some_and(|s| s == "super") {
                        b.pop()?;
                        rest = &rest[1..];
                    }
                    b.extend(rest.iter().cloned());
                    return Some(b);
                }
                name if within.is_empty() && refs.children.contains(name) => {
                    let mut b = path.clone();
                    b.push(name.to_string());
                    b
                }
                _ => return None,
            };
            base.extend(rest.iter().cloned());
            Some(base)
        };
        let mut module = Module { file: file.clone(), reexports: BTreeMap::new(), globs: Vec::new(), uses: Vec::new() };
        for inline in &refs.inline {
            let mut p = path.clone();
            p.extend(inline.iter().cloned());
            let empty =
                || Module { file: file.clone(), reexports: BTreeMap::new(), globs: Vec::new(), uses: Vec::new() };
            modules.insert(p, empty());
        }
        // What each `use` binds, in the module it is written in: a path may
        // start with such a name (`use crate::plan;` then `plan::delete::plan`).
        let mut bindings: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
        for w in refs.paths.iter().filter(|w| !w.glob) {
            if let (Some(name), Some(abs)) = (&w.name, absolute(&w.path, &w.within)) {
                bindings.insert((w.within.clone(), name.clone()), abs);
            }
        }
        let resolve = |w: &Written| -> Option<Vec<String>> {
            absolute(&w.path, &w.within).or_else(|| {
                let (first, rest) = w.path.split_first()?;
                let mut abs = bindings.get(&(w.within.clone(), first.clone()))?.clone();
                abs.extend(rest.iter().cloned());
                Some(abs)
            })
        };
        for w in &refs.paths {
            let Some(abs) = resolve(w) else { continue };
            // A re-export is also a use: the file's own code may name it.
            if w.public && w.glob && w.within.is_empty() {
                module.globs.push(abs.clone());
            } else if w.public && w.within.is_empty() {
                module.reexports.insert(w.name.clone().unwrap_or_default(), abs.clone());
            }
            module.uses.push((abs, w.line));
        }
        modules.insert(path, module);
    }
    modules
}

/// The file that defines what `path` names: the deepest module on it, then
/// through that module's re-exports of the next name.
fn defining_file(modules: &BTreeMap<Vec<String>, Module>, path: &[String], depth: usize) -> Option<PathBuf> {
    assert!(depth < 32, "re-exports loop at {path:?}");
    let at = (0..=path.len()).rev().find(|&n| modules.contains_key(&path[..n]))?;
    let module = &modules[&path[..at]];
    if let Some(name) = path.get(at) {
        if let Some(target) = module.reexports.get(name) {
            let mut through = target.clone();
            through.extend(path[at + 1..].iter().cloned());
            return defining_file(modules, &through, depth + 1);
        }
        for glob in &module.globs {
            let mut through = glob.clone();
            through.extend(path[at..].iter().cloned());
            if let Some(file) = defining_file(modules, &through, depth + 1).filter(|f| *f != module.file) {
                return Some(file);
            }
        }
    }
    Some(module.file.clone())
}

#[test]
fn no_file_of_src_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = read_tree(&src);
    assert!(modules.len() > 40, "the module tree was not read: {} modules", modules.len());
    let rel = |p: &Path| p.strip_prefix(&src).unwrap().display().to_string();
    // file -> file it uses -> the first line that does
    let mut edges: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for module in modules.values() {
        let from = rel(&module.file);
        for (path, line) in &module.uses {
            let Some(to) = defining_file(&modules, path, 0) else { continue };
            let to = rel(&to);
            if to != from {
                edges.entry(from.clone()).or_default().entry(to).or_insert(*line);
            }
        }
    }
    // A known edge, so that the reading cannot silently find nothing.
    assert!(
        edges.get("transfer/pass.rs").is_some_and(|e| e.contains_key("transfer/scheduler.rs")),
        "transfer/pass.rs should use transfer/scheduler.rs: {:?}",
        edges.get("transfer/pass.rs")
    );

    // Every cycle, found by a depth-first search from each file.
    let mut cycles = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    // One cycle per set of files, named from its least file.
                    let mut cycle = trail.clone();
                    let least = cycle.iter().enumerate().min_by_key(|(_, f)| *f).map(|(i, _)| i).unwrap();
                    cycle.rotate_left(least);
                    cycles.insert(cycle);
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    let shown: Vec<String> = cycles
        .iter()
        .map(|c| {
            let mut steps: Vec<String> = Vec::new();
            for (i, from) in c.iter().enumerate() {
                let to = &c[(i + 1) % c.len()];
                steps.push(format!("{from}:{} -> {to}", edges[from][to]));
            }
            steps.join(", ")
        })
        .collect();
    assert!(
        shown.is_empty(),
        "import cycles between files of src/ (file:line of the first use):\n{}",
        shown.join("\n")
    );
}

/// Files of `src/` still longer than the house allows, with the length they
/// have now: each may only shrink, and leaves this list once it fits.
const STILL_LONG: [(&str, usize); 0] = [];

/// The most lines a file of `src/` holds outside its test module.
const MAX_LINES: usize = 450;

#[test]
fn no_file_of_src_is_longer_than_450_lines_outside_its_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    let mut problems = Vec::new();
    let mut measured = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            measured += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            // Up to the test module (`#[cfg(test)]` then `mod ...`), if any.
            let len = lines
                .windows(2)
                .position(|w| {
                    let m = w[1].trim_start_matches("pub(crate) ").trim_start_matches("pub(super) ");
                    w[0].trim() == "#[cfg(test)]" && m.starts_with("mod ")
                })
                .unwrap_or(lines.len());
            let rel = path.strip_prefix(&src).unwrap().display().to_string();
            match STILL_LONG.iter().find(|(f, _)| *f == rel) {
                Some(&(_, was)) if len > was => problems.push(format!("{rel}: {len} lines, longer than its {was}")),
                Some(_) if len <= MAX_LINES => {
                    problems.push(format!("{rel}: {len} lines now fits; take it off STILL_LONG"));
                }
                Some(_) => {}
                None if len > MAX_LINES => problems.push(format!("{rel}: {len} lines, over {MAX_LINES}: split it")),
                None => {}
            }
        }
    }
    assert!(measured > 40, "src/ was not read: {measured} files");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
