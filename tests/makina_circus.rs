//! makina-states' own circus files (README "circus compatibility"): the
//! /etc/circus its salt states render for ssh, cron, redis, nginx and
//! haproxy (tests/fixtures/circus/makina) passes `check` with no warning,
//! starts the real daemons in makina's priority order, and `send_hup` /
//! `hup_signal` reload a watcher by signal on a live reconfigure, its pid
//! kept and the daemon serving its new config, while the others restart.
//! Real binary as PID 1, real nginx, haproxy, sshd, redis and cron.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WATCHERS: [&str; 5] = ["cron", "ssh", "redis", "nginx", "haproxy"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/circus/makina")
}

/// Loopback ports of one run.
struct Ports {
    nginx: u16,
    haproxy: u16,
    ssh: u16,
    redis: u16,
}

/// The daemons' own files in the test's dir: configs on loopback ports,
/// pid files and data there too; nginx and haproxy answer `VERSION`.
fn daemon_files(d: &TempDir, p: &Ports) {
    let dir = d.path().display().to_string();
    std::fs::create_dir_all(d.join("redis")).expect("redis dir");
    for (file, text) in [
        ("nginx.conf.j2", format!(
            "pid {dir}/nginx.pid;\nerror_log stderr;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{};\n    location / {{ return 200 \"VERSION\"; }}\n  }}\n}}\n",
            p.nginx
        )),
        ("haproxy.cfg.j2", format!(
            "global\n  pidfile {dir}/haproxy.pid\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 5s\n  timeout server 5s\nfrontend web\n  bind 127.0.0.1:{}\n  http-request return status 200 content-type text/plain string VERSION\n",
            p.haproxy
        )),
        ("redis.conf", format!(
            "bind 127.0.0.1\nport {}\ndaemonize no\ndir {dir}/redis\npidfile {dir}/redis.pid\nlogfile \"\"\nsave \"\"\n",
            p.redis
        )),
        ("sshd_config", format!(
            "Port {}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\nUsePAM no\n",
            p.ssh
        )),
    ] {
        write(&d.join(file), &text);
    }
    let k = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("host_key"))
        .status()
        .expect("ssh-keygen");
    assert!(k.success());
    // makina's watcher files, with this run's paths.
    let conf = d.join("circus/circusd.conf.d");
    std::fs::create_dir_all(&conf).expect("circus dir");
    std::fs::copy(fixtures().join("circusd.ini"), d.join("circus/circusd.ini")).expect("ini");
    for e in std::fs::read_dir(fixtures().join("circusd.conf.d")).expect("fixtures") {
        let e = e.expect("entry");
        let text = std::fs::read_to_string(e.path()).expect("fixture");
        write(&conf.join(e.file_name()), &text.replace("@DIR@", &dir));
    }
}

/// `VERSION` in the two templates.
fn set_version(d: &TempDir, from: &str, to: &str) {
    for f in ["nginx.conf.j2", "haproxy.cfg.j2"] {
        let text = std::fs::read_to_string(d.join(f)).expect("template");
        write(&d.join(f), &text.replace(from, to));
    }
}

/// The fixture tree as the namespace's /etc/circus, with what a makina
/// image has around it: a `redis` group, /var/www/html, /var/log/circus,
/// sshd's /run/sshd (private views of /etc, /var and /run: the host's stay
/// untouched; the view's crontabs emptied, so that cron runs none of the
/// host's jobs), and the hard limit on open files raised for redis's
/// `rlimit_nofile = 65536` where root may (with CAP_SYS_RESOURCE).
fn makina(d: &TempDir, args: &[&str]) -> Launch {
    Launch::new(args)
        .root(d.path())
        .overlay("/etc", &d.join("etc-overlay"))
        .overlay("/var", &d.join("var-overlay"))
        .overlay("/run", &d.join("run-overlay"))
        .timeout(Duration::from_secs(90))
        .before(&format!(
            "{{ ulimit -n 65536 2>/dev/null || true; }} && mkdir -p /etc/circus /var/log/circus /var/www/html /run/sshd && rm -f /etc/cron.d/* /var/spool/cron/crontabs/* && : > /etc/crontab && cp -r {}/. /etc/circus/ && echo 'redis:x:998:' >> /etc/group",
            d.join("circus").display()
        ))
}

#[test]
fn makinas_watcher_files_pass_check_in_priority_order() {
    let d = TempDir::new("makina-check");
    let ports = Ports {
        nginx: 1,
        haproxy: 2,
        ssh: 3,
        redis: 4,
    };
    daemon_files(&d, &ports);
    let o = makina(&d, &["check"]).not_pid1().run();
    o.assert_code(0);
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

/// Whether the launcher's hard limit on open files (this process's, raised
/// in the namespace where root may) reaches makina's `rlimit_nofile =
/// 65536` for redis: where it cannot, redis must be FAILED, saying why.
fn redis_can_start() -> bool {
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 65536 2>/dev/null; ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        });
    hard.is_none_or(|h| h >= 65536)
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
fn send_hup_reloads_the_real_daemons_with_the_pid_kept() {
    let d = TempDir::new("makina-hup");
    let ports = Ports {
        nginx: free_port(),
        haproxy: free_port(),
        ssh: free_port(),
        redis: free_port(),
    };
    daemon_files(&d, &ports);
    set_version(&d, "VERSION", "v1");
    let cfg = d.join("mc-launcher.yml");
    let step = |f: &str, to: &str| {
        format!(
            "    - template: {{src: {}, dest: {}}}\n",
            d.join(f).display(),
            d.join(to).display()
        )
    };
    write(
        &cfg,
        &format!(
            "paths:\n  state: \"{{{{ root }}}}/state\"\ncircus:\n  config: /etc/circus/circusd.ini\nreconfigure:\n  steps:\n{}{}",
            step("nginx.conf.j2", "nginx.conf"),
            step("haproxy.cfg.j2", "haproxy.cfg")
        ),
    );
    let run = makina(&d, &["-c", &cfg.to_string_lossy()]).spawn();
    let mut v = serde_json::Value::Null;
    let nginx = format!("127.0.0.1:{}", ports.nginx);
    let haproxy = format!("127.0.0.1:{}", ports.haproxy);
    let serves = |addr: &str, want: &str| http_get(addr, "/").is_some_and(|b| b.trim() == want);
    assert!(
        wait_until(Duration::from_secs(60), || {
            v = status(&run);
            all_running(&v) && serves(&nginx, "v1") && serves(&haproxy, "v1")
        }),
        "never all running and serving: {v}"
    );
    let ns = PathBuf::from(format!("/proc/{}/root", run.launcher_pid()));
    let log =
        |f: &str| std::fs::read_to_string(ns.join("var/log/circus").join(f)).unwrap_or_default();
    assert!(
        !redis_can_start()
            || wait_until(Duration::from_secs(10), || log("redis.stdout.log")
                .contains("Ready to accept connections")),
        "redis (65536 files) up, its log a WatchedFileStream: {}",
        log("redis.stdout.log")
    );
    let before: Vec<(&str, i64)> = WATCHERS.iter().map(|w| (*w, pid(&v, w))).collect();

    set_version(&d, "v1", "v2");
    let o = ctl(&run, &["reconfigure"]);
    o.assert_code(0);
    // send_hup: nginx's master rereads its config on HUP, haproxy's
    // master (-Ws, master-worker) on its hup_signal USR2, sshd re-execs
    // itself on HUP: the new config served, the pid kept.
    assert!(
        wait_until(Duration::from_secs(20), || serves(&nginx, "v2")
            && serves(&haproxy, "v2")),
        "nginx {:?} / haproxy {:?} never served v2",
        http_get(&nginx, "/"),
        http_get(&haproxy, "/")
    );
    assert!(
        wait_until(Duration::from_secs(20), || log("ssh.stderr.log")
            .contains("Received SIGHUP; restarting.")),
        "sshd never got HUP: {}",
        log("ssh.stderr.log")
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
    let o = run.stop();
    o.assert_code(0);
}
