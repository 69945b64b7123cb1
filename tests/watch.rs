//! File watches (README "File watches") with the real binary as PID 1: a
//! Secret volume updated as the kubelet does reloads its service (HUP, the
//! pid kept); a file renamed over a watched one restarts its service (a
//! new pid); a file added in a watched directory counts; the other
//! services are never touched, and the launcher sleeps while nothing
//! changes. Waits are on events (lines the services write).

mod common;
use common::kubelet::kubelet_write;
use common::*;
use std::time::Duration;

const APPLIED: Duration = Duration::from_secs(10);

/// The launcher, PID 1, over `services` (the body of `services:`).
fn launch(d: &TempDir, services: &str) -> Running {
    let cfg = config(d, &format!("services:\n{services}"));
    Launch::new(&["-c", &cfg])
        .root(d.path())
        .timeout(Duration::from_secs(30))
        .spawn()
}

/// Stop it: a clean exit.
fn stop(run: Running) -> Output {
    let out = run.stop();
    out.assert_code(0);
    out
}

#[test]
fn a_kubelet_secret_update_reloads_its_service_with_the_same_pid() {
    let d = TempDir::new("watch-kubelet");
    let tls = d.join("tls");
    std::fs::create_dir_all(&tls).expect("mount point");
    kubelet_write(&tls, &[("cert.pem", b"one\n", 0o644)]).expect("kubelet");
    let (pids, hups, other) = (d.join("nginx.pids"), d.join("nginx.hups"), d.join("other"));
    let run = launch(
        &d,
        r#"  nginx:
    cmd: ["sh", "-c", "echo $$ >> @D@/nginx.pids; trap 'cat @D@/tls/cert.pem >> @D@/nginx.hups' HUP; while :; do sleep 0.05 & wait $!; done"]
    watch: {paths: ["@D@/tls/cert.pem"], on_change: reload, debounce: 200ms}
  other:
    cmd: ["sh", "-c", "echo $$ >> @D@/other; trap 'echo hup >> @D@/other' HUP; while :; do sleep 1 & wait $!; done"]
"#,
    );
    assert!(wait_until(APPLIED, || file_lines(&pids).len() == 1
        && file_lines(&other).len() == 1));
    // Nothing changes: once started, the launcher sleeps (the services'
    // loops are theirs).
    let launcher = run.launcher_pid();
    std::thread::sleep(Duration::from_millis(800));
    let idle = wakeups_over(launcher, Duration::from_secs(1));
    kubelet_write(&tls, &[("cert.pem", b"two\n", 0o644)]).expect("kubelet");
    assert!(
        wait_until(APPLIED, || file_lines(&hups) == ["two"]),
        "{:?}",
        file_lines(&hups)
    );
    kubelet_write(&tls, &[("cert.pem", b"three\n", 0o644)]).expect("kubelet");
    assert!(
        wait_until(APPLIED, || file_lines(&hups) == ["two", "three"]),
        "{:?}",
        file_lines(&hups)
    );
    // Applied: asleep again.
    std::thread::sleep(Duration::from_millis(500));
    let idle_after = wakeups_over(launcher, Duration::from_secs(1));
    let status = status_json(&run);
    let out = stop(run);
    assert_eq!(idle, 0, "woke up while nothing changed\n{}", out.all());
    assert_eq!(
        idle_after,
        0,
        "woke up after the change was applied\n{}",
        out.all()
    );
    assert_eq!(file_lines(&pids).len(), 1, "reloaded, never restarted");
    assert_eq!(
        status_pids(&status, "nginx"),
        vec![file_lines(&pids)[0].parse::<i64>().expect("pid")]
    );
    assert_eq!(file_lines(&other).len(), 1, "the other service untouched");
    out.assert_stderr("nginx: a watched file changed: reloading (HUP)");
}

#[test]
fn a_rename_over_a_watched_file_restarts_its_service_only() {
    let d = TempDir::new("watch-rename");
    let conf = d.join("conf");
    write(&conf.join("app.conf"), "a=1\n");
    let (pids, other) = (d.join("app.pids"), d.join("other.pids"));
    let run = launch(
        &d,
        r#"  app:
    cmd: ["sh", "-c", "echo $$ >> @D@/app.pids; exec sleep 1000"]
    watch: {paths: ["@D@/conf/app.conf"], debounce: 100ms}
  other:
    cmd: ["sh", "-c", "echo $$ >> @D@/other.pids; exec sleep 1000"]
"#,
    );
    assert!(wait_until(APPLIED, || file_lines(&pids).len() == 1
        && file_lines(&other).len() == 1));
    // An editor's save: a new file renamed over the old one.
    write(&conf.join("app.conf.tmp"), "a=2\n");
    std::fs::rename(conf.join("app.conf.tmp"), conf.join("app.conf")).expect("rename");
    assert!(
        wait_until(APPLIED, || file_lines(&pids).len() == 2),
        "{:?}",
        file_lines(&pids)
    );
    // A file beside it is no change of it; an edit in place is.
    write(&conf.join("unrelated"), "x\n");
    write(&conf.join("app.conf"), "a=3, longer\n");
    assert!(
        wait_until(APPLIED, || file_lines(&pids).len() == 3),
        "{:?}",
        file_lines(&pids)
    );
    let status = status_json(&run);
    let out = stop(run);
    let p = file_lines(&pids);
    assert!(p[0] != p[1] && p[1] != p[2], "a new pid each time: {p:?}");
    assert_eq!(file_lines(&other).len(), 1, "the other service untouched");
    let row = status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "app"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["restart_reason"], "watch", "{status}");
    out.assert_stderr_count("app: a watched file changed: restarting", 2);
}

#[test]
fn a_file_added_in_a_watched_directory_reloads_with_the_signal_asked_for() {
    let d = TempDir::new("watch-dir");
    let certs = d.join("certs");
    let (pids, usr1) = (d.join("pids"), d.join("usr1"));
    let run = launch(
        &d,
        &format!(
            r#"  proxy:
    cmd: ["sh", "-c", "echo $$ >> {pids}; trap 'ls {certs} | tr \"\\n\" \" \" >> {usr1}; echo >> {usr1}' USR1; while :; do sleep 0.05 & wait $!; done"]
    reload_signal: USR1
    watch: {{paths: ["{certs}"], on_change: reload, debounce: 100ms}}
"#,
            pids = pids.display(),
            usr1 = usr1.display(),
            certs = certs.display(),
        ),
    );
    assert!(wait_until(APPLIED, || file_lines(&pids).len() == 1));
    // The directory does not exist yet: it is waited for.
    write(&certs.join("a.pem"), "a\n");
    assert!(
        wait_until(APPLIED, || file_lines(&usr1).len() == 1),
        "{:?}",
        file_lines(&usr1)
    );
    write(&certs.join("b.pem"), "b\n");
    assert!(
        wait_until(APPLIED, || file_lines(&usr1).len() == 2),
        "{:?}",
        file_lines(&usr1)
    );
    stop(run);
    assert_eq!(file_lines(&usr1), ["a.pem ", "a.pem b.pem "]);
    assert_eq!(file_lines(&pids).len(), 1, "reloaded, not restarted");
}
