//! Reconfigure steps (README "The prepare phase"): templates, commands and real salt-call,
//! with timeouts, stop signals and skip_unchanged.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Tree {
    d: TempDir,
}

impl Tree {
    fn new(tag: &str, config: &str) -> Tree {
        let t = Tree {
            d: TempDir::new(tag),
        };
        write(&t.project().join(".salt/PILLAR.sample"), "makina-projects.demo:\n  data:\n    site: sample-site\n    port: 8080\n    greeting: hello\n");
        write(
            &t.d.join("projects/demo/pillar/init.sls"),
            "makina-projects.demo:\n  data:\n    port: 9090\n",
        );
        std::fs::create_dir_all(t.volume()).expect("volume");
        let cfg = format!("paths:\n  state: \"{{{{ root }}}}/state\"\ncontrol:\n  socket: \"{{{{ root }}}}/ctl.sock\"\n{config}");
        write(&t.project().join(".salt/mc-launcher.yml"), &cfg);
        t
    }
    fn root(&self) -> &Path {
        self.d.path()
    }
    fn project(&self) -> PathBuf {
        self.d.join("projects/demo/project")
    }
    fn volume(&self) -> PathBuf {
        self.d.join("projects/demo/data")
    }
    fn launch(&self, args: &[&str]) -> Launch {
        Launch::new(args).root(self.root())
    }
}

const TEMPLATE_CFG: &str = r#"reconfigure:
  steps:
    - template:
        src: "{{ paths.project }}/.salt/files/app.conf.j2"
        dest: "{{ root }}/etc/app.conf"
        mode: "0640"
"#;

#[test]
fn template_sees_pillar_sample_and_override() {
    let t = Tree::new("tmpl", TEMPLATE_CFG);
    std::fs::create_dir_all(t.root().join("etc")).expect("mkdir");
    write(
        &t.project().join(".salt/files/app.conf.j2"),
        "{% set d = pillar['makina-projects.demo'].data %}site={{ d.site }}\nport={{ d.port }}\ngreeting={{ d.greeting }}\nproject={{ project }}\n",
    );
    write(
        &t.volume().join("configuration/pillar.sls"),
        "makina-projects.demo:\n  data:\n    site: operator-site\n",
    );
    let out = t.launch(&["prepare"]).run();
    out.assert_code(0);
    let conf = t.root().join("etc/app.conf");
    // PILLAR.sample gives greeting, the volume's override gives site; the
    // image's own port (9090) was replaced with the override as a whole.
    assert_eq!(
        std::fs::read_to_string(&conf).expect("rendered"),
        "site=operator-site\nport=8080\ngreeting=hello\nproject=demo\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&conf).expect("md").permissions().mode() & 0o777,
        0o640
    );
    out.assert_stderr("reconfigure: template-1 done");
}

#[test]
fn template_errors_name_the_file_and_line() {
    let t = Tree::new("tmplerr", TEMPLATE_CFG);
    std::fs::create_dir_all(t.root().join("etc")).expect("mkdir");
    let src = t.project().join(".salt/files/app.conf.j2");
    write(&src, "line one\nvalue={{ nope.missing }}\n");
    write(&t.root().join("etc/app.conf"), "previous content\n");
    let out = t.launch(&["--", "echo", "must-not-start"]).run();
    out.assert_code(1);
    out.assert_stderr(&format!(
        "{}:2: template error: undefined variable",
        src.display()
    ));
    assert!(
        !out.stdout.contains("must-not-start"),
        "no service started\n{}",
        out.all()
    );
    assert_eq!(
        std::fs::read_to_string(t.root().join("etc/app.conf")).expect("old"),
        "previous content\n",
        "the output is untouched"
    );
    // A syntax error is found by check, before anything runs.
    write(&src, "ok\n{% if %}\n");
    let out = t.launch(&["check"]).not_pid1().run();
    out.assert_code(78);
    out.assert_stderr(&format!("{}:2: template error", src.display()));
}

#[test]
fn check_reports_missing_commands_and_salt_call() {
    let t = Tree::new("checkcmd", "reconfigure:\n  steps:\n    - command: [\"/nonexistent/migrate\"]\n    - salt: [demo.200_reconfigure]\n");
    let out = t
        .launch(&["check"])
        .not_pid1()
        .env("PATH", "/usr/bin:/bin")
        .run();
    out.assert_code(78);
    let cfg = t.project().join(".salt/mc-launcher.yml");
    out.assert_stderr(&format!(
        "{}:7:7: command-1: /nonexistent/migrate",
        cfg.display()
    ));
    out.assert_stderr(&format!("{}:8:7: salt-2: salt-call", cfg.display()));
}

#[test]
fn a_failing_step_stops_before_any_service() {
    let t = Tree::new("fail", "reconfigure:\n  steps:\n    - command: [\"sh\", \"-c\", \"echo migrating; exit 3\"]\nservices:\n  web:\n    cmd: [\"sh\", \"-c\", \"echo web-started; sleep 10\"]\n");
    let out = t.launch(&[]).run();
    out.assert_code(1);
    assert!(
        out.stdout.contains("command-1 | migrating"),
        "output prefixed by the step name\n{}",
        out.all()
    );
    assert!(!out.stdout.contains("web-started"), "{}", out.all());
    out.assert_stderr("command-1: sh failed (exit 3)");
    // on_error: continue goes on.
    let t = Tree::new(
        "continue",
        "reconfigure:\n  on_error: continue\n  steps:\n    - command: [\"false\"]\n",
    );
    let out = t.launch(&["--", "echo", "main-ran"]).run();
    out.assert_code(0);
    out.assert_stdout("main-ran");
}

#[test]
fn a_hanging_step_is_stopped_by_its_timeout() {
    let marker = 600_000 + std::process::id() % 100_000;
    let t = Tree::new("timeout", &format!("reconfigure:\n  steps:\n    - command: [\"sh\", \"-c\", \"sleep {marker} & sleep {marker}\"]\n      timeout: 500ms\n"));
    let started = Instant::now();
    let out = t.launch(&["--", "echo", "must-not-start"]).not_pid1().run();
    out.assert_code(1);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "stopped by its timeout, not before: {:?}",
        started.elapsed()
    );
    out.assert_stderr("command-1: timed out after 500ms");
    assert!(
        pids_with_cmdline(&format!("sleep {marker}")).is_empty(),
        "the step's whole group is gone"
    );
}

#[test]
fn term_during_a_step_exits_143_promptly() {
    let marker = 500_000 + std::process::id() % 100_000;
    let t = Tree::new("termstep", &format!("reconfigure:\n  steps:\n    - command: [\"sh\", \"-c\", \"sleep {marker} & sleep {marker}\"]\n"));
    let run = t
        .launch(&["--", "echo", "must-not-start"])
        .not_pid1()
        .spawn();
    assert!(wait_until(Duration::from_secs(5), || !pids_with_cmdline(
        &format!("sleep {marker}")
    )
    .is_empty()));
    let out = run.stop();
    out.assert_code(143);
    assert!(!out.stdout.contains("must-not-start"));
    assert!(
        pids_with_cmdline(&format!("sleep {marker}")).is_empty(),
        "nothing left behind"
    );
}

#[test]
fn unchanged_inputs_skip_the_phase() {
    let t = Tree::new(
        "skip",
        "reconfigure:\n  steps:\n    - command: [\"sh\", \"-c\", \"echo ran >> $MC_ROOT/runs\"]\n",
    );
    let runs = || {
        std::fs::read_to_string(t.root().join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(t.launch(&["prepare"]).run().code, Some(0));
    assert_eq!(runs(), 1);
    let out = t.launch(&["prepare"]).run();
    assert_eq!(
        runs(),
        1,
        "second start with nothing changed: skipped\n{}",
        out.all()
    );
    out.assert_stderr("inputs unchanged since the last successful run, skipping");
    // A new pillar override changes the inputs.
    write(
        &t.volume().join("configuration/pillar.sls"),
        "makina-projects.demo: {data: {port: 1}}\n",
    );
    assert_eq!(t.launch(&["prepare"]).run().code, Some(0));
    assert_eq!(runs(), 2);
    // --skip reconfigure skips it whatever changed.
    write(
        &t.volume().join("configuration/pillar.sls"),
        "makina-projects.demo: {data: {port: 2}}\n",
    );
    assert_eq!(
        t.launch(&["--skip", "reconfigure", "prepare"]).run().code,
        Some(0)
    );
    assert_eq!(runs(), 2);
}

// ----- real salt ------------------------------------------------------------

/// A masterless minion config inside the tree (tests/common/salt.rs).
fn salt_tree(t: &Tree) -> PathBuf {
    common::salt::salt_tree(t.root(), &t.project())
}

fn salt_config(etc: &Path, extra: &str) -> String {
    format!("reconfigure:\n  steps:\n    - salt: [demo.200_reconfigure]\n      config_dir: {}\n      timeout: 2m\n{extra}", etc.display())
}

#[test]
fn salt_state_uses_the_volume_pillar_then_is_skipped_when_unchanged() {
    let t = Tree::new("salt", "");
    let etc = salt_tree(&t);
    write(&t.project().join(".salt/mc-launcher.yml"), &format!("paths:\n  state: \"{{{{ root }}}}/state\"\ncontrol:\n  socket: \"{{{{ root }}}}/ctl.sock\"\n{}", salt_config(&etc, "")));
    let out_file = t.root().join("site.txt");
    write(
        &t.project().join(".salt/200_reconfigure.sls"),
        &common::salt::site_state(&out_file),
    );
    write(
        &t.volume().join("configuration/pillar.sls"),
        "makina-projects.demo:\n  data:\n    site: from-the-volume\n",
    );
    let path = common::salt::path_with_salt();
    let out = t
        .launch(&["prepare"])
        .env("PATH", &path)
        .timeout(Duration::from_secs(180))
        .run();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&out_file)
            .expect("salt wrote it")
            .trim(),
        "site=from-the-volume"
    );
    assert!(
        out.stdout.contains("salt-1 | "),
        "salt's output is prefixed\n{}",
        out.all()
    );
    // Nothing changed: no salt-call at all the second time.
    std::fs::remove_file(&out_file).expect("rm");
    let out = t.launch(&["prepare"]).env("PATH", &path).run();
    out.assert_code(0);
    assert!(!out_file.exists(), "salt did not run");
}

#[test]
fn a_failing_salt_state_fails_the_phase() {
    let t = Tree::new("saltfail", "");
    let etc = salt_tree(&t);
    write(
        &t.project().join(".salt/mc-launcher.yml"),
        &format!("paths:\n  state: \"{{{{ root }}}}/state\"\ncontrol:\n  socket: \"{{{{ root }}}}/ctl.sock\"\n{}services:\n  web:\n    cmd: [\"echo\", \"web-started\"]\n", salt_config(&etc, "")),
    );
    write(
        &t.project().join(".salt/200_reconfigure.sls"),
        "broken:\n  cmd.run:\n    - name: exit 7\n",
    );
    let path = common::salt::path_with_salt();
    let out = t
        .launch(&[])
        .env("PATH", &path)
        .timeout(Duration::from_secs(180))
        .run();
    out.assert_code(1);
    out.assert_stderr("salt-1: salt-call failed");
    assert!(
        !out.stdout.contains("web-started"),
        "no service started\n{}",
        out.all()
    );
}
