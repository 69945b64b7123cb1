//! Circus-style supervision of configured services (README "Supervision"), with the
//! real binary as PID 1.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// A service script that logs its start, and its stop when TERM arrives.
fn logged(name: &str, log: &std::path::Path) -> String {
    format!(
        "trap 'echo stop {name} >> {log}; exit 0' TERM; echo start {name} >> {log}; while :; do sleep 0.05; done",
        log = log.display()
    )
}

#[test]
fn start_in_dependency_and_priority_order_stop_in_reverse() {
    let d = TempDir::new("order");
    let log = d.join("log");
    let cfg = config(
        &d,
        &format!(
            r#"
services:
  a:
    cmd: ["sh", "-c", "{a}"]
  b:
    cmd: ["sh", "-c", "{b}"]
    after: [a]
  c:
    cmd: ["sh", "-c", "{c}"]
    priority: 10
"#,
            a = logged("a", &log),
            b = logged("b", &log),
            c = logged("c", &log)
        ),
    );
    let run = Launch::new(&["-c", &cfg])
        .env("MC_LOG", "debug")
        .root(d.path())
        .spawn();
    assert!(
        wait_until(Duration::from_secs(5), || file_lines(&log).len() == 3),
        "{:?}",
        file_lines(&log)
    );
    let out = run.stop();
    out.assert_code(0);
    // Spawn order, from the launcher's own log: c (priority 10) and a
    // (level 0), then b (after a). Without a `ready` check, `after` orders
    // spawns; the services' own first lines may still race.
    let spawned: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("mc-launcher: debug: "))
        .filter_map(|l| l.split_once(": started, pid").map(|(name, _)| name))
        .collect();
    assert_eq!(spawned, ["c", "a", "b"], "{}", out.all());
    // Stops are sequential (a level waits until the one above is down), so
    // the services' own log shows their order.
    let got = file_lines(&log);
    assert_eq!(
        &got[3..],
        ["stop b", "stop a", "stop c"],
        "reverse order, higher priority last\n{}",
        out.all()
    );
    for name in ["a", "b", "c"] {
        out.assert_stderr(&format!("summary: {name}: stopped in"));
    }
}

#[test]
fn after_waits_for_readiness() {
    let d = TempDir::new("ready");
    let log = d.join("log");
    let flag = d.join("flag");
    let yml = format!(
        r#"
services:
  slow:
    cmd: ["sh", "-c", "sleep 0.6; echo slow-ready >> {log}; touch {flag}; exec sleep 100"]
    ready: {{file: "{flag}", interval: 50ms, timeout: 5s}}
  tcp:
    cmd: ["python3", "-c", "import socket,time; time.sleep(0.4); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 0)); s.listen(); open('{port}','w').write(str(s.getsockname()[1])); time.sleep(100)"]
  dependent:
    cmd: ["sh", "-c", "echo dependent-start >> {log}; exec sleep 100"]
    after: [slow]
"#,
        log = log.display(),
        flag = flag.display(),
        port = d.join("port").display()
    );
    let run = launch_in(&d, &yml, &[]).spawn();
    assert!(
        wait_until(Duration::from_secs(5), || file_lines(&log).len() == 2),
        "{:?}",
        file_lines(&log)
    );
    let out = run.stop();
    assert_eq!(
        file_lines(&log),
        ["slow-ready", "dependent-start"],
        "{}",
        out.all()
    );
    out.assert_stderr("slow: ready");
}

#[test]
fn readiness_timeout_fails_a_critical_service() {
    let d = TempDir::new("readyfail");
    let out = launch_in(
        &d,
        r#"
services:
  never:
    cmd: ["sleep", "100"]
    critical: true
    ready: {tcp: "127.0.0.1:1", timeout: 300ms, interval: 50ms}
  other:
    cmd: ["sleep", "100"]
"#,
        &[],
    )
    .run();
    out.assert_code(1);
    out.assert_stderr("never: FAILED: not ready after 300ms");
    out.assert_stderr("summary: other: stopped in");
}

#[test]
fn term_ignoring_service_is_killed_with_its_group_after_grace() {
    let d = TempDir::new("grace");
    let marker = format!("{}", 700_000 + std::process::id() % 100_000);
    let yml = format!(
        r#"
services:
  stubborn:
    cmd: "sh -c 'trap \"\" TERM; (trap \"\" TERM; exec sleep {marker}) & while :; do sleep 0.05; done'"
    graceful_timeout: 400ms
"#
    );
    let run = launch_in(&d, &yml, &[]).not_pid1().spawn();
    assert!(wait_until(Duration::from_secs(5), || !pids_with_cmdline(
        &format!("sleep {marker}")
    )
    .is_empty()));
    let t = Instant::now();
    let out = run.stop();
    let took = t.elapsed();
    out.assert_code(0);
    assert!(took >= Duration::from_millis(380), "{took:?}");
    out.assert_stderr("stubborn: stopped in");
    out.assert_stderr("SIGKILL after grace");
    assert!(
        pids_with_cmdline(&format!("sleep {marker}")).is_empty(),
        "the whole group is gone"
    );
}

#[test]
fn one_global_deadline_for_several_slow_services() {
    let d = TempDir::new("deadline");
    let body = services_yml("shutdown:\n  timeout: 800ms\n", 4, |i| {
        let after = match i {
            0 => String::new(),
            _ => format!("    after: [slow{}]\n", i - 1),
        };
        format!("  slow{i}:\n    cmd: [\"sh\", \"-c\", \"trap '' TERM; touch @D@/up{i}; while :; do sleep 0.05; done\"]\n    graceful_timeout: 30s\n{after}")
    });
    let run = launch_in(&d, &body, &[]).spawn();
    // All four run and ignore TERM (the last one starts after the other
    // three): each says so once its trap is set, not merely spawned.
    assert!(wait_until(Duration::from_secs(10), || {
        (0..4).all(|i| d.join(&format!("up{i}")).exists())
    }));
    run.signal(15);
    // Each would get 30 s of grace: the run ends within the harness's 20 s
    // only because the one 800 ms deadline held for all four levels.
    let out = run.wait();
    out.assert_stderr_count("SIGKILL after grace", 4);
}

#[test]
fn crash_loop_backs_off_and_ends_failed() {
    let d = TempDir::new("crash");
    let log = d.join("starts");
    let yml = r#"
services:
  crashy:
    cmd: ["sh", "-c", "date +%s.%N >> @D@/starts; exit 3"]
    max_retry: 4
    backoff: {initial: 100ms, max: 10s}
    min_uptime: 1s
"#;
    let out = launch_in(&d, yml, &[]).run();
    // nothing left to supervise, one service failed
    out.assert_code(1);
    let times: Vec<f64> = file_lines(&log)
        .iter()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(times.len(), 5, "first start + 4 retries\n{}", out.all());
    let delays: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, d) in delays.iter().enumerate() {
        // Lower bounds only: a loaded machine may start a retry late,
        // never early.
        let base = 0.1 * f64::from(1u32 << i);
        assert!(
            *d >= base * 0.5 - 0.01,
            "delay {i} = {d:.3}s, base {base}s: {delays:?}"
        );
    }
    assert!(delays[3] > delays[0], "delays grow: {delays:?}");
    out.assert_stderr("crashy: FAILED: 5 consecutive failed starts");
}

#[test]
fn critical_service_decides_the_exit() {
    let d = TempDir::new("critical");
    let cfg = config(
        &d,
        r#"
services:
  job:
    cmd: ["sh", "-c", "sleep 0.3; exit 7"]
    critical: true
    respawn: false
  web:
    cmd: ["sleep", "100"]
"#,
    );
    let out = Launch::new(&["-c", &cfg]).root(d.path()).run();
    out.assert_code(7);
    out.assert_stderr("summary: web: stopped in");

    let cfg = config(
        &d,
        r#"
services:
  flaky:
    cmd: ["false"]
    critical: true
    max_retry: 1
    backoff: {initial: 10ms, max: 10ms}
  web:
    cmd: ["sleep", "100"]
"#,
    );
    let out = Launch::new(&["-c", &cfg]).root(d.path()).run();
    // critical service exhausted its retries
    out.assert_code(1);
}

#[test]
fn numprocesses_runs_that_many() {
    let d = TempDir::new("nproc");
    let log = d.join("pids");
    let yml = format!(
            "services:\n  w:\n    cmd: [\"sh\", \"-c\", \"echo $$ >> {}; exec sleep 100\"]\n    numprocesses: 3\n",
            log.display()
        );
    let run = launch_in(&d, &yml, &[]).spawn();
    assert!(wait_until(Duration::from_secs(5), || file_lines(&log)
        .len()
        == 3));
    std::thread::sleep(Duration::from_millis(200));
    let out = run.stop();
    let mut pids = file_lines(&log);
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{pids:?}");
    out.assert_code(0);
}

#[test]
fn user_drops_privileges() {
    let d = TempDir::new("user");
    let out_file = d.join("id");
    std::fs::create_dir_all(d.path()).expect("dir");
    // Let nobody write into the test directory.
    std::process::Command::new("chmod")
        .args(["777", d.path().to_str().expect("utf8")])
        .status()
        .expect("chmod");
    let yml = format!(
            "services:\n  u:\n    cmd: [\"sh\", \"-c\", \"echo $(id -u) $(id -g) $HOME $USER > {}\"]\n    user: nobody\n    respawn: false\n",
            out_file.display()
        );
    let out = launch_in(&d, &yml, &[]).run();
    out.assert_code(0);
    let text = std::fs::read_to_string(&out_file).expect("service wrote its ids");
    let nobody = nix_user("nobody");
    assert_eq!(
        text.trim(),
        format!("{} {} {} nobody", nobody.0, nobody.1, nobody.2),
        "{}",
        out.all()
    );
}

/// A `ready: cmd` probe runs as the service's user, with its environment:
/// the service becomes ready only when the probe finds itself nobody
/// with the service's own variable.
#[test]
fn a_cmd_probe_runs_as_the_services_user() {
    let d = TempDir::new("probe-user");
    let nobody = nix_user("nobody");
    let yml = format!(
            "services:\n  u:\n    cmd: [\"sleep\", \"30\"]\n    user: nobody\n    env: {{PROBE_WANT: \"{uid}\"}}\n    ready:\n      cmd: [\"sh\", \"-c\", \"test \\\"$(id -u) $USER\\\" = \\\"$PROBE_WANT nobody\\\"\"]\n      timeout: 5s\n      interval: 50ms\n  after_u:\n    cmd: [\"sh\", \"-c\", \"echo u-was-ready\"]\n    after: [u]\n    respawn: false\n    critical: true\n",
            uid = nobody.0
        );
    let out = launch_in(&d, &yml, &[]).run();
    out.assert_stdout("u-was-ready");
    out.assert_code(0);
}

/// Whichever way a process is started — posix_spawn for a plain service
/// and the main command, fork for one with rlimits — it leads its own
/// process group, with no signal blocked or ignored (the launcher blocks
/// all and ignores SIGPIPE, SIGTTIN and SIGTTOU), and its rlimits applied.
#[test]
fn every_process_gets_its_own_group_and_a_clean_signal_state() {
    let d = TempDir::new("spawn-state");
    let dump = |name: &str| {
        format!(
            "[sh, -c, \"exec cat /proc/self/status /proc/self/limits /proc/self/stat > {}\"]",
            d.join(name).display()
        )
    };
    let yml = format!(
            "services:\n  plain:\n    cmd: {}\n    respawn: false\n  limited:\n    cmd: {}\n    rlimits: {{nofile: 1000}}\n    respawn: false\n",
            dump("plain"),
            dump("limited")
        );
    // The main command ends the run once both services have written all
    // (their last line, /proc/self/stat, starts with the pid), then
    // dumps its own state from the same process (exec keeps the pid, group
    // and mask). Reading /proc/$$ from a child of the shell instead would
    // race with the shell's own mask changes: dash blocks every signal
    // around fork and wait.
    let main = format!(
        "until grep -qs '^[0-9]' {p} && grep -qs '^[0-9]' {l}; do sleep 0.01; done; exec cat /proc/self/status /proc/self/limits /proc/self/stat > {m}",
        m = d.join("main").display(),
        p = d.join("plain").display(),
        l = d.join("limited").display()
    );
    let out = launch_in(&d, &yml, &["--", "sh", "-c", &main]).run();
    out.assert_code(0);
    for name in ["plain", "limited", "main"] {
        let text = std::fs::read_to_string(d.join(name)).expect("dump");
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(field("SigBlk:"), "0000000000000000", "{name}: {text}");
        // Signals 32 and 33 are glibc's own: this harness starts the
        // launcher through glibc's posix_spawn, which leaves them ignored,
        // and a forked child inherits that. Every other one must be default.
        let ignored = u64::from_str_radix(&field("SigIgn:"), 16).unwrap_or(u64::MAX);
        assert_eq!(ignored & !(0b11 << 31), 0, "{name}: {text}");
        // /proc/self/stat: pid (comm) state ppid pgrp ...
        let stat = text.lines().last().unwrap_or("");
        let pid = stat.split_whitespace().next().unwrap_or("?");
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .unwrap_or("?");
        assert_eq!(pid, pgrp, "{name} leads its own group: {stat}");
    }
    let limited = std::fs::read_to_string(d.join("limited")).expect("dump");
    let nofile: Vec<&str> = limited
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .map(|r| r.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(nofile.get(..2), Some(&["1000", "1000"][..]), "{limited}");
}

/// Users and groups are read from /etc/passwd and /etc/group, not through
/// NSS: in a private /etc whose nsswitch.conf names a backend that does not
/// exist (so a libc lookup finds nobody), a user added to the files still
/// gets its uid, primary and supplementary groups, home and name.
#[test]
fn users_come_from_the_files_not_nss() {
    let d = TempDir::new("users-files");
    let out_file = d.join("id");
    std::process::Command::new("chmod")
        .args(["777", d.path().to_str().expect("utf8")])
        .status()
        .expect("chmod");
    let yml = format!(
            "services:\n  u:\n    cmd: [\"sh\", \"-c\", \"echo $(id -u) $(id -G) $HOME $USER > {}\"]\n    user: mcl-files\n    respawn: false\n",
            out_file.display()
        );
    let out = launch_in(&d, &yml, &[])
        .overlay("/etc", &d.join("etc-overlay"))
        .before(
            "echo 'mcl-files:x:4242:4243::/home/mcl-files:/bin/sh' >> /etc/passwd && \
             printf 'mcl-files:x:4243:\\nmcl-extra:x:4244:root,mcl-files\\n' >> /etc/group && \
             printf 'passwd: mcl-no-such-backend\\ngroup: mcl-no-such-backend\\n' > /etc/nsswitch.conf",
        )
        .run();
    out.assert_code(0);
    let text = std::fs::read_to_string(&out_file).expect("service wrote its ids");
    assert_eq!(
        text.trim(),
        "4242 4243 4244 /home/mcl-files mcl-files",
        "{}",
        out.all()
    );
}

fn nix_user(name: &str) -> (u32, u32, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .expect("user exists");
    let f: Vec<&str> = line.split(':').collect();
    (
        f[2].parse().expect("uid"),
        f[3].parse().expect("gid"),
        f[5].to_string(),
    )
}

#[test]
fn prefix_output_is_complete_and_unmixed() {
    let d = TempDir::new("prefix");
    let body = services_yml("", 4, |i| {
        format!(
            "  s{i}:\n    cmd: [\"sh\", \"-c\", \"seq -f 's{i} line %g of a reasonably long log line' 1 20000\"]\n    stdout: prefix\n    respawn: false\n"
        )
    });
    let out = launch_in(&d, &body, &["-q"])
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(out.code, Some(0), "{}", &out.stderr);
    let mut next = [1u32; 4];
    for line in out.stdout.lines() {
        let (name, rest) = line
            .split_once(" | ")
            .unwrap_or_else(|| panic!("torn line: {line:?}"));
        let i: usize = name
            .trim_start_matches('s')
            .parse()
            .unwrap_or_else(|_| panic!("bad prefix: {line:?}"));
        let want = format!("s{i} line {} of a reasonably long log line", next[i]);
        assert_eq!(rest, want, "line out of order or mixed");
        next[i] += 1;
    }
    assert_eq!(next, [20001; 4], "every line of every service arrived");
}

#[test]
fn stderr_prefix_and_partial_last_line() {
    let d = TempDir::new("stderr");
    let out = launch_in(&d, "services:\n  e:\n    cmd: [\"sh\", \"-c\", \"echo out; echo err >&2; printf partial\"]\n    stdout: prefix\n    stderr: prefix\n    respawn: false\n", &[]).run();
    out.assert_stdout("e | out\ne | partial\n");
    out.assert_stderr("e ! err\n");
}

#[test]
fn file_output_rotates() {
    let d = TempDir::new("rotate");
    let logf = d.join("logs/w.log");
    let yml = format!(
            "services:\n  w:\n    cmd: [\"sh\", \"-c\", \"seq -f 'line %05g' 1 1000\"]\n    stdout: {{file: \"{}\", max_bytes: 1000, backup_count: 3}}\n    respawn: false\n",
            logf.display()
        );
    let out = launch_in(&d, &yml, &[]).run();
    out.assert_code(0);
    for suffix in ["", ".1", ".2", ".3"] {
        let p = d.join(&format!("logs/w.log{suffix}"));
        let len = std::fs::metadata(&p)
            .map(|m| m.len())
            .unwrap_or_else(|_| panic!("{} missing", p.display()));
        assert!(len > 0 && len <= 1000, "{} has {len} bytes", p.display());
    }
    assert!(!d.join("logs/w.log.4").exists(), "backup_count holds");
    let last = std::fs::read_to_string(&logf).expect("log");
    assert!(last.ends_with("line 01000\n"), "{last}");
}

#[test]
fn idle_launcher_does_not_wake_up() {
    let d = TempDir::new("idle");
    let body = services_yml("", 5, |i| {
        format!("  s{i}:\n    cmd: [\"sleep\", \"1000\"]\n")
    });
    let run = launch_in(&d, &body, &[]).spawn();
    let pid = run.launcher_pid();
    std::thread::sleep(Duration::from_millis(800));
    let woke = wakeups_over(pid, Duration::from_secs(3));
    let out = run.stop();
    assert_eq!(woke, 0, "the launcher woke up {woke} times while idle");
    out.assert_code(0);
}

#[test]
fn missing_command_fails_without_spinning() {
    let d = TempDir::new("missing");
    let cfg = config(&d, "services:\n  ghost:\n    cmd: [\"/nonexistent/ghost\"]\n  web:\n    cmd: [\"sleep\", \"100\"]\n");
    let run = Launch::new(&["-c", &cfg]).root(d.path()).spawn();
    std::thread::sleep(Duration::from_millis(500));
    let out = run.stop();
    assert_eq!(
        out.stderr.matches("cannot run /nonexistent/ghost").count(),
        2,
        "one FAILED line and one summary\n{}",
        out.all()
    );
    out.assert_stderr("ghost: FAILED");
    let out = Launch::new(&["-c", &cfg, "check"])
        .root(d.path())
        .not_pid1()
        .run();
    out.assert_code(78);
    out.assert_stderr("ghost");
    out.assert_stderr("/nonexistent/ghost");
}

#[test]
fn main_command_runs_alongside_services() {
    let d = TempDir::new("main");
    let log = d.join("log");
    let cfg = config(
        &d,
        &format!(
            "services:\n  bg:\n    cmd: [\"sh\", \"-c\", \"{}\"]\n",
            logged("bg", &log)
        ),
    );
    let out = Launch::new(&[
        "-c",
        &cfg,
        "--",
        "sh",
        "-c",
        &format!("sleep 0.3; cat {}; exit 4", log.display()),
    ])
    .root(d.path())
    .run();
    out.assert_code(4);
    // the service started before the main command
    out.assert_stdout("start bg");
    assert_eq!(file_lines(&log), ["start bg", "stop bg"]);
}

/// A TERM-ignoring main command (the interactive shell of `docker run -ti
/// IMAGE bash`) does not eat the services' grace: both services get TERM
/// and stop in order, only the main command is killed after the deadline.
#[test]
fn a_term_ignoring_main_command_does_not_eat_the_services_grace() {
    let d = TempDir::new("stop-main");
    let log = d.join("log");
    let body = format!(
        "services:\n  web:\n    cmd: [\"sh\", \"-c\", \"{}\"]\n  worker:\n    cmd: [\"sh\", \"-c\", \"{}\"]\n    after: [web]\nshutdown:\n  timeout: 1500ms\n",
        logged("web", &log),
        logged("worker", &log)
    );
    let main = format!(
        "trap '' TERM; echo start main >> {log}; while :; do sleep 0.05; done",
        log = log.display()
    );
    let run = launch_in(&d, &body, &["--", "sh", "-c", &main]).spawn();
    assert!(
        wait_until(Duration::from_secs(10), || file_lines(&log).len() == 3),
        "{:?}",
        file_lines(&log)
    );
    let out = run.stop();
    // the main command was killed
    out.assert_code(137);
    assert_eq!(
        &file_lines(&log)[3..],
        ["stop worker", "stop web"],
        "both services got TERM and stopped, dependents first\n{}",
        out.all()
    );
    for name in ["web", "worker"] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("summary: {name}:")))
            .unwrap_or_else(|| panic!("no summary for {name}\n{}", out.all()));
        assert!(
            line.contains("(exit 0)") && !line.contains("SIGKILL"),
            "{name} ended gracefully: {line}"
        );
    }
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("summary: main:") && l.contains("SIGKILL after grace")),
        "{}",
        out.all()
    );
}
