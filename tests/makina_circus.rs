//! makina-states' own circus files (README "circus compatibility"): the
//! /etc/circus its salt states render for ssh, cron, redis, nginx and
//! haproxy (tests/fixtures/circus/makina) passes `check` with no warning,
//! starts in makina's priority order, and `send_hup` / `hup_signal` reload
//! a watcher by signal on a live reconfigure, its pid kept, while the
//! others restart. Real binary as PID 1.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WATCHERS: [&str; 5] = ["cron", "ssh", "redis", "nginx", "haproxy"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/circus/makina")
}

/// The fixture tree as the namespace's /etc/circus, with what a makina
/// image has around it: a `redis` group, /var/www/html, /var/log/circus
/// (private views of /etc and /var: the host's stay untouched).
fn makina(d: &TempDir, args: &[&str]) -> Launch {
    Launch::new(args)
        .root(d.path())
        .overlay("/etc", &d.join("etc-overlay"))
        .overlay("/var", &d.join("var-overlay"))
        .timeout(Duration::from_secs(90))
        .before(&format!(
            "mkdir -p /etc/circus /var/log/circus /var/www/html && cp -r {}/. /etc/circus/ && echo 'redis:x:998:' >> /etc/group",
            fixtures().display()
        ))
}

#[test]
fn makinas_watcher_files_pass_check_in_priority_order() {
    let d = TempDir::new("makina-check");
    let o = makina(&d, &["check"]).not_pid1().run();
    assert_eq!(o.code, Some(0), "{}", o.all());
    assert!(o.stdout.contains("check: OK\n"), "no warning: {}", o.all());
    let order: Vec<&str> = o
        .stdout
        .split("services (start order):\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .collect();
    let pos = |n: &str| order.iter().position(|x| *x == n).unwrap_or(usize::MAX);
    // conf_priority 11 (priority 65524) first, then 50, then 60.
    for (a, b) in [
        ("ssh", "redis"),
        ("cron", "redis"),
        ("redis", "nginx"),
        ("redis", "haproxy"),
    ] {
        assert!(pos(a) < pos(b), "{a} before {b}: {order:?}");
    }
}

fn status(run: &Running) -> serde_json::Value {
    let o = ctl(run, &["--json", "status"]);
    serde_json::from_str(o.stdout.trim()).unwrap_or_default()
}

fn pid(v: &serde_json::Value, name: &str) -> i64 {
    status_pids(v, name).first().copied().unwrap_or(0)
}

/// Where this host's hard limit on open files is below makina's
/// `rlimit_nofile = 65536` for redis (and the launcher may not raise it),
/// redis cannot start: it must then be FAILED, saying why.
fn redis_can_start() -> bool {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    hard >= 65536
}

fn up(v: &serde_json::Value, w: &str) -> bool {
    v["services"].as_array().is_some_and(|a| {
        a.iter().any(|s| {
            s["name"] == w
                && (s["state"] == "running"
                    || (w == "redis"
                        && !redis_can_start()
                        && s["state"] == "failed"
                        && s["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("above the hard limit"))))
        })
    })
}

fn all_running(v: &serde_json::Value) -> bool {
    WATCHERS.iter().all(|w| up(v, w))
}

#[test]
fn send_hup_reloads_by_signal_with_the_pid_kept() {
    let d = TempDir::new("makina-hup");
    let src = d.join("app.conf.j2");
    write(&src, "v1\n");
    let cfg = d.join("mc-launcher.yml");
    write(
        &cfg,
        &format!(
            "paths:\n  state: \"{{{{ root }}}}/state\"\ncircus:\n  config: /etc/circus/circusd.ini\nreconfigure:\n  steps:\n    - template: {{src: {}, dest: {}}}\n",
            src.display(),
            d.join("app.conf").display()
        ),
    );
    let run = makina(&d, &["-c", &cfg.to_string_lossy()]).spawn();
    let mut v = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            v = status(&run);
            all_running(&v)
        }),
        "never all running: {v}"
    );
    let ns = PathBuf::from(format!("/proc/{}/root", run.launcher_pid()));
    let log =
        |f: &str| std::fs::read_to_string(ns.join("var/log/circus").join(f)).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || log("nginx.stdout.log")
            .contains("nginx up")),
        "WatchedFileStream with time_format: {}",
        log("nginx.stdout.log")
    );
    let before: Vec<(&str, i64)> = WATCHERS.iter().map(|w| (*w, pid(&v, w))).collect();

    write(&src, "v2\n");
    let o = ctl(&run, &["reconfigure"]);
    assert_eq!(o.code, Some(0), "{}", o.all());
    // send_hup: HUP (haproxy: its hup_signal, USR2) to the same process.
    for (w, sig) in [("nginx", "HUP"), ("ssh", "HUP"), ("haproxy", "USR2")] {
        assert!(
            wait_until(Duration::from_secs(20), || log(&format!("{w}.signals"))
                .lines()
                .any(|l| l == sig)),
            "{w} never got {sig}: {:?}",
            log(&format!("{w}.signals"))
        );
    }
    assert!(
        !log("haproxy.signals").contains("HUP"),
        "haproxy gets its hup_signal only"
    );
    // The others restart (circus' default), with new pids.
    assert!(
        wait_until(Duration::from_secs(60), || {
            v = status(&run);
            all_running(&v)
                && (!redis_can_start() || pid(&v, "redis") != before[2].1)
                && pid(&v, "cron") != before[0].1
        }),
        "cron and redis never restarted: {v}"
    );
    for (w, p) in &before {
        if ["nginx", "ssh", "haproxy"].contains(w) {
            assert_eq!(pid(&v, w), *p, "{w} kept its pid");
        }
    }
    run.signal(15);
    let o = run.wait();
    assert_eq!(o.code, Some(0), "{}", o.all());
}
