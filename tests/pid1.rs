//! The PID-1 core (`mc-launcher -- CMD`): exit status, signals, reaping,
//! nothing left behind. Each behaviour is checked as PID 1 of a fresh pid
//! namespace and, where it differs, as a plain process (child subreaper).

mod common;
use common::*;
use std::time::Duration;

#[test]
fn every_exit_code_passes_through() {
    // 256 launches as PID 1: CMD's status is the launcher's, 0 to 255.
    for code in 0..=255 {
        let out = Launch::new(&["-q", "--", "sh", "-c", &format!("exit {code}")]).run();
        assert_eq!(out.code, Some(code), "exit {code}\n{}", out.all());
    }
    for code in [0, 1, 42, 255] {
        let out = Launch::new(&["-q", "--", "sh", "-c", &format!("exit {code}")])
            .not_pid1()
            .run();
        assert_eq!(out.code, Some(code), "not pid1, exit {code}\n{}", out.all());
    }
}

#[test]
fn killed_by_signal_gives_128_plus_n() {
    for (name, n) in [
        ("HUP", 1),
        ("INT", 2),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("TERM", 15),
    ] {
        for pid1 in [true, false] {
            let out = Launch::new(&["--", "sh", "-c", &format!("kill -{name} $$")])
                .pid1(pid1)
                .run();
            assert_eq!(out.code, Some(128 + n), "{name} pid1={pid1}\n{}", out.all());
        }
    }
}

#[test]
fn not_found_and_not_executable() {
    let d = TempDir::new("exec");
    let script = d.join("noexec.sh");
    write(&script, "#!/bin/sh\nexit 0\n");
    let out = Launch::new(&["--", "/nonexistent/cmd"]).run();
    out.assert_code(127);
    out.assert_stderr("/nonexistent/cmd");
    out.assert_stderr("No such file");
    let out = Launch::new(&["--", "definitely-not-a-command-xyz"])
        .not_pid1()
        .run();
    out.assert_code(127);
    let out = Launch::new(&["--", script.to_str().expect("utf8")]).run();
    out.assert_code(126);
    out.assert_stderr("Permission denied");
    let out = Launch::new(&["--", d.path().to_str().expect("utf8")]).run();
    // a directory is not executable
    out.assert_code(126);
}

#[test]
fn trapped_term_gives_cmds_own_code() {
    for pid1 in [true, false] {
        let d = TempDir::new("trap");
        let ready = d.join("ready");
        let script = format!(
            "trap 'exit 42' TERM; touch {}; while :; do sleep 0.05; done",
            ready.display()
        );
        let run = Launch::new(&["--", "sh", "-c", &script]).pid1(pid1).spawn();
        assert!(
            wait_until(Duration::from_secs(5), || ready.exists()),
            "CMD never started"
        );
        let out = run.stop();
        assert_eq!(out.code, Some(42), "pid1={pid1}\n{}", out.all());
        out.assert_stderr("TERM received");
        // one summary line
        out.assert_stderr("summary: main: stopped in");
    }
}

#[test]
fn untrapped_term_gives_143_and_int_130() {
    for (sig, code) in [(15, 143), (2, 130)] {
        let d = TempDir::new("term");
        let ready = d.join("ready");
        let script = format!("touch {}; exec sleep 100", ready.display());
        let run = Launch::new(&["--", "sh", "-c", &script]).spawn();
        assert!(wait_until(Duration::from_secs(5), || ready.exists()));
        std::thread::sleep(Duration::from_millis(50)); // let sh exec sleep
        run.signal(sig);
        let out = run.wait();
        assert_eq!(out.code, Some(code), "signal {sig}\n{}", out.all());
    }
}

#[test]
fn other_signals_are_forwarded() {
    for (sig, name) in [(10, "USR1"), (12, "USR2"), (1, "HUP"), (28, "WINCH")] {
        let d = TempDir::new("fwd");
        let ready = d.join("ready");
        let script = format!(
            "trap 'echo got-{name}; exit 0' {name}; touch {}; while :; do sleep 0.02; done",
            ready.display()
        );
        let run = Launch::new(&["--", "sh", "-c", &script]).spawn();
        assert!(wait_until(Duration::from_secs(5), || ready.exists()));
        run.signal(sig);
        let out = run.wait();
        assert_eq!(out.code, Some(0), "{name}\n{}", out.all());
        assert!(
            out.stdout.contains(&format!("got-{name}")),
            "{name} did not reach CMD\n{}",
            out.all()
        );
    }
}

/// Shell that orphans `n` grandchildren, waits for them to end, then counts
/// the zombies whose parent is the launcher.
fn orphan_script(n: u32) -> String {
    format!(
        r#"i=0; while [ $i -lt {n} ]; do (sleep 0.3 &); i=$((i+1)); done
sleep 1.5
z=0; children=0
for f in /proc/[0-9]*/stat; do
  read -r line < "$f" 2>/dev/null || continue
  rest=${{line##*) }}; state=${{rest%% *}}; rest=${{rest#* }}; ppid=${{rest%% *}}
  [ "$ppid" = "$PPID" ] || continue
  children=$((children+1))
  [ "$state" = Z ] && z=$((z+1))
done
echo "zombies=$z children=$children""#
    )
}

#[test]
fn thousand_orphans_leave_no_zombie() {
    for pid1 in [true, false] {
        let out = Launch::new(&["--", "sh", "-c", &orphan_script(1000)])
            .timeout(Duration::from_secs(60))
            .pid1(pid1)
            .run();
        out.assert_code(0);
        // The only child of the launcher left is CMD itself.
        let why = format!("pid1={pid1}");
        assert!(
            out.stdout.contains("zombies=0 children=1"),
            "{why}\n{}",
            out.all()
        );
    }
}

#[test]
fn nothing_left_running_after_exit() {
    for pid1 in [true, false] {
        let marker = format!(
            "{}{}",
            800_000 + std::process::id() % 100_000,
            if pid1 { 1 } else { 2 }
        );
        // A daemon that escapes CMD's process group and session, then CMD exits.
        let script = format!("setsid sleep {marker} & sleep {marker} & sleep 0.2; exit 5");
        let out = Launch::new(&["--", "sh", "-c", &script]).pid1(pid1).run();
        out.assert_code(5);
        assert!(
            wait_until(Duration::from_secs(2), || pids_with_cmdline(&format!(
                "sleep {marker}"
            ))
            .is_empty()),
            "pid1={pid1}: processes left: {:?}",
            pids_with_cmdline(&format!("sleep {marker}"))
        );
    }
}

#[test]
fn term_right_after_start_is_never_lost() {
    // As PID 1: from the moment the launcher runs its own code, a TERM at any
    // moment (during argument parsing, config loading, spawning) ends it.
    for i in 0..60u64 {
        let run = Launch::new(&["--", "sleep", "100"])
            .timeout(Duration::from_secs(10))
            .spawn();
        run.wait_signals_blocked();
        std::thread::sleep(Duration::from_micros((i * 7919) % 3000));
        let out = run.stop();
        assert_eq!(out.code, Some(143), "round {i}\n{}", out.all());
    }
    // Not PID 1: the TERM may land even before signals are blocked, then it
    // kills the launcher outright; either way it ends.
    for i in 0..30u64 {
        let run = Launch::new(&["--", "sleep", "100"])
            .not_pid1()
            .timeout(Duration::from_secs(10))
            .spawn();
        std::thread::sleep(Duration::from_micros((i * 3571) % 4000));
        let out = run.stop();
        assert_eq!(out.code, Some(143), "round {i}\n{}", out.all());
    }
}

#[test]
fn stop_deadline_kills_a_cmd_that_ignores_term() {
    let d = TempDir::new("deadline");
    let cfg = config(&d, "shutdown:\n  timeout: 500ms\n");
    let ready = d.join("ready");
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let run = Launch::new(&["-c", &cfg, "--", "sh", "-c", &script]).spawn();
    assert!(
        wait_until(Duration::from_secs(5), || ready.exists()),
        "CMD never started"
    );
    let t = std::time::Instant::now();
    let out = run.stop();
    let took = t.elapsed();
    // killed by SIGKILL after the deadline
    out.assert_code(137);
    assert!(
        took >= Duration::from_millis(450),
        "took {took:?}\n{}",
        out.all()
    );
    out.assert_stderr("SIGKILL after grace");
}

#[test]
fn plain_init_without_config() {
    let d = TempDir::new("plain");
    let out = Launch::new(&["--", "sh", "-c", "echo hello; echo MC_SERVICE=$MC_SERVICE"])
        .root(d.path())
        .run();
    out.assert_code(0);
    out.assert_stdout("hello\nMC_SERVICE=main");
    // A first plain argument also starts CMD (docker run IMAGE bash).
    let out = Launch::new(&["sh", "-c", "exit 9"]).root(d.path()).run();
    out.assert_code(9);
    // Nothing at all to run is a usage error.
    let out = Launch::new(&[]).root(d.path()).run();
    out.assert_code(2);
}

#[test]
fn command_line_errors_exit_2() {
    for args in [
        &["--bogus"][..],
        &["--skip", "nope", "--", "true"],
        &["colour=blue"],
        &["check", "extra"],
    ] {
        let out = Launch::new(args).not_pid1().run();
        assert_eq!(out.code, Some(2), "{args:?}\n{}", out.all());
        assert!(out.stderr.contains("usage:"), "{args:?}\n{}", out.all());
    }
    let out = Launch::new(&["--version"]).not_pid1().run();
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.starts_with("mc-launcher "), "{}", out.all());
}

#[test]
fn foreground_terminal_goes_to_cmd() {
    // `script` gives the launcher a pseudo-terminal as stdin, like docker run -ti.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("util-linux `script` is required (installed by scripts/setup-test-env.sh)");
    }
    let inner = format!(
        "{} -q -- sh -c 'if [ \"$(ps -o pgid= -p $$)\" = \"$(ps -o tpgid= -p $$)\" ]; then echo FOREGROUND; else echo BACKGROUND; fi'",
        bin().display()
    );
    let root = TempDir::new("fg-root");
    let out = std::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("MC_ROOT", root.path())
        .output()
        .expect("script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FOREGROUND"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
