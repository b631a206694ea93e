//! The origin's modules import each other in one direction
//! (docs/architecture.md, "Module layering"): a test over the `crate::` and
//! `super::` paths of its source, so that no cycle can creep in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module of origin/src with the modules its code names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let name = |p: &Path| {
        let rel = p.strip_prefix(&src).unwrap().with_extension("");
        let rel = rel
            .to_str()
            .unwrap()
            .trim_end_matches("/mod")
            .replace('/', "::");
        rel
    };
    let modules: BTreeSet<String> = files.iter().map(|p| name(p)).collect();
    // The longest module that `path` lies in.
    let resolve = |path: &str| {
        let mut parts: Vec<&str> = path.split("::").collect();
        while !parts.is_empty() {
            let m = parts.join("::");
            if modules.contains(&m) {
                return Some(m);
            }
            parts.pop();
        }
        None
    };
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = name(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests' `super` is the module itself: leave them out.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (prefix, base) in [("crate::", ""), ("super::", parent)] {
                for (i, _) in line.match_indices(prefix) {
                    if line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let rest = &line[i + prefix.len()..];
                    let end = rest
                        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                        .unwrap_or(rest.len());
                    let path = rest[..end].trim_end_matches(':');
                    let full = if base.is_empty() {
                        path.to_owned()
                    } else {
                        format!("{base}::{path}")
                    };
                    if let Some(m) = resolve(&full) {
                        if m != module && !m.is_empty() {
                            deps.insert(m);
                        }
                    }
                }
            }
        }
        graph.insert(module, deps);
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v, l);
                } else if self.on_stack.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_module_cycle() {
    let graph = module_graph();
    assert!(graph.len() > 20, "read {} modules", graph.len());
    assert!(
        graph["app::push"].contains("state"),
        "the reader sees imports"
    );
    assert_eq!(
        cycles(&graph),
        Vec::<BTreeSet<String>>::new(),
        "modules that import each other in a cycle"
    );
}

#[test]
fn the_reader_finds_a_cycle() {
    let mut graph = module_graph();
    graph.get_mut("store").unwrap().insert("app".into());
    graph.get_mut("app").unwrap().insert("store".into());
    assert!(cycles(&graph)
        .iter()
        .any(|c| c.contains("store") && c.contains("app")));
}
