//! The layer rule of ARCHITECTURE.md, checked on the source: every room
//! (a top-level module of `src/`) has a tier, a file names only rooms of
//! its own tier or below, and no two files name each other in a circle.
//!
//! A file "names" a module when its code (comments aside) holds a
//! `crate::…` path (in a `use` or inline), a `super::…` path, or a
//! `use crate::{…}` group. A room's root file (`mod.rs`) and the files
//! below it are one unit for the circle check: the root declares and
//! shares, its parts use it, as Rust modules do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The tiers, highest first: a room may name rooms in its own tier and in
/// the tiers after it, never one before it. Every room of `src/` is listed
/// exactly once; a new room must be placed here (and in ARCHITECTURE.md).
const TIERS: &[(&str, &[&str])] = &[
    ("entry points", &["main", "cli", "bench"]),
    ("runtime", &["runtime"]),
    ("edges", &["api", "federation", "console", "notify"]),
    ("behaviour", &["node"]),
    (
        "domain",
        &[
            "provision",
            "wire",
            "audit",
            "config",
            "routing",
            "directory",
            "report",
            "geo",
            "crypto",
            "identity",
        ],
    ),
    ("storage", &["store"]),
    ("leaves", &["pb", "faults"]),
];

/// Within the domain tier the rooms are ordered too (highest first), so
/// that they cannot form a circle between them.
const DOMAIN_ORDER: &[&str] = &[
    "provision",
    "wire",
    "audit",
    "config",
    "routing",
    "directory",
    "report",
    "geo",
    "crypto",
    "identity",
];

struct File {
    /// Module path, e.g. `node::intake`; `node` for `node/mod.rs`; `lib`.
    module: String,
    path: PathBuf,
    code: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files() -> Vec<File> {
    let mut out = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src()).expect("under src");
                let mut parts: Vec<String> = rel
                    .with_extension("")
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|p| p == "mod") {
                    parts.pop();
                }
                let module = parts.join("::");
                let text = std::fs::read_to_string(&path).expect("read file");
                out.push(File {
                    module,
                    path,
                    code: strip_comments(&text),
                });
            }
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// The text without `//` comments and without string literals' contents
/// (a path inside a string or a comment is not an import).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                in_str = true;
                out.push('"');
            }
            // A char literal holding a quote would open a string.
            '\'' if chars.peek() == Some(&'"') => {
                out.push('\'');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The module paths (as segments after `crate`) a file names.
fn named_paths(file: &File) -> BTreeSet<Vec<String>> {
    let code = &file.code;
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        // `$crate::` in a macro is the same crate.
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                out.insert(segments(item));
            }
        } else {
            out.insert(segments(rest));
        }
    }
    // `super::x` relative to this file's module.
    let own: Vec<&str> = file.module.split("::").collect();
    let is_root = file.path.file_name().is_some_and(|n| n == "mod.rs");
    for (i, _) in code.match_indices("super::") {
        let before = &code[..i];
        if before.ends_with("super::") {
            continue; // counted from the first `super::` of the chain
        }
        let mut rest = &code[i..];
        // A `mod.rs` file's module is its directory; any other file's
        // parent is the module that declares it.
        let mut base: Vec<&str> = own.clone();
        if !is_root || base.len() > 1 {
            // nothing: popping below handles both cases
        }
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let mut path: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                let mut p = path.clone();
                p.extend(segments(item));
                out.insert(p);
            }
        } else {
            path.extend(segments(rest));
            out.insert(path);
        }
    }
    out.retain(|p| !p.is_empty() && p[0] != "self");
    out
}

fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let id = ident_at(rest);
        if id.is_empty() {
            break;
        }
        out.push(id.to_owned());
        match rest[id.len()..].strip_prefix("::") {
            Some(r) if !r.starts_with('{') && !r.starts_with('*') => rest = r,
            Some(r) if r.starts_with('{') => {
                // `a::{b, c}`: the module is `a`; its items follow.
                break;
            }
            _ => break,
        }
    }
    out
}

/// The items of a `{ … }` group (the text after its `{`), split at its
/// top-level commas.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut items = Vec::new();
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(group[start..i].trim());
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

fn tier_of(room: &str) -> Option<usize> {
    TIERS.iter().position(|(_, rooms)| rooms.contains(&room))
}

/// The file a path names: the longest prefix of it that is a module.
fn resolve(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn room(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The unit a module belongs to for the circle check: a room's root file
/// and the files below it are one when the root is their ancestor.
fn within(a: &str, b: &str) -> bool {
    b.starts_with(&format!("{a}::")) || a.starts_with(&format!("{b}::"))
}

#[test]
fn every_room_has_a_tier() {
    let rooms: BTreeSet<String> = files()
        .iter()
        .map(|f| room(&f.module).to_owned())
        .filter(|r| r != "lib")
        .collect();
    let listed: BTreeSet<String> = TIERS
        .iter()
        .flat_map(|(_, r)| r.iter().map(|s| s.to_string()))
        .collect();
    let unplaced: Vec<_> = rooms.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&rooms).collect();
    assert!(unplaced.is_empty(), "rooms without a tier: {unplaced:?}");
    assert!(gone.is_empty(), "tiers name rooms src/ lacks: {gone:?}");
    let domain: BTreeSet<&str> = DOMAIN_ORDER.iter().copied().collect();
    let tier: BTreeSet<&str> = TIERS[4].1.iter().copied().collect();
    assert_eq!(
        domain, tier,
        "DOMAIN_ORDER must order exactly the domain tier"
    );
}

#[test]
fn nothing_imports_upward() {
    let files = files();
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut upward = Vec::new();
    for f in &files {
        let from = room(&f.module);
        let Some(from_tier) = tier_of(from) else {
            continue; // lib.rs declares the rooms
        };
        for path in named_paths(f) {
            let Some(target) = resolve(&path, &modules) else {
                continue;
            };
            let to = room(&target);
            if to == from {
                continue;
            }
            let Some(to_tier) = tier_of(to) else { continue };
            let up = to_tier < from_tier
                || (to_tier == from_tier
                    && from_tier == 4
                    && DOMAIN_ORDER.iter().position(|r| *r == to)
                        < DOMAIN_ORDER.iter().position(|r| *r == from))
                || (to_tier == from_tier && from_tier != 4 && from_tier != 0);
            if up {
                upward.push(format!(
                    "{} names {} ({} → {})",
                    f.path.strip_prefix(src()).unwrap_or(&f.path).display(),
                    path.join("::"),
                    TIERS[from_tier].0,
                    TIERS[to_tier].0,
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layer order (ARCHITECTURE.md, Layers):\n{}",
        upward.join("\n")
    );
}

/// gRPC is the edges' business: below them (the node's behaviour, the
/// domain, the store) no file names tonic; the node returns typed
/// outcomes that `api::status` alone turns into statuses. (`pb`, the
/// generated code, is the one exception: it holds the services' stubs.)
#[test]
fn nothing_below_the_edges_speaks_grpc() {
    let mut found = Vec::new();
    for f in files() {
        let room = room(&f.module);
        let Some(tier) = tier_of(room) else { continue };
        if tier < 3 || room == "pb" {
            continue;
        }
        for (n, line) in f.code.lines().enumerate() {
            if line.contains("tonic::") || line.contains("tonic_") {
                found.push(format!(
                    "{}:{}: {}",
                    f.path.strip_prefix(src()).unwrap_or(&f.path).display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "tonic below the edges:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_files_name_each_other_in_a_circle() {
    let files = files();
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        if f.module == "lib" || f.module == "main" {
            continue;
        }
        let edges = graph.entry(f.module.clone()).or_default();
        for path in named_paths(f) {
            if let Some(target) = resolve(&path, &modules)
                && target != f.module
                && !within(&f.module, &target)
            {
                edges.insert(target);
            }
        }
    }
    let circles = find_circles(&graph);
    assert!(
        circles.is_empty(),
        "files that name each other in a circle:\n{}",
        circles
            .iter()
            .map(|c| c.join(" → "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// One circle through each strongly connected group of the graph
/// (Tarjan's algorithm, then a path back to the group's first member).
fn find_circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(edges) = s.graph.get(v) {
            for w in edges {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w);
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                s.groups.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.groups
        .iter()
        .map(|group| {
            let members: BTreeSet<&str> = group.iter().copied().collect();
            let start = *group.iter().min().expect("non-empty group");
            // Breadth-first within the group from `start` back to itself.
            let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut end = None;
            while let Some(v) = queue.pop_front() {
                for w in graph.get(v).into_iter().flatten() {
                    let w = w.as_str();
                    if !members.contains(w) {
                        continue;
                    }
                    if w == start {
                        end = Some(v);
                        queue.clear();
                        break;
                    }
                    if !prev.contains_key(w) {
                        prev.insert(w, v);
                        queue.push_back(w);
                    }
                }
            }
            let mut circle = vec![start.to_owned()];
            let mut v = end.unwrap_or(start);
            let mut back = vec![v.to_owned()];
            while v != start {
                v = prev.get(v).copied().unwrap_or(start);
                if v != start {
                    back.push(v.to_owned());
                }
            }
            back.reverse();
            if back.first().map(String::as_str) != Some(start) {
                circle.extend(back);
            }
            circle.push(start.to_owned());
            circle
        })
        .collect()
}

/// The checker itself: it must see a `use crate::{…}` group, inline paths,
/// `super::` paths, and ignore comments and strings.
#[test]
fn the_checker_sees_every_kind_of_path() {
    let file = File {
        module: "node::amend".into(),
        path: src().join("node/amend.rs"),
        code: strip_comments(
            "use crate::{api::status, store::{Tx, Row}};\n\
             // crate::cli::nothing\n\
             let s = \"crate::bench::nothing\";\n\
             fn f() -> crate::federation::worker::X { super::receive::y() }\n",
        ),
    };
    let named = named_paths(&file);
    let has = |p: &[&str]| named.contains(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(has(&["api", "status"]), "{named:?}");
    assert!(has(&["store"]), "{named:?}");
    assert!(has(&["federation", "worker", "X"]), "{named:?}");
    assert!(has(&["node", "receive", "y"]), "{named:?}");
    assert!(!named.iter().any(|p| p[0] == "cli" || p[0] == "bench"));
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    graph.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_circles(&graph), vec![vec!["a", "b", "c", "a"]]);
}

/// The console calls the node's functions, as the Operator service does:
/// it holds no SQL and no store handle of its own (ARCHITECTURE.md).
#[test]
fn the_console_writes_no_sql() {
    let mut found = Vec::new();
    for f in files() {
        if room(&f.module) != "console" {
            continue;
        }
        for (n, line) in f.code.lines().enumerate() {
            if line.contains("sqlx") || line.contains(".store.") || line.contains("store::Store") {
                found.push(format!("{}:{}: {}", f.path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the console reaches the store itself:\n{}",
        found.join("\n")
    );
}
