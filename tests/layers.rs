//! The layer rule of src/lib.rs, checked on the source: a module imports
//! only from its own layer or a lower one, and the three modules of layer 3
//! (config, prepare, supervisor) never import each other.

use std::path::{Path, PathBuf};

/// The layer of a module path such as `config::model` or `proc`.
fn layer(module: &str) -> Option<u8> {
    let top = module.split("::").next().unwrap_or("");
    Some(match (top, module) {
        (_, m) if m.starts_with("config::model") => 1,
        (_, m)
            if m.starts_with("ctl::proto")
                || m.starts_with("ctl::server")
                || m.starts_with("ctl::http") =>
        {
            2
        }
        (_, m) if m.starts_with("ctl::client") => 4,
        // ctl/mod.rs only declares its three parts.
        ("ctl", "ctl") => 2,
        ("error" | "units" | "signals" | "yaml" | "template" | "users" | "cron", _) => 0,
        ("fsutil" | "proc", _) => 2,
        ("config" | "prepare" | "supervisor", _) => 3,
        ("cli" | "app" | "crash", _) => 4,
        _ => return None,
    })
}

/// The module a file under src/ is: `src/proc/spawn.rs` is `proc::spawn`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "tests") {
        parts.pop();
    }
    parts.join("::")
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

/// Every `crate::a::b` a file names, as `a::b` (or `a` alone).
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let words: Vec<&str> = path.split("::").filter(|w| !w.is_empty()).take(2).collect();
        out.push(words.join("::"));
    }
    // `super::` inside a module's own directory stays inside it.
    out
}

#[test]
fn modules_import_only_their_layer_or_lower() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in &files {
        let module = module_of(&src, f);
        if module == "lib" || module == "main" {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| panic!("{module}: not in the layer list"));
        let text = std::fs::read_to_string(f).expect("read");
        for dep in imports(&text) {
            let Some(theirs) = layer(&dep) else {
                problems.push(format!(
                    "{}: imports crate::{dep}, not in the layer list",
                    f.display()
                ));
                continue;
            };
            checked += 1;
            let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
            if theirs > own {
                problems.push(format!(
                    "{}: layer {own} module {module} imports crate::{dep} (layer {theirs})",
                    f.display()
                ));
            } else if own == 3 && theirs == 3 && top(&dep) != top(&module) {
                problems.push(format!(
                    "{}: layer 3 module {module} imports crate::{dep}: config, prepare and supervisor never import each other",
                    f.display()
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "the scan found only {checked} imports: is it reading src/?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_a_violation() {
    // The checker itself: an L2 file naming an L3 module is caught.
    assert_eq!(
        imports("use crate::supervisor::machine::Exit;"),
        vec!["supervisor::machine"]
    );
    assert_eq!(layer("supervisor::machine"), Some(3));
    assert_eq!(layer("config::model"), Some(1));
    assert_eq!(layer("config"), Some(3));
    assert_eq!(layer("users"), Some(0));
    assert!(layer("proc::spawn") < layer("supervisor"));
}
