//! The control socket and `mc-launcher ctl`, against a launcher running as
//! PID 1; hot reload.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn config(d: &TempDir, body: &str) -> String {
    let p = d.join("mc-launcher.yml");
    write(&p, body);
    p.to_string_lossy().into_owned()
}

fn status_json(run: &Running) -> serde_json::Value {
    let out = ctl(run, &["--json", "status"]);
    out.assert_code(0);
    serde_json::from_str(out.stdout.trim()).expect("json status")
}

fn service<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {v}"))
}

fn pids(v: &serde_json::Value, name: &str) -> Vec<i64> {
    service(v, name)["pids"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_i64()).collect())
        .unwrap_or_default()
}

fn wait_state(run: &Running, name: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(5), || {
        // The socket may not be bound yet right after start.
        let out = ctl(run, &["--json", "status"]);
        if out.code != Some(0) {
            return false;
        }
        last = serde_json::from_str(out.stdout.trim()).unwrap_or_default();
        last["services"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == name && s["state"] == state))
    });
    assert!(ok, "{name} never became {state}: {last}");
    last
}

/// Two services; `web` appends a line to `DIR/usr1` on SIGUSR1 (and makes
/// `DIR/web-up` once its trap is set).
fn two(d: &TempDir) -> String {
    format!(
        r#"
services:
  web:
    cmd: ["sh", "-c", "trap 'echo usr1 >> {}' USR1; touch {}; while :; do sleep 0.05; done"]
  worker:
    cmd: ["sleep", "1000"]
"#,
        d.join("usr1").display(),
        d.join("web-up").display()
    )
}

/// The launcher on `two`, once `web` runs with its trap set (a signal
/// sent when it is merely spawned could end it).
fn start_two(d: &TempDir) -> Running {
    let cfg = config(d, &two(d));
    let run = Launch::new(&["-c", &cfg]).root(d.path()).spawn();
    wait_state(&run, "web", "running");
    assert!(
        wait_until(Duration::from_secs(10), || d.join("web-up").exists()),
        "web set its trap"
    );
    run
}

#[test]
fn ctl_round_trips() {
    let d = TempDir::new("ctl");
    let run = start_two(&d);
    wait_state(&run, "worker", "running");

    let out = ctl(&run, &["status"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("SERVICE")
            && out.stdout.contains("web")
            && out.stdout.contains("running"),
        "{}",
        out.stdout
    );

    assert_eq!(ctl(&run, &["health"]).code, Some(0));

    let before = pids(&status_json(&run), "worker");
    let out = ctl(&run, &["restart", "worker"]);
    out.assert_code(0);
    let after = pids(&wait_state(&run, "worker", "running"), "worker");
    assert!(
        !after.is_empty() && after != before,
        "restart gives a new pid: {before:?} -> {after:?}"
    );

    assert_eq!(ctl(&run, &["stop", "worker"]).code, Some(0));
    wait_state(&run, "worker", "stopped");
    let out = ctl(&run, &["health"]);
    assert_eq!(
        out.code,
        Some(1),
        "a stopped autostart service is unhealthy\n{}",
        out.all()
    );
    out.assert_stderr("worker");
    assert_eq!(ctl(&run, &["start", "worker"]).code, Some(0));
    wait_state(&run, "worker", "running");

    let workers_become = |n: usize| {
        wait_until(Duration::from_secs(5), || {
            pids(&status_json(&run), "worker").len() == n
        })
    };
    assert_eq!(ctl(&run, &["incr", "worker"]).code, Some(0));
    assert!(workers_become(2));
    assert_eq!(ctl(&run, &["decr", "worker"]).code, Some(0));
    assert!(workers_become(1));

    let out = ctl(&run, &["signal", "web", "USR1"]);
    out.assert_code(0);
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(
            d.join("usr1")
        )
        .is_ok_and(|t| t == "usr1\n")),
        "USR1 reached web once"
    );

    let out = ctl(&run, &["stop", "nosuch"]);
    out.assert_code(1);
    out.assert_stderr("no such service: nosuch");
    let out = ctl(&run, &["signal", "web", "BOGUS"]);
    out.assert_code(1);

    let out = ctl(&run, &["reload"]);
    out.assert_code(0);

    let out = ctl(&run, &["quit"]);
    out.assert_code(0);
    let out = run.wait();
    out.assert_code(0);
    // What was done by hand is in the launcher's log, in order; what was
    // refused, or only read, is not.
    let said = out.stderr_lines_with("mc-launcher: ctl");
    let said: Vec<&str> = said
        .iter()
        .map(|l| l.split("mc-launcher: ").nth(1).unwrap_or(l))
        .collect();
    assert_eq!(
        said,
        [
            "ctl: worker restarting",
            "ctl: worker stopping",
            "ctl: worker started",
            "ctl: worker: 2 process(es)",
            "ctl: worker: 1 process(es)",
            "ctl: USR1 sent to 1 process(es) of web",
            "ctl reload: reloaded: none added, none removed, none changed",
        ],
        "{}",
        out.all()
    );
}

#[test]
fn socket_is_private_to_its_owner() {
    let d = TempDir::new("perm");
    let run = start_two(&d);
    let md = std::fs::metadata(socket_path(&run)).expect("socket exists");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let out = ctl_as(&run, Some(65534), &["status"]);
    assert_eq!(out.code, Some(3), "nobody cannot connect\n{}", out.all());
    assert_eq!(
        ctl(&run, &["health"]).code,
        Some(0),
        "the launcher is unaffected"
    );
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    let d = TempDir::new("bad");
    let run = start_two(&d);
    let before = status_json(&run);
    let mut a = UnixStream::connect(socket_path(&run)).expect("connect");
    // A second client is served while the first stays connected.
    let mut b = UnixStream::connect(socket_path(&run)).expect("connect second");
    a.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    b.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut ra = BufReader::new(a.try_clone().expect("clone"));
    let mut rb = BufReader::new(b.try_clone().expect("clone"));
    for (req, want) in [
        ("{not json\n", "bad request"),
        ("{\"cmd\":\"explode\"}\n", "unknown command"),
        ("{\"cmd\":\"stop\",\"name\":\"ghost\"}\n", "no such service"),
        ("{\"cmd\":\"stop\"}\n", "needs a service name"),
    ] {
        a.write_all(req.as_bytes()).expect("write");
        let mut line = String::new();
        ra.read_line(&mut line).expect("reply");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json reply");
        assert_eq!(v["ok"], false, "{req} -> {line}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(want),
            "{req} -> {line}"
        );
    }
    b.write_all(b"{\"cmd\":\"health\"}\n").expect("write");
    let mut line = String::new();
    rb.read_line(&mut line).expect("reply");
    assert!(line.contains("\"ok\":true"), "{line}");
    // A huge line: an error, then the connection is closed.
    let huge = vec![b'x'; 200 * 1024];
    let _ = a.write_all(&huge);
    let mut line = String::new();
    let _ = ra.read_line(&mut line);
    assert!(line.contains("too long"), "{line}");
    let mut rest = String::new();
    assert_eq!(
        ra.read_line(&mut rest).unwrap_or(0),
        0,
        "closed after a huge line"
    );
    let after = status_json(&run);
    assert_eq!(pids(&before, "web"), pids(&after, "web"), "nothing changed");
    assert_eq!(pids(&before, "worker"), pids(&after, "worker"));
}

#[test]
fn ctl_without_launcher_exits_3() {
    let d = TempDir::new("none");
    let out = Launch::new(&["ctl", "status"])
        .root(d.path())
        .not_pid1()
        .run();
    out.assert_code(3);
    out.assert_stderr("no launcher is listening");
}

/// With nobody listening, `ctl` says every socket path it tried, in the
/// documented order, and what each gave.
#[test]
fn ctl_without_launcher_names_every_path_tried_in_order() {
    let d = TempDir::new("none-paths");
    let (state, xdg, tmp) = (d.join("state"), d.join("xdg"), d.join("tmp"));
    let cfg = config(
        &d,
        &format!(
            "paths:\n  state: {}\ncontrol:\n  socket: {}\n",
            state.display(),
            d.join("ctl.sock").display()
        ),
    );
    // A socket left behind by a launcher that is gone.
    drop(std::os::unix::net::UnixListener::bind(d.join("ctl.sock")).expect("bind"));
    let out = Launch::new(&["-c", &cfg, "ctl", "status"])
        .root(d.path())
        .env("XDG_RUNTIME_DIR", &xdg.to_string_lossy())
        .env("TMPDIR", &tmp.to_string_lossy())
        .not_pid1()
        .run();
    out.assert_code(3);
    let gone = "No such file or directory";
    let want = format!(
        "mc-launcher ctl: no launcher is listening (tried {}: Connection refused; \
         {x}/mc-launcher.sock: {gone}; {}/mc-launcher.sock: {gone}; \
         /run/mc-launcher/mc-launcher.sock: {gone}; {x}/mc-launcher/mc-launcher.sock: {gone}; \
         {}/mc-launcher-0/mc-launcher.sock: {gone})\n",
        d.join("ctl.sock").display(),
        state.display(),
        tmp.display(),
        x = xdg.display(),
    );
    assert_eq!(out.stderr, want, "{}", out.all());
}

#[test]
fn reload_adds_removes_changes_and_keeps_the_rest() {
    let d = TempDir::new("reload");
    let first = sleepers(&[("keep", 1001), ("change", 1002), ("drop", 1003)]);
    let run = launch_in(&d, &first, &[]).spawn();
    wait_state(&run, "drop", "running");
    let before = status_json(&run);
    config(
        &d,
        &sleepers(&[("keep", 1001), ("change", 1012), ("new", 1004)]),
    );
    let out = ctl(&run, &["reload"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("new added") || out.stdout.contains("reloaded: new"),
        "{}",
        out.stdout
    );
    let after = wait_state(&run, "new", "running");
    let after = if service(&after, "change")["state"] == "running" {
        after
    } else {
        wait_state(&run, "change", "running")
    };
    assert_eq!(
        pids(&before, "keep"),
        pids(&after, "keep"),
        "unchanged service keeps its pid"
    );
    assert_ne!(
        pids(&before, "change"),
        pids(&after, "change"),
        "changed service restarted"
    );
    assert!(
        after["services"]
            .as_array()
            .expect("list")
            .iter()
            .all(|s| s["name"] != "drop"),
        "{after}"
    );

    // An invalid config changes nothing and says where the error is.
    let cfg_path = config(
        &d,
        "services:\n  keep:\n    cmd: [\"sleep\", \"1001\"]\n    bogus_key: 1\n",
    );
    let out = ctl(&run, &["reload"]);
    out.assert_code(1);
    out.assert_stderr(&format!("{cfg_path}:4:5"));
    let still = status_json(&run);
    assert_eq!(pids(&still, "new"), pids(&after, "new"));
    // SIGHUP reloads too.
    config(&d, &sleepers(&[("keep", 1001)]));
    run.signal(1);
    assert!(wait_until(Duration::from_secs(5), || {
        let v = status_json(&run);
        v["services"].as_array().map(|a| a.len()) == Some(1)
    }));
    assert_eq!(pids(&status_json(&run), "keep"), pids(&before, "keep"));
}
