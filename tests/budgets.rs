//! Budgets on every parser and template (issue 15, items 5, 6, 12, 18, 22),
//! with the real binary as PID 1: an alias bomb, deep nesting or a runaway
//! template in the pillar override or in mc-launcher.yml is refused as
//! invalid input (78, `file:line[:col]`), never a crash, a hang or an
//! exhausted memory; a uid that does not fit 32 bits is an error, not root.

mod common;
use common::tree::Tree;
use common::*;

/// The classic "billion laughs": nine levels of nine aliases, 10⁹ scalars
/// from about 500 bytes.
fn alias_bomb() -> String {
    let mut text = String::from(
        "a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(", ");
        text.push_str(&format!("{}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    text
}

/// 100,000 nested block sequences (200 KB), under a mapping.
fn deep_nesting() -> String {
    format!("makina-projects.demo:\n  {}x\n", "- ".repeat(100_000))
}

const NESTED_LOOPS: &str =
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n";

/// A tree (`config` in its mc-launcher.yml) whose pillar override is
/// `text`.
fn overridden(tag: &str, config: &str, text: &str) -> Tree {
    let t = Tree::new(tag, config);
    write(&t.source(), text);
    t
}

#[test]
fn pillar_alias_bomb_is_refused_and_the_default_stays() {
    let bomb = alias_bomb();
    assert!(bomb.len() < 600, "{} bytes", bomb.len());
    let t = overridden("bud-bomb", "", &bomb);
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(78);
    out.assert_stderr(
        "configuration/pillar.sls:5:4: YAML: alias expansion exceeds 100000 nodes (an alias bomb?)",
    );
    // the image default is untouched
    t.assert_image_pillar();
    // keep-default: a warning, and the container starts.
    let t = overridden(
        "bud-bomb-keep",
        "pillar:\n  on_invalid: keep-default\n",
        &alias_bomb(),
    );
    let out = t.launch(&["--", "sh", "-c", "exit 5"]).run();
    out.assert_code(5);
    out.assert_stderr("alias expansion exceeds");
    t.assert_image_pillar();
}

#[test]
fn pillar_deep_nesting_is_refused_not_a_signal() {
    let t = overridden("bud-deep", "", &deep_nesting());
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(78);
    out.assert_stderr(
        "configuration/pillar.sls:2:513: YAML: collections nested deeper than 256 levels",
    );
    t.assert_image_pillar();
    // Nested flow collections too.
    let flow = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let t = overridden("bud-flow", "", &flow);
    let out = t.launch(&["check"]).not_pid1().run();
    out.assert_code(78);
    out.assert_stderr("configuration/pillar.sls:1:");
    out.assert_stderr("nested too deep");
}

#[test]
fn pillar_runaway_templates_are_refused() {
    let rows = [
        ("bud-ploops", format!("a: 1\n{NESTED_LOOPS}")),
        (
            "bud-prep",
            "{% for a in range(100000) %}{% set s = 'x' * 99999999 %}{% endfor %}\na: 1\n"
                .to_string(),
        ),
    ];
    for (tag, text) in rows {
        let t = Tree::new(tag, "");
        write(&t.source(), &text);
        let out = t.launch(&["--", "true"]).run();
        assert_eq!(out.code, Some(78), "{tag}: {}", out.all());
        assert!(
            out.stderr.contains("configuration/pillar.sls:")
                && out
                    .stderr
                    .contains("template error: rendering stopped (out of fuel: the template does too much work, limit 500000)"),
            "{tag}: {}",
            out.all()
        );
        t.assert_image_pillar();
    }
}

/// `check` and a run both exit 78 and name `CONFIG:` then `at`.
#[track_caller]
fn refused_by_check_and_run(t: &Tree, at: &str) {
    let want = format!("{}:{at}", t.config().display());
    for args in [vec!["check"], vec!["--", "true"]] {
        let out = t.launch(&args).run();
        assert_eq!(out.code, Some(78), "{args:?}: {}", out.all());
        assert!(out.stderr.contains(&want), "{args:?}: {}", out.all());
    }
}

#[test]
fn config_with_nested_loops_is_refused_by_check_and_run() {
    let t = Tree::new("bud-cloops", NESTED_LOOPS);
    refused_by_check_and_run(
        &t,
        "5: template error: rendering stopped (out of fuel: the template does too much work, limit 500000)",
    );
}

#[test]
fn config_alias_bomb_and_deep_nesting_are_refused() {
    let bomb = alias_bomb().replace("a: &a", "x-a: &a");
    let rows = [
        (
            "bud-cbomb",
            bomb,
            "YAML: alias expansion exceeds 100000 nodes",
        ),
        (
            "bud-cdeep",
            format!("x:\n  {}y\n", "- ".repeat(100_000)),
            "YAML: collections nested deeper than 256 levels",
        ),
    ];
    for (tag, text, part) in rows {
        let t = Tree::new(tag, "");
        write(&t.config(), &text);
        let out = t.launch(&["check"]).run();
        assert_eq!(out.code, Some(78), "{tag}: {}", out.all());
        assert!(
            out.stderr.contains(&format!("{}:", t.config().display())) && out.stderr.contains(part),
            "{tag}: {}",
            out.all()
        );
    }
}

#[test]
fn uid_beyond_32_bits_is_refused_not_root() {
    let t = Tree::new(
        "bud-uid",
        "services:\n  who:\n    cmd: [id, -u]\n    uid: 4294967296\n",
    );
    refused_by_check_and_run(
        &t,
        "8:10: who.uid: 4294967296 is above the maximum, 4294967294",
    );
}

#[test]
fn reload_of_a_runaway_config_is_refused_and_the_launcher_answers() {
    let t = Tree::new("bud-reload", "");
    // The control socket at its default, in the launcher's private /run,
    // where `ctl` finds it whatever the config file holds.
    let good =
        "paths:\n  state: \"{{ root }}/state\"\nservices:\n  a:\n    cmd: [sleep, \"1000\"]\n";
    write(&t.config(), good);
    let run = t.launch(&[]).spawn();
    run.wait_signals_blocked();
    let running = || ctl(&run, &["status"]).stdout.contains("running");
    assert!(
        wait_until(std::time::Duration::from_secs(10), running),
        "{}",
        ctl(&run, &["status"]).all()
    );
    let bomb = alias_bomb().replace("a: &a", "x-a: &a");
    for (text, part) in [
        (format!("{good}{NESTED_LOOPS}"), "out of fuel"),
        (format!("{good}{bomb}"), "alias expansion exceeds"),
    ] {
        write(&t.config(), &text);
        let out = ctl(&run, &["reload"]);
        assert_ne!(out.code, Some(0), "{}", out.all());
        assert!(out.all().contains(part), "{}", out.all());
        // Still supervising, with the old config in force.
        let out = ctl(&run, &["status"]);
        out.assert_code(0);
        out.assert_stdout("running");
    }
    let out = run.stop();
    out.assert_code(0);
}
