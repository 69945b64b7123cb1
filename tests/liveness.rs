//! `ctl health --live` and a service that gave up (README "Liveness of a
//! service that gave up"), with the real binary as PID 1: a service whose
//! command cannot run goes FAILED while another runs on; `--live` fails
//! then, and passes when the failed one says `liveness: ignore`.

mod common;
use common::*;
use std::time::Duration;

fn failed_while_web_runs(liveness: &str) -> (Output, Output) {
    let d = TempDir::new("liveness");
    let cfg = d.join("mc-launcher.yml");
    write(
        &cfg,
        &format!(
            "services:\n  web:\n    cmd: [sleep, \"1000\"]\n  bad:\n    cmd: [\"{}\"]\n    max_retry: 1\n{liveness}",
            d.join("no-such-command").display()
        ),
    );
    let run = Launch::new(&["-c", &cfg.to_string_lossy()]).spawn();
    let mut last = String::new();
    let failed = wait_until(Duration::from_secs(10), || {
        last = ctl(&run, &["--json", "status"]).stdout;
        last.contains("\"failed\"") && last.contains("\"running\"")
    });
    assert!(failed, "bad never became FAILED with web running: {last}");
    let live = ctl(&run, &["health", "--live"]);
    let health = ctl(&run, &["health"]);
    let o = run.stop();
    o.assert_code(0);
    (live, health)
}

#[test]
fn a_failed_autostart_service_fails_the_liveness_probe() {
    let (live, health) = failed_while_web_runs("");
    live.assert_code(1);
    assert!(live.all().contains("bad"), "names it: {}", live.all());
    health.assert_code(1);
}

#[test]
fn liveness_ignore_keeps_the_probe_green() {
    let (live, health) = failed_while_web_runs("    liveness: ignore\n");
    live.assert_code(0);
    assert_eq!(health.code, Some(1), "still not healthy: {}", health.all());
}
