//! Hardening (worst inputs and conditions): fault injection, stress, and
//! the panic hook. Nothing lost, nothing left running, PID 1 never dies.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A makina tree for project `demo` with the state dir inside the temp
/// root (the control socket stays at its default, in the test's private
/// /run); `config` is appended to mc-launcher.yml.
/// The launcher over a `tree` in `d` (`-c` its config, then `args`).
fn in_tree(d: &TempDir, config: &str, args: &[&str]) -> Launch {
    let cfg = tree(d, config).to_string_lossy().into_owned();
    let mut all = vec!["-c", cfg.as_str()];
    all.extend_from_slice(args);
    Launch::new(&all).root(d.path())
}

fn tree(d: &TempDir, config: &str) -> PathBuf {
    write(
        &d.join("projects/demo/pillar/init.sls"),
        "makina-projects.demo:\n  data:\n    site: image-default\n",
    );
    std::fs::create_dir_all(d.join("projects/demo/data")).expect("volume");
    let cfg = d.join("projects/demo/project/.salt/mc-launcher.yml");
    write(
        &cfg,
        &format!("paths:\n  state: \"{{{{ root }}}}/state\"\n{config}"),
    );
    cfg
}

fn proc_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn proc_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ----- fault injection ------------------------------------------------------

/// SIGKILL at random points of the pillar install: the target is always the
/// image default or the override, whole, never a mix; the next start
/// finishes the job.
#[test]
fn pillar_install_killed_anywhere_is_never_half_written() {
    let d = TempDir::new("hard-pillar-kill");
    tree(&d, "");
    let default = std::fs::read(d.join("projects/demo/pillar/init.sls")).expect("default");
    // A large override (just under the 1 MiB limit) makes the install take
    // long enough to be cut.
    let mut over = String::from("makina-projects.demo:\n  data:\n");
    for i in 0..28_000 {
        over.push_str(&format!("    key{i}: value number {i}\n"));
    }
    assert!(over.len() < 1 << 20);
    write(
        &d.join("projects/demo/data/configuration/pillar.sls"),
        &over,
    );
    let target = d.join("projects/demo/pillar/init.sls");
    let mut cut = 0;
    for i in 0..25u64 {
        // Back to the image default, then a start killed after 0..20 ms.
        std::fs::write(&target, &default).expect("reset");
        let _ = std::fs::remove_dir_all(d.join("state"));
        let run = Launch::new(&["--skip", "ssh", "prepare"])
            .root(d.path())
            .not_pid1()
            .spawn();
        std::thread::sleep(Duration::from_micros((i * 7919) % 60_000));
        let pid = run.child.id() as i32;
        // SAFETY: kill(2) on the process we started.
        unsafe { nix::libc::kill(pid, nix::libc::SIGKILL) };
        let out = run.wait();
        if out.code == Some(128 + nix::libc::SIGKILL) {
            cut += 1;
        }
        let now = std::fs::read(&target).expect("target");
        assert!(
            now == default || now == over.as_bytes(),
            "round {i}: the pillar is neither the default nor the override ({} bytes)",
            now.len()
        );
    }
    assert!(cut > 0, "no run was cut short: the test proved nothing");
    let out = Launch::new(&["--skip", "ssh", "prepare"])
        .root(d.path())
        .not_pid1()
        .run();
    out.assert_code(0);
    assert_eq!(std::fs::read(&target).expect("target"), over.as_bytes());
}

/// A full filesystem during the pillar install: a clear error naming the
/// path, exit 1, and the image default intact.
#[test]
fn full_disk_during_pillar_install_keeps_the_default() {
    let d = TempDir::new("hard-pillar-full");
    tree(&d, "");
    let pillar_dir = d.join("projects/demo/pillar");
    let default = "makina-projects.demo:\n  data:\n    site: image-default\n";
    let big: String = (0..5000).map(|i| format!("k{i}: {i}\n")).collect();
    write(&d.join("projects/demo/data/configuration/pillar.sls"), &big);
    // The pillar dir on a 16 KiB tmpfs, holding the default only.
    let before = format!(
        "printf '{}' > {}/init.sls",
        default.replace('\n', "\\n"),
        pillar_dir.display()
    );
    let after = format!("cat {}/init.sls", pillar_dir.display());
    let out = Launch::new(&["--skip", "ssh", "prepare"])
        .root(d.path())
        .tmpfs_sized(&pillar_dir, "16k")
        .before(&before)
        .after(&after)
        .run();
    out.assert_code(1);
    out.assert_stderr("filesystem is full");
    out.assert_stderr("init.sls");
    assert!(
        out.stdout.ends_with(default),
        "default damaged: {}",
        out.stdout
    );
}

/// A log file on a full filesystem: the launcher and the service go on,
/// and the stop is clean.
#[test]
fn full_disk_during_log_rotation_does_not_stop_anything() {
    let d = TempDir::new("hard-log-full");
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let yml = format!(
        r#"services:
  chatty:
    cmd: ["sh", "-c", "while :; do echo 0123456789012345678901234567890123456789; done"]
    stdout: {{file: "{}/chatty.log", max_bytes: 20k, backup_count: 3}}
"#,
        logs.display()
    );
    let run = in_tree(&d, &yml, &[]).tmpfs_sized(&logs, "48k").spawn();
    assert!(wait_until(Duration::from_secs(10), || state(
        &run, "chatty"
    ) == "running"));
    // The disk fills up; the service goes on writing and keeps running.
    // The tmpfs is in the launcher's mount namespace: seen through /proc.
    let seen = std::path::PathBuf::from(format!(
        "/proc/{}/root{}",
        run.launcher_pid(),
        logs.display()
    ));
    let used = || -> u64 {
        std::fs::read_dir(&seen)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    assert!(wait_until(Duration::from_secs(10), || used() > 40 * 1024));
    assert_eq!(state(&run, "chatty"), "running");
    let out = run.stop();
    out.assert_code(0);
    out.assert_stderr("cannot write log");
    out.assert_stderr("summary: chatty");
}

/// `tree` with one prepopulate copy of a small seed into `{volume}/data`;
/// the config file and the volume.
fn seeded_tree(d: &TempDir) -> (PathBuf, PathBuf) {
    let src = d.join("seed");
    write(&src.join("a.txt"), "seed\n");
    let vol = d.join("projects/demo/data");
    let cfg = tree(
        d,
        &format!(
            "prepopulate:\n  - src: \"{}\"\n    dest: \"{}/data\"\n",
            src.display(),
            vol.display()
        ),
    );
    (cfg, vol)
}

/// A read-only volume: the preflight stops before prepopulate writes,
/// naming the path and the fix (78, nothing written).
#[test]
fn read_only_volume_is_a_clear_error() {
    let d = TempDir::new("hard-ro");
    let (cfg, vol) = seeded_tree(&d);
    let out = Launch::new(&["-c", &cfg.to_string_lossy(), "--skip", "ssh", "prepare"])
        .root(d.path())
        .before(&format!("mount --bind -o ro {v} {v}", v = vol.display()))
        .run();
    out.assert_code(78);
    let v = vol.display();
    out.assert_stderr_all(&[
        format!("{v}/data: cannot be created in {v}: read-only filesystem; needed to prepopulate"),
        format!("fix: the data volume {v} is mounted read-only: mount it read-write"),
    ]);
    assert!(!vol.join("data").exists(), "something was written");
}

/// A volume owned by another user, the launcher not root: the preflight
/// names the path, the owner it needs and the fix; nothing is written.
#[test]
fn volume_owned_by_another_user_is_a_clear_error() {
    let d = TempDir::new("hard-owner");
    let (cfg, vol) = seeded_tree(&d);
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The state dir falls back to $TMPDIR: keep it in the test's tree.
    let scratch = d.join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let cfg = cfg.to_string_lossy().into_owned();
    let out = as_nobody(&["-c", &cfg, "prepare"])
        .env("TMPDIR", &scratch.to_string_lossy())
        .root(d.path())
        .run();
    // The preflight stops before anything is written (78), with the owner
    // the volume needs and the command that gives it.
    out.assert_code(78);
    let v = vol.display();
    out.assert_stderr_all(&[
        format!("{v}/data: cannot be created in {v}: owned by uid 0 with mode 0755, not writable by uid 65534"),
        "fix: give the data volume to uid 65534: `chown -R 65534` its directory on the host".to_string(),
        format!("--entrypoint chown IMAGE -R 65534 {v}`"),
    ]);
    assert!(!vol.join("data").exists(), "something was written");
}

/// `/run` not writable: the control socket falls back to the state dir
/// and `ctl` finds it.
#[test]
fn control_socket_falls_back_when_run_is_read_only() {
    let d = TempDir::new("hard-run-ro");
    write(
        &d.join("projects/demo/project/.salt/mc-launcher.yml"),
        "paths:\n  state: \"{{ root }}/state\"\nservices:\n  s:\n    cmd: [sleep, \"1000\"]\n",
    );
    std::fs::create_dir_all(d.join("projects/demo/pillar")).expect("pillar");
    let run = Launch::new(&[])
        .root(d.path())
        .before("mount -o remount,ro /run")
        .spawn();
    assert!(wait_until(Duration::from_secs(10), || d
        .join("state/mc-launcher.sock")
        .exists()));
    // The client, reading the same config, finds the fallback.
    let out = std::process::Command::new(bin())
        .args(["--root", &d.path().to_string_lossy(), "ctl", "status"])
        .output()
        .expect("ctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("running"), "{text}");
    let out = run.stop();
    out.assert_code(0);
}

/// A service whose binary is deleted while it runs: once it dies it cannot
/// come back and ends FAILED; the launcher and the other services go on.
#[test]
fn deleted_binary_ends_failed_without_harming_the_rest() {
    let d = TempDir::new("hard-deleted");
    let bin_copy = d.join("mysleep");
    std::fs::copy("/bin/sleep", &bin_copy).expect("copy sleep");
    let yml = format!(
            "services:\n  doomed:\n    cmd: [\"{}\", \"1000\"]\n    max_retry: 2\n    backoff: {{initial: 10ms, max: 20ms}}\n  other:\n    cmd: [sleep, \"1000\"]\n",
            bin_copy.display()
        );
    let run = in_tree(&d, &yml, &[]).spawn();
    assert!(wait_until(Duration::from_secs(10), || state(
        &run, "doomed"
    ) == "running"));
    std::fs::remove_file(&bin_copy).expect("delete");
    let out = ctl(&run, &["signal", "doomed", "KILL"]);
    out.assert_code(0);
    assert!(
        wait_until(Duration::from_secs(10), || state(&run, "doomed")
            == "failed"),
        "{}",
        ctl(&run, &["status"]).stdout
    );
    assert_eq!(state(&run, "other"), "running");
    let out = run.stop();
    out.assert_code(0);
}

/// Services that fork a daemon and exit, or whose child calls setsid to
/// leave the group: not PID 1 (a subreaper), the launcher still stops them
/// all before it exits.
#[test]
fn daemons_and_setsid_escapes_are_stopped() {
    let d = TempDir::new("hard-daemon");
    let marker = 700_000 + std::process::id() % 100_000;
    let yml = format!(
        r#"services:
  forker:
    cmd: ["sh", "-c", "sleep {marker} & exit 0"]
    respawn: false
  escaper:
    cmd: ["sh", "-c", "setsid sleep {marker} & exec sleep 1000"]
"#
    );
    let run = in_tree(&d, &yml, &[]).not_pid1().spawn();
    let needle = format!("sleep {marker}");
    assert!(wait_until(Duration::from_secs(10), || pids_with_cmdline(
        &needle
    )
    .len()
        == 2));
    let out = run.stop();
    out.assert_code(0);
    assert!(
        pids_with_cmdline(&needle).is_empty(),
        "left running: {needle}"
    );
}

// ----- stress ---------------------------------------------------------------

/// A launcher over `n` services `s0`… that run `trap` then loop on
/// `sleep 1`; `head` goes before the `services:` section.
fn start_looping(d: &TempDir, head: &str, n: usize, trap: &str) -> Running {
    let cfg = services_yml(head, n, |i| {
        format!(
            "  s{i}:\n    cmd: [\"sh\", \"-c\", \"{trap}; while :; do sleep 1 & wait; done\"]\n"
        )
    });
    let cfg = tree(d, &cfg);
    Launch::new(&["-c", &cfg.to_string_lossy()])
        .root(d.path())
        .timeout(Duration::from_secs(60))
        .spawn()
}

/// 10,000 orphans re-parented to PID 1 are all reaped.
#[test]
fn ten_thousand_orphans_leave_no_zombie() {
    let script = r#"i=0; while [ $i -lt 10000 ]; do (sleep 0.2 &); i=$((i+1)); done
sleep 1
z=0
for f in /proc/[0-9]*/stat; do
  read -r line < "$f" 2>/dev/null || continue
  rest=${line##*) }; state=${rest%% *}
  [ "$state" = Z ] && z=$((z+1))
done
echo "zombies=$z""#;
    let out = Launch::new(&["--", "sh", "-c", script])
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_code(0);
    out.assert_stdout("zombies=0");
}

/// A storm of 1,000 mixed signals during start, run and stop: the launcher
/// neither dies nor loses the stop request.
#[test]
fn signal_storm_loses_nothing() {
    let d = TempDir::new("hard-storm");
    let run = start_looping(&d, "", 5, "trap '' USR1 USR2 HUP ALRM WINCH PIPE");
    let pid = run.wait_signals_blocked();
    let storm = [
        nix::libc::SIGUSR1,
        nix::libc::SIGUSR2,
        nix::libc::SIGWINCH,
        nix::libc::SIGALRM,
        nix::libc::SIGCONT,
        nix::libc::SIGCHLD,
        nix::libc::SIGPIPE,
        nix::libc::SIGHUP,
    ];
    for i in 0..900usize {
        // SAFETY: kill(2) on the launcher we started.
        unsafe { nix::libc::kill(pid, storm[i % storm.len()]) };
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || state(&run, "s4") == "running"),
        "{}",
        ctl(&run, &["status"]).stdout
    );
    // The stop request in the middle of 100 more.
    for i in 0..100usize {
        if i == 50 {
            run.signal(nix::libc::SIGTERM);
        }
        // SAFETY: as above; the launcher may already be gone (ESRCH).
        unsafe { nix::libc::kill(pid, storm[i % storm.len()]) };
    }
    let out = run.wait();
    out.assert_code(0);
    for i in 0..5 {
        out.assert_stderr(&format!("summary: s{i}:"));
    }
}

/// 100 services start, then stop within the deadline.
#[test]
fn hundred_services_start_and_stop_within_the_deadline() {
    let d = TempDir::new("hard-hundred");
    let run = start_looping(&d, "shutdown:\n  timeout: 5s\n", 100, "trap 'exit 0' TERM");
    let all_up = wait_until(Duration::from_secs(30), || {
        status_json(&run)["services"]
            .as_array()
            .is_some_and(|a| a.len() == 100 && a.iter().all(|s| s["state"] == "running"))
    });
    assert!(all_up, "{}", ctl(&run, &["status"]).stdout);
    let t = Instant::now();
    let out = run.stop();
    let took = t.elapsed();
    out.assert_code(0);
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    out.assert_stderr_count("summary: s", 100);
    out.assert_no_stderr("SIGKILL after grace");
}

/// 1,000 reloads in a row: no file descriptor and no memory growth.
#[test]
fn thousand_reloads_leak_nothing() {
    let d = TempDir::new("hard-reloads");
    let two = "services:\n  a:\n    cmd: [sleep, \"1000\"]\n  b:\n    cmd: [sleep, \"1000\"]\n";
    let run = in_tree(&d, two, &[])
        .timeout(Duration::from_secs(120))
        .spawn();
    let pid = run.wait_signals_blocked();
    assert!(wait_until(Duration::from_secs(10), || state(&run, "b") == "running"));
    // SIGHUP is the reload request. Each is sent once the launcher has read
    // the one before (it is no longer pending), so none coalesce.
    let hup_pending = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("ShdPnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|bits| bits & 1 != 0)
    };
    let reload = |n: usize| {
        for _ in 0..n {
            // SAFETY: kill(2) on the launcher we started.
            unsafe { nix::libc::kill(pid, nix::libc::SIGHUP) };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while hup_pending() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a SIGHUP stayed pending"
                );
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    };
    reload(50);
    std::thread::sleep(Duration::from_millis(300));
    let (fds, rss) = (proc_fds(pid), proc_rss_kib(pid));
    reload(1000);
    std::thread::sleep(Duration::from_millis(500));
    // (A ctl connection being closed counts for a moment: allow it to go.)
    let mut fds2 = 0;
    let settled = wait_until(Duration::from_secs(3), || {
        fds2 = proc_fds(pid);
        fds2 <= fds
    });
    assert!(settled, "file descriptors grew from {fds} to {fds2}");
    let rss2 = proc_rss_kib(pid);
    assert_eq!(
        state(&run, "a"),
        "running",
        "{}",
        ctl(&run, &["status"]).all()
    );
    assert!(rss2 <= rss + 256, "RSS grew from {rss} KiB to {rss2} KiB");
    let out = run.stop();
    out.assert_code(0);
    // Every SIGHUP was read before the next was sent: each one reloaded.
    let seen = out.stderr.matches("reload").count();
    assert!(seen >= 1050, "{seen} reloads handled of 1050");
}

// ----- security -------------------------------------------------------------

/// While keys change again and again, `authorized_keys` and everything in
/// `~/.ssh` never has a group or world bit, at any moment we can observe.
#[test]
fn ssh_files_are_never_world_readable() {
    let d = TempDir::new("hard-ssh-modes");
    let home = d.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let keys = d.join("projects/demo/data/ssh");
    std::fs::create_dir_all(&keys).expect("keys");
    let yml = format!(
        "ssh:\n  home: \"{}\"\n  sshd: never\nservices:\n  s:\n    cmd: [sleep, \"1000\"]\n",
        home.display()
    );
    let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    write(&keys.join("first.pub"), &format!("{line} first\n"));
    let run = in_tree(&d, &yml, &[]).spawn();
    assert!(wait_until(Duration::from_secs(10), || home
        .join(".ssh/authorized_keys")
        .exists()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = {
        let (stop, dir) = (stop.clone(), home.join(".ssh"));
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut looks = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if let Ok(m) = e.metadata() {
                        looks += 1;
                        if m.permissions().mode() & 0o077 != 0 {
                            bad.push(format!("{:?} {:o}", e.path(), m.permissions().mode()));
                        }
                    }
                }
            }
            (bad, looks)
        })
    };
    for i in 0..60 {
        write(
            &keys.join(format!("k{}.pub", i % 3)),
            &format!("{line} key{i}\n"),
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (bad, looks) = seen.join().expect("watcher");
    assert!(looks > 100, "the watcher saw too little: {looks}");
    assert!(bad.is_empty(), "group/world bits seen: {bad:?}");
    run.stop().assert_code(0);
}

/// Links planted in the volume never make the launcher read or write
/// outside: a key file linked to /etc/passwd is refused, a prepopulate
/// destination linked to /root/.ssh is refused, a pillar override linked
/// to /etc/shadow is refused.
#[test]
fn symlinks_in_the_volume_never_lead_outside() {
    let d = TempDir::new("hard-links");
    let vol = d.join("projects/demo/data");
    let src = d.join("seed");
    write(&src.join("authorized_keys"), "ssh-rsa AAAA attacker\n");
    let yml = format!(
            "pillar:\n  on_invalid: keep-default\nssh:\n  sshd: never\nprepopulate:\n  - src: \"{}\"\n    dest: \"{}/data\"\n",
            src.display(),
            vol.display()
        );
    std::fs::create_dir_all(vol.join("ssh")).expect("ssh");
    std::fs::create_dir_all(vol.join("configuration")).expect("conf");
    std::os::unix::fs::symlink("/etc/passwd", vol.join("ssh/passwd.pub")).expect("link");
    std::os::unix::fs::symlink("/etc/shadow", vol.join("configuration/pillar.sls")).expect("link");
    std::os::unix::fs::symlink("/root/.ssh", vol.join("data")).expect("link");
    // /root is a private tmpfs in the test (the host's is never touched).
    let out = in_tree(&d, &yml, &["prepare"])
        .before("mkdir -p /root/.ssh")
        .after("ls -A /root/.ssh; cat /root/.ssh/authorized_keys 2>/dev/null; true")
        .run();
    let all = out.all();
    assert_ne!(out.code, Some(0), "{all}");
    assert!(
        all.contains("passwd.pub"),
        "the linked key file is not reported: {all}"
    );
    assert!(
        all.contains("pillar.sls"),
        "the escaping pillar link is not reported: {all}"
    );
    assert!(
        !out.stdout.contains("attacker"),
        "prepopulate wrote through the link: {all}"
    );
    assert!(
        !out.stdout.contains("root:"),
        "/etc/passwd leaked into authorized_keys: {all}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("projects/demo/pillar/init.sls")).expect("pillar"),
        "makina-projects.demo:\n  data:\n    site: image-default\n"
    );
}

// ----- the panic hook ---------------------------------------------------------

/// A panic in the event loop (injected: cargo feature fault-injection): the
/// launcher says so, stops every process and exits 70 instead of hanging.
#[cfg(feature = "fault-injection")]
#[test]
fn a_panic_stops_everything_and_exits_70() {
    for pid1 in [true, false] {
        let d = TempDir::new("hard-panic");
        let marker = 600_000 + std::process::id() % 100_000 + u32::from(pid1);
        let cfg = tree(
            &d,
            &format!("services:\n  a:\n    cmd: [sleep, \"{marker}\"]\n  b:\n    cmd: [\"sh\", \"-c\", \"trap '' TERM; sleep {marker}\"]\n"),
        );
        let run = Launch::new(&["-c", &cfg.to_string_lossy()])
            .root(d.path())
            .env("MC_FAULT", "panic-on-usr2")
            .pid1(pid1)
            .spawn();
        let needle = format!("sleep {marker}");
        assert!(wait_until(Duration::from_secs(10), || pids_with_cmdline(
            &needle
        )
        .len()
            >= 2));
        run.signal(nix::libc::SIGUSR2);
        let out = run.wait();
        assert_eq!(out.code, Some(70), "pid1={pid1}: {}", out.all());
        out.assert_stderr("internal error");
        assert!(
            pids_with_cmdline(&needle).is_empty(),
            "pid1={pid1}: left running"
        );
    }
}
