//! The top-level modules of `src/` import each other without a cycle, so each can be read,
//! tested and changed knowing only what it imports.
//!
//! The graph has one node per top-level module (`src/x.rs` or `src/x/`) and an edge x → y for
//! every `crate::y` path in x's code (`use crate::y::…`, `use crate::{y, …}`, `crate::y::f()`).
//! Comments and a file's closing `#[cfg(test)] mod tests` are left out: a test may build its
//! data with any module.
//!
//! The rule:
//! - the composition root (`lib`, `main`, `app`, `cli`) is not part of the graph: it wires
//!   every module together, and `cli`'s argument structs are plain typed input that `config`
//!   and the commands read;
//! - the leaf utilities ([`LEAVES`]) import no other module of the crate, so any module may
//!   import them;
//! - every other import must keep the graph acyclic: when it is not, the test prints one cycle
//!   with the files that make each of its edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Wires everything; may import any module.
const ROOT: &[&str] = &["lib", "main", "app", "cli"];

/// Small mechanisms with no knowledge of the rest: bodies, readiness, addresses, colours,
/// the build stamp, the file-descriptor limit and the data-directory lock.
const LEAVES: &[&str] = &[
    "body",
    "build_info",
    "colour",
    "data_lock",
    "fd_limit",
    "health",
    "net",
];

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its trailing unit tests.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segments of the paths in a `{…}` group that starts `text` (just after the `{`).
fn group_heads(text: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 1;
    let mut item_start = true;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if depth == 1 && item_start && !c.is_whitespace() => {
                item_start = false;
                if c.is_ascii_lowercase() {
                    heads.push(ident_at(&text[i..]));
                }
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules `code` names through `crate::`.
fn imports(code: &str) -> BTreeSet<&str> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => found.extend(group_heads(group)),
            None => {
                found.insert(ident_at(rest));
            }
        }
    }
    found.retain(|m| !m.is_empty() && *m != "self" && *m != "super");
    found
}

fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for path in files {
        let relative = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = relative.split('/').next().unwrap();
        let module = top.strip_suffix(".rs").unwrap_or(top).to_owned();
        if module == "bin" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for target in imports(&code) {
            if target != module {
                edges
                    .entry(target.to_owned())
                    .or_default()
                    .insert(relative.clone());
            }
        }
    }
    graph
}

/// One cycle of `graph`, as the modules along it (the first repeated at the end).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(graph, next, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(graph, node, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

/// The graph the rule constrains: the root's nodes and every edge into them left out.
fn without_root(graph: &Graph) -> Graph {
    graph
        .iter()
        .filter(|(module, _)| !ROOT.contains(&module.as_str()))
        .map(|(module, edges)| {
            let edges = edges
                .iter()
                .filter(|(target, _)| !ROOT.contains(&target.as_str()))
                .map(|(target, files)| (target.clone(), files.clone()))
                .collect();
            (module.clone(), edges)
        })
        .collect()
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = without_root(&module_graph());
    assert!(graph.contains_key("proxy") && graph.contains_key("diagnose"));
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let files = &graph[&pair[0]][&pair[1]];
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                format!("  {} -> {}  ({})", pair[0], pair[1], files.join(", "))
            })
            .collect();
        panic!(
            "the modules import each other in a cycle: {}\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn the_leaf_utilities_import_no_other_module() {
    let graph = module_graph();
    for leaf in LEAVES {
        let edges = graph
            .get(*leaf)
            .unwrap_or_else(|| panic!("{leaf} is not a module of src/"));
        let imported: Vec<String> = edges
            .iter()
            .map(|(target, files)| {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                format!("{target} ({})", files.join(", "))
            })
            .collect();
        assert!(
            imported.is_empty(),
            "{leaf} is a leaf utility but imports {}",
            imported.join(", ")
        );
    }
}

#[test]
fn the_parser_reads_single_paths_groups_and_inline_paths() {
    let code = code_of(
        "use crate::proxy::Route;\nuse crate::{body::{self, ProxyBody}, ledger};\n\
         // crate::commented\nfn f() { crate::metrics::count(); }\n\
         #[cfg(test)]\nmod tests { use crate::emulator; }\n",
    );
    let found: Vec<&str> = imports(&code).into_iter().collect();
    assert_eq!(found, ["body", "ledger", "metrics", "proxy"]);
}

#[test]
fn only_the_composition_root_starts_the_emulator() {
    let graph = module_graph();
    assert!(
        graph.contains_key("emulator"),
        "emulator is a module of src/"
    );
    let importers: Vec<String> = graph
        .iter()
        .filter(|(module, _)| !matches!(module.as_str(), "emulator" | "app" | "main" | "lib"))
        .filter_map(|(module, edges)| {
            edges.get("emulator").map(|files| {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                format!("{module} ({})", files.join(", "))
            })
        })
        .collect();
    assert!(
        importers.is_empty(),
        "the emulator is test and rehearsal tooling, started by app only, yet imported by {}",
        importers.join(", ")
    );
}
