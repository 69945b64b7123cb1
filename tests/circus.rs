//! circus INI drop-in (README "circus compatibility"): a makina image's /etc/circus runs
//! unchanged, with no mc-launcher.yml at all, and with the original
//! launcher's arguments.

mod common;
use common::*;
use std::path::Path;

fn fixtures() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/circus")
        .display()
        .to_string()
}

/// Run `main` with the fixture tree as the namespace's /etc/circus.
fn with_circus(d: &TempDir, args: &[&str]) -> Launch {
    Launch::new(args)
        .root(d.path())
        .overlay("/etc", &d.join("etc-overlay"))
        .tmpfs("/var/log")
        .before(&format!(
            "mkdir -p /etc/circus /var/log/circus && cp -r {}/. /etc/circus/",
            fixtures()
        ))
}

/// `ctl status` (in the main command's output) shows every watcher running.
#[track_caller]
fn assert_all_running(out: &Output) {
    for name in ["ssh", "redis", "myapp-web"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains("running")),
            "{name} running\n{}",
            out.all()
        );
    }
}

#[test]
fn a_makina_circus_tree_runs_unchanged() {
    let d = TempDir::new("circus");
    let script = format!(
        "sleep 1; {bin} ctl status; echo ---; cat /var/log/circus/myapp-web.stdout.log; echo ---; cat /var/log/circus/myapp-web.stderr.log",
        bin = bin().display()
    );
    let out = with_circus(&d, &["--", "sh", "-c", &script]).run();
    out.assert_code(0);
    assert_all_running(&out);
    let web_pids = out
        .stdout
        .lines()
        .find(|l| l.starts_with("myapp-web"))
        .map(|l| l.split_whitespace().nth(2).unwrap_or("").split(',').count());
    assert_eq!(web_pids, Some(2), "numprocesses = 2\n{}", out.all());
    // FileStream with time_format: "YYYY-MM-DD HH:MM:SS web home=… app=production"
    let stdout_log: Vec<&str> = out
        .stdout
        .split("---\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .collect();
    assert_eq!(stdout_log.len(), 2, "{}", out.all());
    for line in &stdout_log {
        assert!(
            line.len() > 20
                && line.as_bytes()[4] == b'-'
                && line.contains(" web home=")
                && line.ends_with("app=production"),
            "{line}"
        );
    }
    assert_eq!(
        out.stdout
            .split("---\n")
            .nth(2)
            .unwrap_or("")
            .matches("web error")
            .count(),
        2,
        "{}",
        out.all()
    );
    // One summary line per service (stop order itself is covered in services.rs).
    let mut summaries: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("mc-launcher: summary: "))
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    summaries.sort();
    assert_eq!(
        summaries,
        ["main", "myapp-web", "redis", "ssh"],
        "{}",
        out.all()
    );
}

#[test]
fn original_launcher_arguments_run_the_same_processes() {
    let d = TempDir::new("migrate");
    let script = format!("sleep 0.5; {} ctl status", bin().display());
    // `CMD bin/launch.sh ssh_config=True re_configure=True` becomes:
    let out = with_circus(
        &d,
        &["ssh_config=True", "re_configure=True", "sh", "-c", &script],
    )
    .run();
    out.assert_code(0);
    assert_all_running(&out);
}

#[test]
fn unsupported_options_warn_at_run_and_fail_check() {
    let d = TempDir::new("unsupported");
    let ini = d.join("extra.ini");
    write(&ini, "[watcher:w]\ncmd = /bin/sleep 1000\nhooks.before_start = my.module.hook\n[socket:web]\nhost = 127.0.0.1\n");
    let cfg = config(
        &d,
        &format!("circus:\n  include: [\"{}\"]\n", ini.display()),
    );
    let out = Launch::new(&["-c", &cfg, "check"])
        .root(d.path())
        .not_pid1()
        .run();
    out.assert_code(78);
    out.assert_stderr(&format!(
        "{}:3: [watcher:w] option `hooks.before_start` is not supported",
        ini.display()
    ));
    out.assert_stderr(&format!(
        "{}:4: section [socket:web] is not supported",
        ini.display()
    ));
    let out = Launch::new(&["-c", &cfg, "--", "true"])
        .root(d.path())
        .run();
    // run goes on with warnings
    out.assert_code(0);
    out.assert_stderr("warning:");
    out.assert_stderr("hooks.before_start");
}
