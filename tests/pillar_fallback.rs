//! `pillar.on_invalid: last-good` (README "The prepare phase"): an invalid
//! override at start is never installed; the last valid one, kept in the
//! state dir, is, and one warning record names the file and line of the
//! error and the copy started on. Without a copy the start stops (78).

mod common;
use common::tree::{Tree, IMAGE_PILLAR};
use common::*;

const CONFIG: &str = r#"pillar:
  on_invalid: last-good
ssh:
  sshd: never
reconfigure:
  steps:
    - template:
        src: "{{ paths.project }}/.salt/files/app.conf.j2"
        dest: "{{ paths.volume }}/configuration/app.conf"
"#;

fn site(s: &str) -> String {
    format!("makina-projects.demo:\n  data:\n    site: {s}\n")
}

fn tree(tag: &str) -> Tree {
    let t = Tree::new(tag, CONFIG);
    write(
        &t.project().join(".salt/files/app.conf.j2"),
        "site={{ pillar['makina-projects.demo'].data.site }}\n",
    );
    t
}

/// A tree started once, cleanly, on a valid override (`site("one")`).
fn started_on_one(tag: &str) -> Tree {
    let t = tree(tag);
    write(&t.source(), &site("one"));
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    t
}

fn app_conf(t: &Tree) -> String {
    std::fs::read_to_string(t.volume().join("configuration/app.conf")).unwrap_or_default()
}

#[test]
fn an_invalid_override_starts_on_the_last_valid_one_loudly() {
    let t = started_on_one("lastgood");
    let copy = t.state().join("pillar-last-good.sls");
    assert_eq!(std::fs::read_to_string(&copy).ok(), Some(site("one")));
    assert_eq!(app_conf(&t), "site=one\n");

    // A broken edit: the start goes on with the last valid override.
    write(&t.source(), "makina-projects.demo:\n  data: [1, 2\n");
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(t.pillar()).ok(),
        Some(site("one")),
        "{}",
        out.all()
    );
    assert_eq!(app_conf(&t), "site=one\n", "{}", out.all());
    let pillar_lines: Vec<&str> = out.stderr_lines_with("pillar");
    assert_eq!(
        pillar_lines,
        [format!(
            "mc-launcher: warning: pillar: {}:2:9: YAML syntax error: {}; the last valid override is installed (from {}); going on (on_invalid: last-good)",
            t.source().display(),
            yaml_error(&out.stderr),
            copy.display()
        )],
        "{}",
        out.all()
    );
    // The copy stays the last valid one; a new valid edit replaces it.
    assert_eq!(std::fs::read_to_string(&copy).ok(), Some(site("one")));
    write(&t.source(), &site("two"));
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(&copy).ok(), Some(site("two")));
    assert_eq!(app_conf(&t), "site=two\n");
}

/// The YAML parser's own words in the warning (between the position and
/// what is installed).
fn yaml_error(stderr: &str) -> String {
    stderr
        .split("YAML syntax error: ")
        .nth(1)
        .and_then(|r| r.split("; the last valid").next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn without_a_last_valid_override_the_start_stops() {
    let t = tree("nolastgood");
    write(&t.source(), "makina-projects.demo:\n  data: [1, 2\n");
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(78);
    let copy = t.state().join("pillar-last-good.sls");
    out.assert_stderr(&format!(
            "no last valid override to start on ({} does not exist); the image default is installed (it already was); stopping (on_invalid: last-good)",
            copy.display()
        ));
    assert_eq!(
        std::fs::read_to_string(t.pillar()).ok().as_deref(),
        Some(IMAGE_PILLAR)
    );
}

/// A valid pillar of the wrong shape for a template (`data` a string where
/// the template reads `data.site`) counts as invalid with `last-good`: the
/// start goes on with the last valid one, said in one warning that names
/// the template's line, instead of exiting 1 in the reconfigure step.
#[test]
fn a_pillar_of_the_wrong_shape_starts_on_the_last_valid_one() {
    let t = started_on_one("lastgood-shape");
    write(
        &t.source(),
        "makina-projects.demo:\n  data: just-a-string\n",
    );
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(t.pillar()).ok(), Some(site("one")));
    assert_eq!(app_conf(&t), "site=one\n");
    let warnings: Vec<&str> = out.stderr_lines_with("pillar:");
    let template = t.project().join(".salt/files/app.conf.j2");
    assert!(
        warnings.len() == 1
            && warnings[0].starts_with(&format!(
                "mc-launcher: warning: pillar: {}: does not fit the templates: template-1: {}:1:",
                t.source().display(),
                template.display()
            ))
            && warnings[0].ends_with("going on (on_invalid: last-good)"),
        "{}",
        out.all()
    );
}

/// Started on the last valid override, the launcher says so in `ctl
/// status` (one `pillar:` line with the copy and the error) and in its
/// JSON (`pillar`, the same answer as HTTP `/status`), until a live
/// reconfigure installs the volume's pillar.
#[test]
fn ctl_status_says_the_pillar_in_use_is_the_last_valid_one() {
    let t = started_on_one("lastgood-status");
    write(&t.source(), "makina-projects.demo:\n  data: [1, 2\n");
    let run = t.launch(&["--", "sleep", "1000"]).spawn();
    let copy = t.state().join("pillar-last-good.sls");
    let json = || {
        let out = ctl(&run, &["--json", "status"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let limit = std::time::Duration::from_secs(20);
    assert!(wait_until(limit, || json()["ok"] == true), "{}", json());
    let v = json();
    let error = v["pillar"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(v["pillar"]["in_use"], "last-good", "{v}");
    assert_eq!(v["pillar"]["copy"], copy.display().to_string(), "{v}");
    assert!(
        error.starts_with(&format!("{}:2:9: YAML syntax error", t.source().display())),
        "{v}"
    );
    let out = ctl(&run, &["status"]);
    out.assert_code(0);
    let line = format!(
        "pillar: last-good: the last valid override is in use (from {}): {error}",
        copy.display()
    );
    assert!(
        out.stdout.lines().any(|l| l == line),
        "want {line}\n{}",
        out.all()
    );

    // A valid override installed live: the line goes.
    write(&t.source(), &site("two"));
    ctl(&run, &["reconfigure"]).assert_code(0);
    assert!(json()["pillar"].is_null(), "{}", json());
    assert!(!ctl(&run, &["status"]).stdout.contains("pillar:"));
    run.stop();
}
