//! The structure rules of src/lib.rs, checked on the source: a module
//! imports only from its own layer or a lower one (the table is
//! `mc_launcher::LAYERS`), the three modules of layer 3 (config, prepare,
//! supervisor) never import each other, and no file imports another that
//! imports it back, even through others.
//!
//! Every path a file names is resolved to the file that defines its
//! module: `crate::a::b`, `super::` (as often as written) and `self::`
//! from the module the path is written in (inline `mod x { … }` included),
//! a child module named bare (`use core::X` in supervisor/mod.rs), and
//! grouped imports (`use super::{a, b::c}`). Comments and literals are
//! blanked first, so a path in a doc comment is no import; a `mod x;`
//! declaration is no import either.

use mc_launcher::LAYERS;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles that are being broken on other branches, each the set of files
/// one cycle may span; a cycle inside one of these sets is reported, but
/// does not fail the test. An entry that matches no cycle any more fails
/// it: remove the entry.
const PENDING_CYCLES: &[&[&str]] = &[];

/// The layer of a module path such as `config::model` or `proc::spawn`:
/// the one of the longest entry of `LAYERS` it starts with.
fn layer(module: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (n, entries) in LAYERS.iter().enumerate() {
        for e in entries.iter() {
            let under = module == *e || module.starts_with(&format!("{e}::"));
            if under && best.is_none_or(|(len, _)| e.len() > len) {
                best = Some((e.len(), n));
            }
        }
    }
    best.map(|(_, n)| n)
}

/// One source file: its path from the crate root, its module and its text
/// with comments and literals blanked.
struct File {
    path: String,
    module: Vec<String>,
    code: String,
}

/// An import: file `from` names `name` of (or under) the module of file `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    from: usize,
    to: usize,
    name: String,
}

/// The module a file is: `proc/spawn.rs` is `proc::spawn`, `ctl/mod.rs`
/// is `ctl`, `lib.rs` the crate root.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") || rel == "lib.rs" {
        parts.pop();
    }
    parts
}

/// The text with comments, string, char and byte literals replaced by
/// spaces (line breaks kept).
fn blank(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let blank_to = |out: &mut String, from: usize, to: usize| {
        for ch in &c[from..to.min(c.len())] {
            out.push(if *ch == '\n' { '\n' } else { ' ' });
        }
    };
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        let prev_ident = i > 0 && ident(c[i - 1]);
        if at(0) == '/' && at(1) == '/' {
            let end = c[i..]
                .iter()
                .position(|&x| x == '\n')
                .map_or(c.len(), |p| i + p);
            blank_to(&mut out, i, end);
            i = end;
        } else if at(0) == '/' && at(1) == '*' {
            let (mut depth, mut j) = (0, i);
            while j < c.len() {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank_to(&mut out, i, j);
            i = j;
        } else if !prev_ident && (at(0) == 'r' || (at(0) == 'b' && at(1) == 'r')) && {
            let s = if at(0) == 'b' { 2 } else { 1 };
            let hashes = c[(i + s).min(c.len())..]
                .iter()
                .take_while(|&&x| x == '#')
                .count();
            c.get(i + s + hashes) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let s = if at(0) == 'b' { 2 } else { 1 };
            let hashes = c[i + s..].iter().take_while(|&&x| x == '#').count();
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let body = i + s + hashes + 1;
            let rest: String = c[body..].iter().collect();
            let end = rest.find(&close).map_or(c.len(), |p| {
                body + rest[..p].chars().count() + close.chars().count()
            });
            blank_to(&mut out, i, end);
            i = end;
        } else if at(0) == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            blank_to(&mut out, i, j + 1);
            i = j + 1;
        } else if at(0) == '\'' && (!prev_ident || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
        {
            // A char literal ('x', '\n', '\u{1F600}'), or a lifetime ('a).
            let end = if at(1) == '\\' {
                c.get(i + 3..)
                    .and_then(|r| r.iter().position(|&x| x == '\''))
                    .map(|p| i + 3 + p + 1)
            } else if at(2) == '\'' {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank_to(&mut out, i, end);
                    i = end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(at(0));
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::Path);
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(Tok::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// One item of a use tree at `t[*i]`, under `base`: `name…`, `self`,
/// `*` or `{…}`; every path it names goes to `out`.
fn item(t: &[Tok], i: &mut usize, mut base: Vec<String>, out: &mut Vec<Vec<String>>) {
    match t.get(*i) {
        Some(Tok::Punct('{')) => {
            *i += 1;
            while let Some(tok) = t.get(*i) {
                match tok {
                    Tok::Punct(',') => *i += 1,
                    Tok::Punct('}') => {
                        *i += 1;
                        break;
                    }
                    _ => {
                        let before = *i;
                        item(t, i, base.clone(), out);
                        // `as name` and anything unexpected: on to the next item.
                        while !matches!(t.get(*i), None | Some(Tok::Punct(',' | '}'))) {
                            *i += 1;
                        }
                        if *i == before {
                            *i += 1;
                        }
                    }
                }
            }
        }
        Some(Tok::Punct('*')) => {
            *i += 1;
            out.push(base);
        }
        Some(Tok::Ident(s)) => {
            *i += 1;
            if s != "self" {
                base.push(s.clone());
            }
            rest(t, i, base, out);
        }
        _ => out.push(base),
    }
}

/// After a path segment: `::` and more, or the end of the path.
fn rest(t: &[Tok], i: &mut usize, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    if t.get(*i) == Some(&Tok::Path) && !matches!(t.get(*i + 1), Some(Tok::Punct('<'))) {
        *i += 1;
        item(t, i, base, out);
    } else {
        out.push(base);
    }
}

/// Every absolute path (from the crate root) that `code`, the text of the
/// file of module `module`, names through `crate::`, `super::`, `self::`
/// or a child module of the module it is written in (`children`: the
/// modules that are files).
fn paths(code: &str, module: &[String], is_module: &dyn Fn(&[String]) -> bool) -> Vec<Vec<String>> {
    let t = tokens(code);
    let mut out = Vec::new();
    // Inline modules: (name, the brace depth outside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
                continue;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                i += 1;
                continue;
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some(name), Some(Tok::Punct('{'))) = (ident(t.get(i + 1)), t.get(i + 2)) {
                    inline.push((name.to_string(), depth));
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        let starts = i == 0 || !matches!(t[i - 1], Tok::Path | Tok::Punct('.'));
        let (Some(word), true, Some(Tok::Path)) = (ident(t.get(i)), starts, t.get(i + 1)) else {
            i += 1;
            continue;
        };
        let mut here: Vec<String> = module.to_vec();
        here.extend(inline.iter().map(|(n, _)| n.clone()));
        let base = match word {
            "crate" => Vec::new(),
            "self" => here,
            "super" => {
                here.pop();
                while t.get(i + 1) == Some(&Tok::Path) && ident(t.get(i + 2)) == Some("super") {
                    here.pop();
                    i += 2;
                }
                here
            }
            child
                if inline.is_empty() && {
                    let mut m = module.to_vec();
                    m.push(child.to_string());
                    is_module(&m)
                } =>
            {
                let mut m = module.to_vec();
                m.push(child.to_string());
                m
            }
            _ => {
                i += 1;
                continue;
            }
        };
        i += 1;
        rest(&t, &mut i, base, &mut out);
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The library's files (main.rs is the binary, a crate of its own).
fn read_src() -> Vec<File> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    rust_files(&src, &mut found);
    found.sort();
    found
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).expect("under src").to_string_lossy();
            (rel != "main.rs").then(|| File {
                path: format!("src/{rel}"),
                module: module_of(&rel),
                code: blank(&std::fs::read_to_string(f).expect("read")),
            })
        })
        .collect()
}

/// Every import between files: the file whose module is the longest
/// prefix of each path named.
fn imports(files: &[File]) -> Vec<Import> {
    let by_module: BTreeMap<&[String], usize> = files
        .iter()
        .enumerate()
        .map(|(n, f)| (f.module.as_slice(), n))
        .collect();
    let is_module = |m: &[String]| by_module.contains_key(m);
    let mut out = Vec::new();
    for (from, f) in files.iter().enumerate() {
        for path in paths(&f.code, &f.module, &is_module) {
            let Some((len, to)) = (0..=path.len())
                .rev()
                .find_map(|k| by_module.get(&path[..k]).map(|&to| (k, to)))
            else {
                continue;
            };
            let name = path.get(len).cloned().unwrap_or_else(|| "*".into());
            let import = Import { from, to, name };
            if to != from && !out.contains(&import) {
                out.push(import);
            }
        }
    }
    out
}

/// The strongly connected groups of two files or more (Tarjan).
fn cycles(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    struct T<'a> {
        next: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        count: usize,
        out: &'a mut Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.count);
        t.low[v] = t.count;
        t.count += 1;
        t.stack.push(v);
        t.on[v] = true;
        for w in t.next[v].clone() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut group = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                group.push(w);
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                t.out.push(group);
            }
        }
    }
    let mut out = Vec::new();
    let mut next = vec![Vec::new(); n];
    for &(a, b) in edges {
        next[a].push(b);
    }
    let mut t = T {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        count: 0,
        out: &mut out,
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    out.sort();
    out
}

/// A cycle as the report says it: each import inside it, with the names.
fn describe(files: &[File], imports: &[Import], group: &[usize]) -> String {
    let mut ties: BTreeMap<(usize, usize), BTreeSet<&str>> = BTreeMap::new();
    for im in imports {
        if group.contains(&im.from) && group.contains(&im.to) {
            ties.entry((im.from, im.to)).or_default().insert(&im.name);
        }
    }
    let names: Vec<&str> = group.iter().map(|&f| files[f].path.as_str()).collect();
    let mut s = format!(
        "import cycle of {} files: {}",
        group.len(),
        names.join(", ")
    );
    for ((a, b), what) in ties {
        let what: Vec<&str> = what.into_iter().collect();
        s.push_str(&format!(
            "\n  {} -> {}: {}",
            files[a].path,
            files[b].path,
            what.join(", ")
        ));
    }
    s
}

#[test]
fn modules_import_only_their_layer_or_lower() {
    let files = read_src();
    let mut problems = Vec::new();
    let mut checked = 0;
    for im in imports(&files) {
        let (from, to) = (&files[im.from], &files[im.to]);
        if from.module.is_empty() {
            continue; // lib.rs declares the modules
        }
        let (module, dep) = (from.module.join("::"), to.module.join("::"));
        let Some(own) = layer(&module) else {
            problems.push(format!("{}: {module} is not in LAYERS", from.path));
            continue;
        };
        let Some(theirs) = layer(&dep) else {
            problems.push(format!(
                "{}: imports {} of crate::{dep}, not in LAYERS",
                from.path, im.name
            ));
            continue;
        };
        checked += 1;
        let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
        if theirs > own {
            problems.push(format!(
                "{}: layer {own} module {module} imports {} of {dep} (layer {theirs})",
                from.path, im.name
            ));
        } else if own == 3 && theirs == 3 && top(&dep) != top(&module) {
            problems.push(format!(
                "{}: layer 3 module {module} imports {} of {dep}: config, prepare and supervisor never import each other",
                from.path, im.name
            ));
        }
    }
    assert!(
        checked > 200,
        "the scan found only {checked} imports: is it reading src/?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_file_imports_itself_through_others() {
    let files = read_src();
    let imports = imports(&files);
    let edges: Vec<(usize, usize)> = imports.iter().map(|im| (im.from, im.to)).collect();
    let mut failures = Vec::new();
    let mut pending_seen = vec![false; PENDING_CYCLES.len()];
    for group in cycles(files.len(), &edges) {
        let text = describe(&files, &imports, &group);
        let pending = PENDING_CYCLES
            .iter()
            .position(|set| group.iter().all(|&f| set.contains(&files[f].path.as_str())));
        match pending {
            Some(p) => {
                pending_seen[p] = true;
                eprintln!("pending (PENDING_CYCLES): {text}");
            }
            None => failures.push(text),
        }
    }
    for (set, seen) in PENDING_CYCLES.iter().zip(pending_seen) {
        if !seen {
            failures.push(format!(
                "no cycle left among {}: remove it from PENDING_CYCLES",
                set.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Files for the scanner's own tests.
fn fake(files: &[(&str, &str)]) -> Vec<File> {
    files
        .iter()
        .map(|(rel, text)| File {
            path: format!("src/{rel}"),
            module: module_of(rel),
            code: blank(text),
        })
        .collect()
}

fn ties(files: &[File]) -> Vec<String> {
    imports(files)
        .iter()
        .map(|im| {
            format!(
                "{} -> {}: {}",
                files[im.from].path, files[im.to].path, im.name
            )
        })
        .collect()
}

#[test]
fn the_scan_resolves_every_kind_of_path() {
    let files = fake(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a/mod.rs", "pub mod x; pub mod y; pub use x::X;"),
        (
            "a/x.rs",
            "use super::y::{self, Y as Z};\nfn f() { super::super::b::g(); }",
        ),
        (
            "a/y.rs",
            "// crate::b::comment is no import\nconst S: &str = \"crate::b::s\";\nuse crate::{b::{c::C, *}};\nmod t { use super::*; fn h() { self::i(); } }",
        ),
        ("b/mod.rs", "pub mod c; fn g() { let s = '\"'; crate::a::X::new(); }"),
        ("b/c.rs", "pub struct C<'a>(&'a str); fn z() { Vec::<u8>::new(); }"),
    ]);
    assert_eq!(
        ties(&files),
        vec![
            "src/a/mod.rs -> src/a/x.rs: X",
            "src/a/x.rs -> src/a/y.rs: *",
            "src/a/x.rs -> src/a/y.rs: Y",
            "src/a/x.rs -> src/b/mod.rs: g",
            "src/a/y.rs -> src/b/c.rs: C",
            "src/a/y.rs -> src/b/mod.rs: *",
            "src/b/mod.rs -> src/a/mod.rs: X",
        ]
    );
}

#[test]
fn the_scan_sees_a_cycle_and_a_layer_violation() {
    let files = fake(&[
        ("p/a.rs", "use super::b::B;"),
        ("p/b.rs", "use super::c::C;"),
        ("p/c.rs", "fn f() { crate::p::a::g(); }"),
        ("p/d.rs", "use super::a::A;"),
    ]);
    let imports = imports(&files);
    let edges: Vec<(usize, usize)> = imports.iter().map(|im| (im.from, im.to)).collect();
    let found = cycles(files.len(), &edges);
    assert_eq!(found, vec![vec![0, 1, 2]]);
    let text = describe(&files, &imports, &found[0]);
    assert!(text.contains("src/p/c.rs -> src/p/a.rs: g"), "{text}");
    assert_eq!(cycles(2, &[(0, 1)]), Vec::<Vec<usize>>::new());
    // The table in lib.rs: the longest entry decides.
    assert_eq!(layer("supervisor::machine"), Some(3));
    assert_eq!(layer("config::model"), Some(1));
    assert_eq!(layer("config::modelling"), Some(3));
    assert_eq!(layer("config"), Some(3));
    assert_eq!(layer("ctl::client"), Some(4));
    assert_eq!(layer("ctl::proto"), Some(2));
    assert_eq!(layer("users"), Some(0));
    assert_eq!(layer("nowhere"), None);
    assert!(layer("proc::spawn") < layer("supervisor"));
}
