//! Running under an orchestrator (README "Running under an orchestrator"),
//! with the real binary as PID 1: readiness that comes and goes, liveness
//! restarts, HTTP probes, drain with pre_stop, MC_SHUTDOWN_TIMEOUT, the
//! termination report, OOM attribution and cgroup sizing from a fake
//! cgroup directory, sd_notify both ways.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn health(run: &Running, flag: Option<&str>) -> bool {
    let mut args = vec!["health"];
    args.extend(flag);
    ctl(run, &args).code == Some(0)
}

#[test]
fn readiness_comes_and_goes_without_a_restart() {
    let d = TempDir::new("orch-ready");
    let flag = d.join("ready-flag");
    let yml = format!(
            "services:\n  web:\n    cmd: [\"sleep\", \"1000\"]\n    ready:\n      file: {}\n      timeout: 30s\n      interval: 20ms\n      period: 50ms\n      failure_threshold: 2\n",
            flag.display()
        );
    let run = launch_in(&d, &yml, &[]).spawn();
    assert!(wait_until(Duration::from_secs(10), || ctl(
        &run,
        &["status"]
    )
    .code
        == Some(0)));
    assert!(!health(&run, None), "not ready before the flag");
    std::fs::write(&flag, "").expect("flag");
    assert!(wait_until(Duration::from_secs(10), || health(&run, None)));
    let pid = pids(&run, "web");
    std::fs::remove_file(&flag).expect("rm");
    assert!(
        wait_until(Duration::from_secs(10), || !health(&run, Some("--ready"))),
        "failing period probes make it not ready"
    );
    assert!(health(&run, Some("--live")), "still alive");
    assert_eq!(pids(&run, "web"), pid, "not restarted");
    std::fs::write(&flag, "").expect("flag");
    assert!(
        wait_until(Duration::from_secs(10), || health(&run, None)),
        "ready again"
    );
    let out = run.stop();
    out.assert_code(0);
    out.assert_stderr("web: not ready (2 failed readiness probes in a row)");
    out.assert_stderr("web: ready again");
}

#[test]
fn a_failing_liveness_probe_restarts_only_that_service() {
    let d = TempDir::new("orch-live");
    let flag = d.join("alive");
    std::fs::write(&flag, "").expect("flag");
    let yml = format!(
            "services:\n  web:\n    cmd: [\"sleep\", \"1000\"]\n    min_uptime: 10ms\n    live:\n      file: {}\n      period: 50ms\n      failure_threshold: 2\n  other:\n    cmd: [\"sleep\", \"1001\"]\n",
            flag.display()
        );
    let run = launch_in(&d, &yml, &[]).spawn();
    assert!(wait_until(Duration::from_secs(10), || health(&run, None)));
    let before = (pids(&run, "web"), pids(&run, "other"));
    std::fs::remove_file(&flag).expect("rm");
    assert!(
        wait_until(Duration::from_secs(10), || {
            service(&run, "web").and_then(|s| s.restart_reason) == Some("liveness".into())
        }),
        "restarted for liveness"
    );
    std::fs::write(&flag, "").expect("flag");
    assert!(wait_until(Duration::from_secs(10), || health(&run, None)));
    assert_ne!(before.0, pids(&run, "web"));
    assert_eq!(before.1, pids(&run, "other"), "only that service");
    let out = run.stop();
    out.assert_stderr("web: liveness probe failed 2 times in a row: restarting");
}

#[test]
fn http_probes_want_2xx_or_3xx() {
    let d = TempDir::new("orch-http");
    let port = free_port();
    let root = d.join("www");
    std::fs::create_dir_all(root.join("ok")).expect("www");
    std::fs::write(root.join("ok/index.html"), "ok").expect("page");
    let yml = format!(
            "services:\n  web:\n    cmd: [\"python3\", \"-m\", \"http.server\", \"-b\", \"127.0.0.1\", \"-d\", \"{www}\", \"{port}\"]\n    stdout: null\n    stderr: null\n    ready:\n      http: \"http://127.0.0.1:{port}/ok/\"\n      interval: 50ms\n  after_web:\n    cmd: [\"sleep\", \"1000\"]\n    after: [web]\n    critical: true\n    ready:\n      http: \"http://localhost:{port}/missing\"\n      interval: 50ms\n      timeout: 1s\n",
            www = root.display()
        );
    let run = launch_in(&d, &yml, &[]).spawn();
    let out = run.wait();
    out.assert_code(1);
    // 200 is ready
    out.assert_stderr("web: ready");
    // 404 never is
    out.assert_stderr("after_web: FAILED: not ready after 1.0s");
}

#[test]
fn drain_runs_pre_stop_then_waits_then_stops() {
    let d = TempDir::new("orch-drain");
    let log = d.join("log");
    let yml = "shutdown:\n  timeout: 20s\n  drain: 600ms\nservices:\n  web:\n    cmd: [\"sh\", \"-c\", \"trap 'echo stop web >> @D@/log; exit 0' TERM; echo start >> @D@/log; while :; do sleep 0.05; done\"]\n    pre_stop:\n      cmd: [\"sh\", \"-c\", \"echo pre_stop $MC_SERVICE >> @D@/log\"]\n      timeout: 5s\n";
    let run = launch_in(&d, yml, &[]).spawn();
    assert!(wait_until(Duration::from_secs(10), || health(&run, None)));
    // Running is spawned: the shell has yet to write its first line.
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.starts_with("start\n"))
    }));
    let t = Instant::now();
    run.signal(15);
    // While draining: not ready, still alive.
    assert!(wait_until(Duration::from_secs(5), || !health(
        &run,
        Some("--ready")
    )));
    assert!(health(&run, Some("--live")), "alive while draining");
    let out = run.wait();
    let took = t.elapsed();
    out.assert_code(0);
    let lines = std::fs::read_to_string(&log).expect("log");
    assert_eq!(lines, "start\npre_stop web\nstop web\n", "{}", out.all());
    assert!(
        took >= Duration::from_millis(600),
        "the drain wait came before the stop: {took:?}"
    );
    out.assert_stderr("draining for 600ms");
}

#[test]
fn mc_shutdown_timeout_overrides_the_config() {
    let d = TempDir::new("orch-env");
    let stubborn = "shutdown:\n  timeout: 10m\nservices:\n  stubborn:\n    cmd: [\"sh\", \"-c\", \"trap '' TERM; touch @D@/up; while :; do sleep 0.05; done\"]\n";
    let run = launch_in(&d, stubborn, &[])
        .env("MC_SHUTDOWN_TIMEOUT", "500ms")
        .spawn();
    // Stopped once it ignores TERM (its trap set), not merely spawned.
    assert!(wait_until(Duration::from_secs(10), || d
        .join("up")
        .exists()));
    let out = run.stop();
    out.assert_stderr("SIGKILL after grace");
    // check warns about a timeout docker's default kill would cut, unless
    // the variable is set; a bad value is refused.
    let check = |env: Option<&str>| {
        let mut l = launch_in(&d, stubborn, &["check"]).not_pid1();
        if let Some(v) = env {
            l = l.env("MC_SHUTDOWN_TIMEOUT", v);
        }
        l.run()
    };
    let out = check(None);
    out.assert_stderr("docker stop kills after 10 s");
    let out = check(Some("8"));
    out.assert_no_stderr("docker stop kills");
    let out = check(Some("soon"));
    out.assert_code(78);
    out.assert_stderr("MC_SHUTDOWN_TIMEOUT: `soon` is not a duration");
}

/// A fake cgroup v2 directory with the files the launcher reads.
fn fake_cgroup(d: &TempDir) -> std::path::PathBuf {
    let cg = d.join("cgroup");
    write(
        &cg.join("memory.events"),
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    );
    write(&cg.join("cpu.max"), "150000 100000\n");
    write(&cg.join("memory.max"), "67108864\n");
    cg
}

#[test]
fn oom_kills_are_attributed_reported_and_decide_the_exit() {
    let d = TempDir::new("orch-oom");
    let cg = fake_cgroup(&d);
    let report = d.join("termination-log");
    // The "kernel": the counter rises, then the process is SIGKILLed.
    let yml = format!(
            "termination_log: {report}\nservices:\n  hog:\n    cmd: [\"sh\", \"-c\", \"echo allocating >&2; sleep 0.2; printf 'oom 1\\\\noom_kill 1\\\\n' > {cg}/memory.events; kill -9 $$\"]\n    stderr: prefix\n    critical: true\n  web:\n    cmd: [\"sleep\", \"1000\"]\n",
            report = report.display(),
            cg = cg.display()
        );
    let out = launch_in(&d, &yml, &[])
        .env("MC_CGROUP_ROOT", &cg.to_string_lossy())
        .run();
    out.assert_code(137);
    out.assert_stderr("hog: killed by the kernel: out of memory");
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(
        text.starts_with("exit 137: critical service ended (hog: killed by KILL, OOM-killed)"),
        "{text}"
    );
    assert!(text.contains("allocating"), "the last stderr lines: {text}");
    assert!(text.len() <= 4096);
    assert!(
        out.stderr
            .trim_end()
            .ends_with(text.lines().next().unwrap_or("?")),
        "the same summary is the last line\n{}",
        out.all()
    );
}

#[test]
fn a_sigkill_from_someone_else_is_not_an_oom_kill() {
    let d = TempDir::new("orch-kill");
    let cg = fake_cgroup(&d);
    let out = launch_in(
        &d,
        "services:\n  victim:\n    cmd: [\"sh\", \"-c\", \"kill -9 $$\"]\n    respawn: false\n",
        &[],
    )
    .env("MC_CGROUP_ROOT", &cg.to_string_lossy())
    .run();
    out.assert_code(0);
    out.assert_no_stderr("out of memory");
}

#[test]
fn cgroup_sizing_reaches_templates_and_processes() {
    let d = TempDir::new("orch-size");
    let cg = fake_cgroup(&d);
    let seen = d.join("seen");
    let yml = format!(
            "services:\n  w:\n    cmd: [\"sh\", \"-c\", \"echo cpus={{{{ cgroup.cpus }}}} mem={{{{ cgroup.memory_max }}}} env=$MC_CPUS/$MC_MEMORY_MAX > {}\"]\n    respawn: false\n",
            seen.display()
        );
    let out = launch_in(&d, &yml, &[])
        .env("MC_CGROUP_ROOT", &cg.to_string_lossy())
        .run();
    out.assert_code(0);
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpus = 2.min(online);
    assert_eq!(
        std::fs::read_to_string(&seen).expect("seen"),
        format!("cpus={cpus} mem=67108864 env={cpus}/67108864\n")
    );
}

#[test]
fn sd_notify_both_ways() {
    let d = TempDir::new("orch-notify");
    let env_seen = d.join("env");
    let yml = format!(
            "services:\n  web:\n    cmd: [\"sh\", \"-c\", \"sleep 0.3; python3 -c \\\"{py}\\\"; exec sleep 1000\"]\n    ready:\n      notify: true\n      timeout: 20s\n  plain:\n    cmd: [\"sh\", \"-c\", \"echo notify=$NOTIFY_SOCKET > {env}; exec sleep 1000\"]\n",
            py = python_notify("READY=1\\\\nSTATUS=serving"),
            env = env_seen.display()
        );
    // Our side: the supervisor the launcher reports to.
    let sock_path = d.join("supervisor.sock");
    let sup = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind");
    sup.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let run = launch_in(&d, &yml, &[])
        .env("NOTIFY_SOCKET", &sock_path.to_string_lossy())
        .spawn();
    let mut buf = [0u8; 512];
    let n = sup.recv(&mut buf).expect("READY=1 from the launcher");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("READY=1"), "{first}");
    // By then the service has said it is ready, and shown its status.
    let web = service(&run, "web").expect("web");
    assert_eq!(web.state.as_str(), "running", "{web:?}");
    assert_eq!(web.status.as_deref(), Some("serving"), "{web:?}");
    assert_eq!(
        std::fs::read_to_string(&env_seen).expect("env"),
        "notify=\n",
        "a service that did not ask never sees a NOTIFY_SOCKET"
    );
    run.signal(15);
    let n = sup.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let out = run.wait();
    out.assert_code(0);
    let _ = Path::new(&sock_path);
}
