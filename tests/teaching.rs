//! Errors that teach (README "Errors that teach"), with the real binary:
//! a template error names the undefined name and the line using it;
//! `check` reports every config error at once, even after a template
//! error, and always ends with its verdict line; `check` renders every
//! `template` step against the pillar the start would install and names a
//! missing pillar key.

mod common;
use common::tree::Tree;
use common::*;

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or_default()
}

/// The `mc-launcher: FILE:LINE: …` lines of `text`.
fn error_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("mc-launcher: /"))
        .collect()
}

#[test]
fn check_reports_every_config_error_after_a_template_error() {
    let t = Tree::new(
        "teach-cfg",
        "services:\n  web:\n    cmd: [sleep, \"{{ env.MC_TEACH_UNSET }}\"]\n    numprocesses: many\n  api:\n    cmd: [sleep, \"1\"]\n    port: {{ nope }}\nshutdown:\n  timeout: soon\n",
    );
    let out = t
        .launch(&["check"])
        .env("MC_TEACH_OTHER", "x")
        .not_pid1()
        .run();
    let all = out.all();
    assert_eq!(out.code, Some(78), "{all}");
    let cfg = t.config();
    let at = |line: usize| format!("mc-launcher: {}:{line}:", cfg.display());
    let errors = error_lines(&out.stderr);
    // Lines 1-2 of the file are the Tree's paths and socket.
    let want: Vec<(String, &str)> = vec![
        (
            at(7),
            "template error: undefined variable `env.MC_TEACH_UNSET` (used in `cmd: [sleep, \"{{ env.MC_TEACH_UNSET }}\"]`)",
        ),
        (at(8), "numprocesses"),
        (
            at(11),
            "template error: undefined variable `nope` (used in `port: {{ nope }}`)",
        ),
        (at(13), "bad duration"),
    ];
    assert_eq!(errors.len(), want.len(), "{all}");
    for (line, (prefix, part)) in errors.iter().zip(&want) {
        assert!(
            line.starts_with(prefix.as_str()) && line.contains(part),
            "{line:?} is not {prefix} … {part}\n{all}"
        );
    }
    // Nothing about `port` being unknown: its line is the template error's.
    assert!(!all.contains("`port`"), "{all}");
    assert_eq!(last_line(&out.stdout), "check: 4 error(s)", "{all}");
}

#[test]
fn check_ends_with_its_verdict_after_a_template_syntax_error() {
    let t = Tree::new(
        "teach-syntax",
        "services:\n  web:\n    cmd: [\"{% if %}\"]\n",
    );
    let out = t.launch(&["check"]).not_pid1().run();
    let all = out.all();
    assert_eq!(out.code, Some(78), "{all}");
    assert!(all.contains("template error"), "{all}");
    assert_eq!(last_line(&out.stdout), "check: 1 error(s)", "{all}");
}

const TEMPLATE_CFG: &str = r#"reconfigure:
  steps:
    - template:
        src: "{{ paths.project }}/.salt/files/app.conf.j2"
        dest: "{{ paths.volume }}/configuration/app.conf"
"#;

const APP_TEMPLATE: &str =
    "# app\n{%- set data = pillar['makina-projects.' ~ project]['data'] %}\nsite={{ data.site }}\n";

#[test]
fn check_renders_templates_against_the_pillar_and_names_a_missing_key() {
    let t = Tree::new("teach-pillar", TEMPLATE_CFG);
    let src = t.project().join(".salt/files/app.conf.j2");
    write(&src, APP_TEMPLATE);
    // The image pillar has the key: OK.
    let out = t.launch(&["check"]).not_pid1().run();
    out.assert_code(0);
    assert_eq!(last_line(&out.stdout), "check: OK", "{}", out.all());

    // An override (valid YAML) without `data`: named, with the template's
    // line and the pillar file used; nothing was written.
    write(
        &t.source(),
        "makina-projects.demo:\n  dta:\n    site: typo\n",
    );
    let out = t.launch(&["check"]).not_pid1().run();
    let all = out.all();
    assert_eq!(out.code, Some(78), "{all}");
    let want = format!(
        "{}:3: template error: the pillar has no `makina-projects.demo.data` (used in `site={{{{ data.site }}}}`) (pillar: {})",
        src.display(),
        t.source().display()
    );
    assert!(all.contains(&want), "want {want}\n{all}");
    assert_eq!(last_line(&out.stdout), "check: 1 error(s)", "{all}");
    assert!(!t.volume().join("configuration/app.conf").exists());

    // `data` there but null (an override that emptied it): said as such.
    write(&t.source(), "makina-projects.demo:\n  data: null\n");
    let out = t.launch(&["check"]).not_pid1().run();
    let all = out.all();
    assert_eq!(out.code, Some(78), "{all}");
    assert!(
        all.contains("the pillar's `makina-projects.demo.data` is none (null), not a mapping (used in `site={{ data.site }}`)"),
        "{all}"
    );
    write(
        &t.source(),
        "makina-projects.demo:\n  dta:\n    site: typo\n",
    );

    // The same at a start: the step fails naming the key.
    let run = t.launch(&["--", "echo", "must-not-start"]).run();
    let all = run.all();
    assert_ne!(run.code, Some(0), "{all}");
    assert!(
        all.contains("the pillar has no `makina-projects.demo.data`"),
        "{all}"
    );
    assert!(!run.stdout.contains("must-not-start"), "{all}");
}

/// A valid override of the wrong shape (`data: null`) at a start with
/// `on_invalid: abort` gets `check`'s verdict: 78, the template's
/// file:line, the fix, and nothing installed (all or nothing): the
/// pillar an earlier start installed is replaced by the image default,
/// as for any invalid override, never by the refused one.
#[test]
fn a_start_refuses_an_override_that_does_not_fit_the_templates_as_check_does() {
    let t = Tree::new(
        "teach-fit",
        &format!("pillar:\n  on_invalid: abort\n{TEMPLATE_CFG}"),
    );
    let src = t.project().join(".salt/files/app.conf.j2");
    write(&src, APP_TEMPLATE);
    write(
        &t.source(),
        "makina-projects.demo:\n  data:\n    site: one\n",
    );
    t.launch(&["--", "true"]).run().assert_code(0);
    let app = t.volume().join("configuration/app.conf");
    assert_eq!(
        std::fs::read_to_string(&app).ok().as_deref(),
        Some("# app\nsite=one\n")
    );

    write(&t.source(), "makina-projects.demo:\n  data: null\n");
    let check = t.launch(&["check"]).not_pid1().run();
    check.assert_code(78);
    let why = "the pillar's `makina-projects.demo.data` is none (null), not a mapping (used in `site={{ data.site }}`)";
    check.assert_stderr(&format!("{}:3: template error: {why}", src.display()));

    let out = t.launch(&["--", "echo", "must-not-start"]).run();
    out.assert_code(78);
    out.assert_stderr(&format!(
        "mc-launcher: error: pillar: {}: does not fit the templates: template-1: {}:3: template error: {why}; fix the override so that they render, or remove it; the image default is installed (restored); stopping (on_invalid: abort)",
        t.source().display(),
        src.display()
    ));
    assert!(!out.stdout.contains("must-not-start"), "{}", out.all());
    t.assert_image_pillar();
    // The reconfigure did not run: what the last good start wrote stays.
    assert_eq!(
        std::fs::read_to_string(&app).ok().as_deref(),
        Some("# app\nsite=one\n")
    );
    // With `--skip reconfigure` no template reads it: it is installed.
    let out = t.launch(&["--skip", "reconfigure", "--", "true"]).run();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(t.pillar()).ok().as_deref(),
        Some("makina-projects.demo:\n  data: null\n")
    );
}
