//! `ctl status` says why (README "Control socket and ctl"): the `(oom)`
//! mark, the restart reason, sd_notify's `STATUS=`, a FAILED service's
//! reason; `ctl status NAME` shows one service in full; and `ctl` run as
//! root finds a launcher run as another uid. The real binary as PID 1.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

fn service(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_default()
}

/// The `ctl status` line that starts with `NAME: `.
fn line_of(text: &str, name: &str) -> String {
    let head = format!("{name}: ");
    text.lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_status_table_says_why() {
    let d = TempDir::new("why");
    // A fake cgroup whose OOM counter the "kernel" (the hog itself) raises
    // before its SIGKILL; the hog does it once, then stays up.
    let cg = d.join("cgroup");
    write(
        &cg.join("memory.events"),
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    );
    let once = d.join("hog-once");
    let alive = d.join("alive");
    std::fs::write(&alive, "").expect("flag");
    let yml = format!(
            "services:\n  \
             hog:\n    cmd: [\"sh\", \"-c\", \"if [ -e {once} ]; then exec sleep 1000; fi; touch {once}; printf 'oom 1\\\\noom_kill 1\\\\n' > {cg}/memory.events; kill -9 $$\"]\n  \
             web:\n    cmd: [\"sleep\", \"1000\"]\n    min_uptime: 10ms\n    live:\n      file: {alive}\n      period: 50ms\n      failure_threshold: 2\n  \
             told:\n    cmd: [\"sh\", \"-c\", \"python3 -c \\\"{py}\\\"; exec sleep 1000\"]\n    ready:\n      notify: true\n      timeout: 20s\n  \
             broken:\n    cmd: [\"sh\", \"-c\", \"exit 3\"]\n    max_retry: 1\n    backoff:\n      initial: 10ms\n",
            once = once.display(),
            cg = cg.display(),
            alive = alive.display(),
            py = python_notify("READY=1\\\\nSTATUS=serving 3 requests"),
        );
    let run = launch_in(&d, &yml, &[])
        .env("MC_CGROUP_ROOT", &cg.to_string_lossy())
        .spawn();
    let up = |v: &serde_json::Value| {
        service(v, "hog")["oom"] == true
            && service(v, "hog")["state"] == "running"
            && service(v, "told")["status"] == "serving 3 requests"
            && service(v, "broken")["state"] == "failed"
            && service(v, "web")["state"] == "running"
    };
    assert!(
        wait_until(LONG, || up(&status_json(&run))),
        "{}",
        status_json(&run)
    );
    std::fs::remove_file(&alive).expect("rm");
    assert!(
        wait_until(LONG, || service(&status_json(&run), "web")
            ["restart_reason"]
            == "liveness"),
        "{}",
        status_json(&run)
    );
    let out = ctl(&run, &["status"]);
    out.assert_code(0);
    let text = out.stdout;
    let hog_row = text
        .lines()
        .find(|l| l.starts_with("hog "))
        .unwrap_or_default();
    assert!(
        hog_row.ends_with("killed by KILL (oom)"),
        "the last exit says it was an OOM kill:\n{text}"
    );
    let hog = line_of(&text, "hog");
    assert!(
        hog.contains("restarted: crash") && hog.contains("OOM kills: 1"),
        "{text}"
    );
    assert!(
        line_of(&text, "web").contains("restarted: liveness"),
        "{text}"
    );
    assert!(
        line_of(&text, "told").contains("status: serving 3 requests"),
        "{text}"
    );
    let broken = line_of(&text, "broken");
    assert!(
        broken.starts_with("broken: FAILED: ") && broken.contains("exit 3"),
        "{text}"
    );
    let out = run.stop();
    out.assert_code(0);
}

#[test]
fn a_backoff_says_when_it_restarts() {
    let d = TempDir::new("why-backoff");
    let run = launch_in(&d, "services:\n  flappy:\n    cmd: [\"sh\", \"-c\", \"exit 1\"]\n    min_uptime: 10s\n    backoff:\n      initial: 30s\n      max: 30s\n  web:\n    cmd: [\"sleep\", \"1000\"]\n", &[]).spawn();
    assert!(
        wait_until(LONG, || service(&status_json(&run), "flappy")["state"]
            == "backoff"),
        "{}",
        status_json(&run)
    );
    let next = service(&status_json(&run), "flappy")["next_restart_s"].as_f64();
    assert!(next.is_some_and(|s| s > 0.0), "{}", status_json(&run));
    let text = ctl(&run, &["status"]).stdout;
    let line = line_of(&text, "flappy");
    assert!(
        line.contains("restarted: crash") && line.contains("; restarting in "),
        "{text}"
    );
    assert!(line_of(&text, "web").is_empty(), "nothing to say: {text}");
    run.stop().assert_code(0);
}

#[test]
fn status_name_shows_one_service_in_full() {
    let d = TempDir::new("why-one");
    let env_file = d.join("web.env");
    write(&env_file, "MODE=plain\n");
    let secret = d.join("db_password");
    write(&secret, "hunter2-not-shown");
    let flag = d.join("ready-flag");
    std::fs::write(&flag, "").expect("flag");
    let yml = format!(
            "services:\n  web:\n    cmd: [\"sh\", \"-c\", \"echo first complaint >&2; echo second complaint >&2; exec sleep 1000\"]\n    stderr: prefix\n    env_file: [{env}]\n    secrets:\n      DB_PASSWORD: {secret}\n    ready:\n      file: {flag}\n      timeout: 20s\n      interval: 20ms\n  other:\n    cmd: [\"sleep\", \"1001\"]\n",
            env = env_file.display(),
            secret = secret.display(),
            flag = flag.display(),
        );
    let run = launch_in(&d, &yml, &[]).spawn();
    let tail_seen = || {
        let v: serde_json::Value =
            serde_json::from_str(ctl(&run, &["--json", "status", "web"]).stdout.trim())
                .unwrap_or_default();
        v["services"][0]["state"] == "running"
            && v["services"][0]["detail"]["stderr_tail"]
                .as_array()
                .is_some_and(|t| t.len() == 2)
    };
    assert!(
        wait_until(LONG, tail_seen),
        "{}",
        ctl(&run, &["--json", "status", "web"]).stdout
    );
    let out = ctl(&run, &["status", "web"]);
    out.assert_code(0);
    let text = out.stdout;
    assert!(text.contains("\nweb "), "its row: {text}");
    assert!(!text.contains("other"), "that service only: {text}");
    for part in [
        "  command:     sh -c echo first complaint".to_string(),
        format!("  ready:       file {} (passing)", flag.display()),
        format!("  env file:    {}", env_file.display()),
        format!("  secret:      DB_PASSWORD: {}", secret.display()),
        "  last 2 line(s) of stderr:\n    first complaint\n    second complaint\n".to_string(),
    ] {
        assert!(text.contains(&part), "{part:?} in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "never a secret's value: {text}");
    let json = ctl(&run, &["--json", "status", "web"]).stdout;
    assert!(!json.contains("hunter2"), "{json}");
    let out = ctl(&run, &["status", "ghost"]);
    out.assert_code(1);
    out.assert_stderr("no such service: ghost");
    run.stop().assert_code(0);
}

/// `ctl` as root, in the launcher's mount namespace (as `docker exec`),
/// with `env`.
fn root_ctl(run: &Running, env: &[(&str, &str)], uid: Option<u32>, args: &[&str]) -> Output {
    let mut c = ctl_command(run, uid, args);
    c.env_remove("TMPDIR").env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    run_command(c)
}

#[test]
fn root_ctl_finds_a_launcher_run_as_another_uid() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (setpriv to another uid)");
        return;
    }
    let d = TempDir::new("why-uid");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // As `--user 1000` in a container: /run and the state dir are root's,
    // so the socket falls back to $TMPDIR/mc-launcher-1000.
    let scratch = d.join("tmp");
    std::fs::create_dir_all(&scratch).expect("scratch");
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let cfg = config(&d, "services:\n  web:\n    cmd: [\"sleep\", \"1000\"]\n");
    let bin = bin().to_string_lossy().into_owned();
    let tmp = scratch.to_string_lossy().into_owned();
    let run = Launch::new(&[
        "--reuid=1000",
        "--regid=1000",
        "--clear-groups",
        &bin,
        "-c",
        &cfg,
    ])
    .program(std::path::Path::new("/usr/bin/setpriv"))
    .env("TMPDIR", &tmp)
    .root(d.path())
    .spawn();
    let sock = scratch.join("mc-launcher-1000/mc-launcher.sock");
    assert!(
        wait_until(LONG, || sock.exists()),
        "the launcher's socket: {}",
        sock.display()
    );
    // With the container's environment (TMPDIR), and without it: PID 1's
    // own socket is found either way.
    for env in [&[("TMPDIR", tmp.as_str())][..], &[]] {
        let found = wait_until(LONG, || {
            let out = root_ctl(&run, env, None, &["status"]);
            out.code == Some(0) && out.stdout.contains("running")
        });
        assert!(
            found,
            "root's ctl with {env:?}: {}",
            root_ctl(&run, env, None, &["status"]).all()
        );
    }
    // The socket still refuses any other uid.
    let out = root_ctl(&run, &[("TMPDIR", &tmp)], Some(65534), &["status"]);
    // nobody cannot connect
    out.assert_code(3);
    let out = root_ctl(&run, &[], None, &["quit"]);
    out.assert_code(0);
    let out = run.wait();
    out.assert_code(0);
}

#[test]
fn a_restart_asked_for_says_who_asked() {
    let d = TempDir::new("why-asked");
    let run = launch_in(&d, &sleepers(&[("web", 1000), ("other", 1001)]), &[]).spawn();
    let running = |name: &str| service(&status_json(&run), name)["state"] == "running";
    assert!(wait_until(LONG, || running("web") && running("other")));
    assert!(service(&status_json(&run), "web")["restart_reason"].is_null());
    assert_eq!(ctl(&run, &["restart", "web"]).code, Some(0));
    assert_eq!(
        service(&status_json(&run), "web")["restart_reason"],
        "ctl",
        "{}",
        status_json(&run)
    );
    // A changed definition replaces its processes: `reload`.
    config(&d, &sleepers(&[("web", 1002), ("other", 1001)]));
    let out = ctl(&run, &["reload"]);
    out.assert_code(0);
    let v = status_json(&run);
    assert_eq!(service(&v, "web")["restart_reason"], "reload", "{v}");
    assert!(service(&v, "other")["restart_reason"].is_null(), "{v}");
    assert!(
        line_of(&ctl(&run, &["status"]).stdout, "web").contains("restarted: reload"),
        "{}",
        ctl(&run, &["status"]).stdout
    );
    run.stop().assert_code(0);
}
