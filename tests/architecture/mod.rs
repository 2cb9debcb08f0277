//! The shape of the source tree, checked: modules depend on each other without cycles. Read
//! from the files themselves (`use` paths and `crate::`/`super::` paths, outside test code), so
//! a new cycle fails CI instead of waiting for a reviewer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: its path from the crate root (`["oauth", "exchange"]`).
type Module = Vec<String>;

struct Tree {
    /// Every module, with its source file.
    files: BTreeMap<Module, PathBuf>,
    /// `pub use child::{Name, …}` in a module: which child a re-exported name comes from;
    /// `pub use child::*` is recorded under `*`.
    reexports: BTreeMap<Module, BTreeMap<String, String>>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn load() -> Tree {
    let mut files = BTreeMap::new();
    collect(&src(), Vec::new(), &mut files);
    let mut reexports = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut names = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("pub use ") else {
                continue;
            };
            let rest = rest.trim_end_matches(';');
            let Some((child, items)) = rest.split_once("::") else {
                continue;
            };
            if child == "crate" || child == "super" {
                continue;
            }
            let items = items.trim_start_matches('{').trim_end_matches('}');
            for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let name = item.rsplit("::").next().unwrap().split(" as ").last().unwrap().trim();
                names.insert(name.to_owned(), child.to_owned());
            }
        }
        reexports.insert(module.clone(), names);
    }
    Tree { files, reexports }
}

fn collect(dir: &Path, prefix: Module, files: &mut BTreeMap<Module, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            let mut module = prefix.clone();
            module.push(name);
            collect(&path, module, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut module = prefix.clone();
            match name.as_str() {
                "lib" | "main" if prefix.is_empty() => continue,
                "mod" => {}
                // Test modules in files of their own.
                "tests" => continue,
                _ => module.push(name),
            }
            files.insert(module, path);
        }
    }
}

impl Tree {
    /// The module a path names, following re-exports: `crate::config::Client` is
    /// `config::model`, `super::discovery::Metadata` from `oauth::exchange` is
    /// `oauth::discovery`.
    fn resolve(&self, from: &Module, path: &[&str]) -> Option<Module> {
        let (mut module, rest): (Module, &[&str]) = match *path.first()? {
            "crate" => (Vec::new(), &path[1..]),
            "super" => {
                let mut m = from.clone();
                m.pop()?;
                (m, &path[1..])
            }
            "self" => (from.clone(), &path[1..]),
            _ => return None,
        };
        for part in rest {
            let mut child = module.clone();
            child.push((*part).to_owned());
            if self.files.contains_key(&child) {
                module = child;
                continue;
            }
            // An item of `module`, perhaps re-exported from a child.
            let names = &self.reexports[&module];
            if let Some(c) = names.get(*part).or_else(|| names.get("*")) {
                let mut child = module.clone();
                child.push(c.clone());
                if self.files.contains_key(&child) {
                    module = child;
                }
            }
            break;
        }
        (!module.is_empty()).then_some(module)
    }

    /// Which modules `module` uses, outside its tests.
    fn dependencies(&self, module: &Module) -> BTreeSet<Module> {
        let text = std::fs::read_to_string(&self.files[module]).unwrap();
        // Test code may reach anywhere; it starts at the `#[cfg(test)]` of its module.
        let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
        let mut found = BTreeSet::new();
        for path in paths(code) {
            let parts: Vec<&str> = path.split("::").collect();
            if let Some(target) = self.resolve(module, &parts)
                && &target != module
            {
                found.insert(target);
            }
        }
        found
    }
}

/// Every `crate::…`, `super::…` and `self::…` path in `code`, with `use` groups expanded one
/// level (`use super::{a, b::C}` gives `super::a` and `super::b::C`).
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let tail = &code[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '{'))
                .unwrap_or(tail.len());
            let path = &tail[..end];
            if let Some((head, _)) = path.split_once('{') {
                let group_end = tail.find('}').unwrap_or(tail.len());
                for item in tail[head.len() + 1..group_end].split(',') {
                    let item = item.trim().split(" as ").next().unwrap();
                    if !item.is_empty() && item != "self" {
                        out.push(format!("{head}{item}"));
                    }
                }
            } else {
                out.push(path.trim_end_matches(':').to_owned());
            }
        }
    }
    out
}

/// A module and its ancestors, for grouping: `oauth::exchange` is within `oauth`.
fn within(module: &Module, ancestor: &Module) -> bool {
    module.len() >= ancestor.len() && module[..ancestor.len()] == ancestor[..]
}

#[test]
fn modules_depend_on_each_other_without_cycles() {
    let tree = load();
    assert!(tree.files.len() > 30, "found only {} modules", tree.files.len());
    // At every level, siblings (the top-level modules; the files of `oauth`, `config`, …) form
    // a graph: A → B if anything inside A uses anything inside B.
    let parents: BTreeSet<Module> = tree.files.keys().map(|m| m[..m.len() - 1].to_vec()).collect();
    let mut cycles = Vec::new();
    for parent in &parents {
        let siblings: Vec<Module> = tree
            .files
            .keys()
            .filter(|m| m.len() > parent.len() && within(m, parent))
            .map(|m| m[..parent.len() + 1].to_vec())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut edges: BTreeMap<&Module, BTreeSet<&Module>> = BTreeMap::new();
        for module in tree
            .files
            .keys()
            .filter(|m| m.len() > parent.len() && within(m, parent))
        {
            let from = siblings.iter().find(|s| within(module, s)).unwrap();
            for dep in tree.dependencies(module) {
                if let Some(to) = siblings.iter().find(|s| within(&dep, s))
                    && to != from
                {
                    edges.entry(from).or_default().insert(to);
                }
            }
        }
        for start in &siblings {
            if let Some(cycle) = cycle_from(start, &edges) {
                cycles.push(cycle.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" → "));
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// A path from `start` back to itself, if there is one.
fn cycle_from<'a>(start: &'a Module, edges: &BTreeMap<&'a Module, BTreeSet<&'a Module>>) -> Option<Vec<&'a Module>> {
    let mut stack = vec![(start, vec![start])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(at).into_iter().flatten() {
            if *next == start {
                let mut cycle = path.clone();
                cycle.push(start);
                return Some(cycle);
            }
            if seen.insert(*next) {
                let mut longer = path.clone();
                longer.push(next);
                stack.push((next, longer));
            }
        }
    }
    None
}

/// The checker itself finds a cycle and follows re-exports.
#[test]
fn the_cycle_check_can_fail() {
    let tree = load();
    let exchange = vec!["oauth".to_owned(), "exchange".to_owned()];
    assert_eq!(
        tree.resolve(&exchange, &["super", "discovery", "Metadata"]),
        Some(vec!["oauth".to_owned(), "discovery".to_owned()])
    );
    assert_eq!(
        tree.resolve(&exchange, &["crate", "config", "RequestSpec"]),
        Some(vec!["config".to_owned(), "model".to_owned()])
    );
    let (a, b) = (vec!["a".to_owned()], vec!["b".to_owned()]);
    let edges = BTreeMap::from([(&a, BTreeSet::from([&b])), (&b, BTreeSet::from([&a]))]);
    assert_eq!(cycle_from(&a, &edges), Some(vec![&a, &b, &a]));
}

/// The layers of the crate, lowest first: a module may use its own layer and those below, never
/// one above. The values everything passes around; what is configured, asked of the IdP,
/// counted and stored; the stages that move a token (refresh, fleet, files, socket, proxy); and
/// what drives them (the daemon and the command line). `fuzzing` only opens doors for `fuzz/`.
const LAYERS: &[&[&str]] = &[
    &["token", "secret", "logging"],
    &["config", "oauth", "metrics", "store"],
    &["refresh", "fleet", "output", "server", "proxy"],
    &["daemon", "cli"],
];

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

#[test]
fn lower_layers_never_use_higher_ones() {
    let tree = load();
    let mut upward = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for module in tree.files.keys() {
        let top = module[0].as_str();
        if top == "fuzzing" {
            continue;
        }
        let Some(from) = layer(top) else {
            unplaced.insert(top.to_owned());
            continue;
        };
        for dep in tree.dependencies(module) {
            let to_top = dep[0].as_str();
            match layer(to_top) {
                Some(to) if to > from => {
                    upward.insert(format!("{} → {}", module.join("::"), dep.join("::")));
                }
                None if to_top != "fuzzing" => {
                    unplaced.insert(to_top.to_owned());
                }
                _ => {}
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS): {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "modules that use a higher layer:\n{}",
        upward.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The layer check sees a use of a higher layer.
#[test]
fn the_layer_check_can_fail() {
    assert!(layer("token") < layer("config") && layer("config") < layer("refresh"));
    assert!(layer("refresh") < layer("daemon"));
    let tree = load();
    // `daemon::tasks` uses `refresh`, so `refresh` using `daemon` would be reported.
    let tasks = vec!["daemon".to_owned(), "tasks".to_owned()];
    assert!(tree.dependencies(&tasks).iter().any(|d| d[0] == "refresh"));
    assert_eq!(layer("nowhere"), None);
}
