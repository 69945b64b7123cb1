//! Profiles (README "Profiles"), with the real binary as PID 1: a service
//! with `profiles` starts only when one of them is active (`--profile`,
//! repeatable, or `MC_PROFILES`), one without always starts, `check`
//! prints what a profile set starts, and an `after` on a service the
//! active profiles leave out is an error naming both (exit 78).

mod common;
use common::*;
use std::time::Duration;

const SERVICES: &str = "services:
  web:
    cmd: [sleep, \"1000\"]
  debug:
    cmd: [sleep, \"1000\"]
    profiles: [debug]
  tools:
    cmd: [sleep, \"1000\"]
    profiles: [tools, debug]
";

/// mc-launcher.yml in `d`: the services above, then `extra`.
fn with_services(d: &TempDir, extra: &str) -> String {
    config(d, &format!("{SERVICES}{extra}"))
}

/// The state of every service once all settled (running, or stopped:
/// never started).
fn states(launch: Launch) -> Vec<(String, String)> {
    let run = launch.spawn();
    let mut rows = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        rows = status(&run).and_then(|r| r.services).unwrap_or_default();
        !rows.is_empty()
            && rows
                .iter()
                .all(|s| matches!(s.state.as_str(), "running" | "stopped"))
    });
    assert!(ok, "never settled: {rows:?}");
    run.stop().assert_code(0);
    rows.into_iter()
        .map(|s| (s.name, s.state.as_str().to_string()))
        .collect()
}

fn running(states: &[(String, String)]) -> Vec<&str> {
    let mut r: Vec<&str> = states
        .iter()
        .filter(|(_, s)| s == "running")
        .map(|(n, _)| n.as_str())
        .collect();
    r.sort_unstable();
    r
}

#[test]
fn only_the_active_profiles_start() {
    let d = TempDir::new("profiles");
    let cfg = with_services(&d, "");
    let none = states(Launch::new(&["-c", &cfg]));
    assert_eq!(running(&none), ["web"], "{none:?}");
    assert!(
        none.iter().any(|(n, s)| n == "debug" && s == "stopped"),
        "a left-out service is known, stopped: {none:?}"
    );
    let debug = states(Launch::new(&["-c", &cfg, "--profile", "debug"]));
    assert_eq!(running(&debug), ["debug", "tools", "web"]);
    let tools = states(Launch::new(&["-c", &cfg]).env("MC_PROFILES", "tools"));
    assert_eq!(running(&tools), ["tools", "web"]);
    let both = states(Launch::new(&[
        "-c",
        &cfg,
        "--profile",
        "tools",
        "--profile",
        "nothing",
    ]));
    assert_eq!(running(&both), ["tools", "web"]);
}

#[test]
fn a_left_out_service_can_be_started_by_hand_and_is_not_health() {
    let d = TempDir::new("profiles-ctl");
    let cfg = with_services(&d, "");
    let run = Launch::new(&["-c", &cfg]).spawn();
    assert!(wait_until(Duration::from_secs(10), || ctl(
        &run,
        &["health"]
    )
    .code
        == Some(0)));
    let o = ctl(&run, &["start", "debug"]);
    o.assert_code(0);
    assert!(
        wait_until(Duration::from_secs(10), || !pids(&run, "debug").is_empty()),
        "debug never started"
    );
    run.stop().assert_code(0);
}

#[test]
fn check_prints_what_a_profile_set_starts() {
    let d = TempDir::new("profiles-check");
    let cfg = with_services(&d, "");
    let o = Launch::new(&["-c", &cfg, "check"]).not_pid1().run();
    o.assert_code(0);
    o.assert_stdout("  - web\n");
    o.assert_stdout("  - debug (not started: profiles debug; active: none)");
    let o = Launch::new(&["-c", &cfg, "check", "--profile", "tools"])
        .not_pid1()
        .run();
    o.assert_code(0);
    o.assert_stdout("  - tools\n");
    o.assert_stdout("  - debug (not started: profiles debug; active: tools)");
}

#[test]
fn after_on_a_left_out_service_is_an_error_naming_both() {
    let d = TempDir::new("profiles-after");
    let app_after_debug = "  app:\n    cmd: [sleep, \"1000\"]\n    after: [debug]\n";
    let cfg = with_services(&d, app_after_debug);
    for args in [vec!["-c", &cfg, "check"], vec!["-c", &cfg]] {
        let o = Launch::new(&args).run();
        assert_eq!(o.code, Some(78), "{args:?}: {}", o.all());
        assert!(
            o.stderr.contains("service app runs after debug") && o.stderr.contains("do not start"),
            "{args:?}: {}",
            o.all()
        );
    }
    // With the profile active, it is fine.
    let o = Launch::new(&["-c", &cfg, "--profile", "debug", "check"])
        .not_pid1()
        .run();
    o.assert_code(0);
}
