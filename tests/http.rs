//! The HTTP endpoints beside `/metrics` (README "HTTP endpoints"), with the
//! real binary as PID 1: `/livez` and `/readyz` answer 200 or 503 with the
//! one-line reason `ctl health --live|--ready` gives, and follow the
//! services as they change; `/status` is `ctl --json status`; `HEAD` has
//! the head only; a request head over 8 KiB gets 431; `metrics.listen` is
//! the older name of `http.listen`, and both at once is a config error.

mod common;
use common::*;
use std::time::Duration;

fn get(addr: &str, path: &str) -> (u16, String, String) {
    http_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.30\r\n\r\n"),
    )
}

/// `ctl health ARGS`: its exit code and its one line (without the
/// `mc-launcher ctl: ` of an error).
fn ctl_health(run: &Running, args: &[&str]) -> (Option<i32>, String) {
    let mut a = vec!["health"];
    a.extend_from_slice(args);
    let o = ctl(run, &a);
    let text = if o.code == Some(0) {
        &o.stdout
    } else {
        &o.stderr
    };
    let line = text
        .trim()
        .trim_start_matches("mc-launcher ctl: ")
        .to_string();
    (o.code, line)
}

/// `path` answers `code` (waiting for it), and its body is the line
/// `ctl health ARGS` gives, with the same verdict.
fn probe_agrees(run: &Running, addr: &str, path: &str, args: &[&str], code: u16) -> String {
    let mut last = (0, String::new(), String::new());
    let reached = wait_until(Duration::from_secs(15), || {
        last = get(addr, path);
        last.0 == code
    });
    assert!(reached, "{path} never answered {code}: {last:?}");
    let (_, head, body) = last;
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert!(
        body.ends_with('\n') && body.lines().count() == 1,
        "{body:?}"
    );
    let (ctl_code, line) = ctl_health(run, args);
    assert_eq!(ctl_code, Some(if code == 200 { 0 } else { 1 }), "{line}");
    assert_eq!(body.trim_end(), line, "{path} and ctl health {args:?}");
    body.trim_end().to_string()
}

#[test]
fn livez_and_readyz_follow_the_services_with_their_reason() {
    let d = TempDir::new("http-health");
    let addr = free_addr();
    let ready = d.join("ready");
    let fail = d.join("fail");
    let cfg = config(
        &d,
        &format!(
            "http: {{listen: \"{addr}\"}}
services:
  web:
    cmd: [sleep, \"1000\"]
    ready: {{file: \"{ready}\", interval: 50ms}}
  bad:
    cmd: [sh, -c, 'until [ -e {fail} ]; do sleep 0.05; done; exit 3']
    min_uptime: 1h
    max_retry: 1
",
            ready = ready.display(),
            fail = fail.display()
        ),
    );
    let run = Launch::new(&["-c", &cfg]).spawn();
    // Up, not ready: alive, 503 on /readyz naming web.
    assert!(
        wait_until(Duration::from_secs(10), || ctl(&run, &["status"]).code
            == Some(0)),
        "the launcher never answered"
    );
    assert_eq!(
        probe_agrees(&run, &addr, "/livez", &["--live"], 200),
        "alive"
    );
    let why = probe_agrees(&run, &addr, "/readyz", &["--ready"], 503);
    assert_eq!(why, "not running or not ready: web");

    // Ready: 200.
    write(&ready, "");
    assert_eq!(
        probe_agrees(&run, &addr, "/readyz", &["--ready"], 200),
        "healthy"
    );
    assert_eq!(
        probe_agrees(&run, &addr, "/livez", &["--live"], 200),
        "alive"
    );

    // bad gives up: FAILED, so /livez fails naming it, and /readyz too.
    write(&fail, "");
    let why = probe_agrees(&run, &addr, "/livez", &["--live"], 503);
    assert_eq!(why, "FAILED, will not come back by itself: bad");
    let why = probe_agrees(&run, &addr, "/readyz", &["--ready"], 503);
    assert_eq!(why, "not running or not ready: bad");

    // HEAD: the same head, no body.
    let (code, head, body) = http_exchange(&addr, "HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 503, "{head}");
    assert!(head.contains("Content-Length: 42"), "{head}");
    assert_eq!(body, "");
    let o = run.stop();
    o.assert_code(0);
}

/// `ctl --json status` without what changes between two reads.
fn steady(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(services) = v.get_mut("services").and_then(|s| s.as_array_mut()) {
        for s in services {
            if let Some(o) = s.as_object_mut() {
                o.remove("uptime_s");
            }
        }
    }
    v
}

#[test]
fn status_is_the_json_of_ctl_status_and_head_has_no_body() {
    let d = TempDir::new("http-status");
    let addr = free_addr();
    // The older name serves every page too.
    let cfg = config(
        &d,
        &format!(
            "metrics: {{listen: \"{addr}\"}}
services:
  web:
    cmd: [sleep, \"1000\"]
    numprocesses: 2
  once:
    cmd: [\"true\"]
    respawn: false
"
        ),
    );
    let run = Launch::new(&["-c", &cfg]).spawn();
    let mut want = serde_json::Value::Null;
    let settled = wait_until(Duration::from_secs(10), || {
        let o = ctl(&run, &["--json", "status"]);
        want = serde_json::from_str(&o.stdout).unwrap_or_default();
        o.stdout.contains("\"running\"") && o.stdout.contains("\"ended\"")
    });
    assert!(settled, "never settled: {want}");
    let (code, head, body) = get(&addr, "/status");
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    let got: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(steady(got.clone()), steady(want), "{body}");
    assert_eq!(got["services"][0]["pids"].as_array().map(Vec::len), Some(2));

    let (code, head, body) = http_exchange(&addr, "HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200, "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .expect("a Content-Length");
    assert!(len > 20, "{head}");
    assert_eq!(body, "", "HEAD has no body");

    for page in ["/metrics", "/livez"] {
        let (code, head, _) = get(&addr, page);
        assert_eq!(code, 200, "{page}: {head}");
    }
    // A service that ended is not running: not ready, as `ctl health` says.
    let (code, _, body) = get(&addr, "/readyz");
    assert_eq!(
        (code, body.as_str()),
        (503, "not running or not ready: once\n")
    );
    let (code, _, body) = get(&addr, "/nope");
    assert_eq!(code, 404);
    assert!(body.contains("/livez"), "{body}");
    let o = run.stop();
    o.assert_code(0);
}

#[test]
fn a_request_head_over_8_kib_gets_431() {
    let d = TempDir::new("http-431");
    let addr = free_addr();
    let cfg = config(
        &d,
        &format!("http: {{listen: \"{addr}\"}}\nservices:\n  web:\n    cmd: [sleep, \"1000\"]\n"),
    );
    let run = Launch::new(&["-c", &cfg]).spawn();
    assert!(
        wait_until(Duration::from_secs(10), || ctl(&run, &["status"]).code
            == Some(0)),
        "the launcher never answered"
    );
    // A head of 8 KiB exactly passes; one byte more does not.
    let head = |size: usize| {
        let start = "GET /readyz HTTP/1.1\r\nX: ";
        let pad = size - start.len() - 4;
        format!("{start}{}\r\n\r\n", "a".repeat(pad))
    };
    let (code, _, body) = http_exchange(&addr, &head(8 * 1024));
    assert_eq!((code, body.as_str()), (200, "healthy\n"));
    let (code, head_, body) = http_exchange(&addr, &head(8 * 1024 + 1));
    assert_eq!(code, 431, "{head_}");
    assert_eq!(body, "request too large\n");
    let (code, _, _) = http_exchange(&addr, &head(16 * 1024));
    assert_eq!(code, 431);
    // The loop goes on.
    assert_eq!(get(&addr, "/livez").0, 200);
    let o = run.stop();
    o.assert_code(0);
}

#[test]
fn http_listen_and_its_older_name_metrics_listen_not_both() {
    let d = TempDir::new("http-alias");
    let both = config(
        &d,
        "http: {listen: \"127.0.0.1:9300\"}\nmetrics: {listen: \"127.0.0.1:9301\"}\nservices:\n  web:\n    cmd: [sleep, \"1\"]\n",
    );
    let o = Launch::new(&["-c", &both, "check"]).not_pid1().run();
    assert_ne!(o.code, Some(0), "{}", o.all());
    assert!(
        o.all()
            .contains("http.listen and metrics.listen: both given"),
        "names both: {}",
        o.all()
    );
    let bad = d.join("bad.yml");
    write(&bad, "http: {listen: \"nowhere\"}\n");
    let o = Launch::new(&["-c", &bad.to_string_lossy(), "check"])
        .not_pid1()
        .run();
    assert_ne!(o.code, Some(0), "{}", o.all());
    assert!(
        o.all()
            .contains("http.listen: `nowhere` is not ADDRESS:PORT"),
        "{}",
        o.all()
    );
    for key in ["http", "metrics"] {
        let one = d.join(&format!("{key}.yml"));
        write(&one, &format!("{key}: {{listen: \"127.0.0.1:9300\"}}\n"));
        let o = Launch::new(&["-c", &one.to_string_lossy(), "check"])
            .not_pid1()
            .run();
        assert_eq!(o.code, Some(0), "{key}: {}", o.all());
    }
}
