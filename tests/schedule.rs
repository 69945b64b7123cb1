//! Scheduled jobs (README "Scheduled jobs") with the real binary as PID 1:
//! a fixed-rate job runs again and again, each run bracketed by the stop
//! and the restart of the service it pauses; a run due while the previous
//! one runs is skipped and counted; a run past its timeout is stopped; a
//! cron job in a time zone runs at its minute; `check` names a bad
//! expression. Waits are on events (lines the services write, `ctl`
//! answers); the time limits only guard against a hang.

mod common;
use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LONG: Duration = Duration::from_secs(20);

fn job<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .map(|s| &s["job"])
        .unwrap_or(&serde_json::Value::Null)
}

/// `ctl --json status` once `ok` holds of it (or the limit passes: fail).
fn status_when(
    run: &Running,
    limit: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut status = serde_json::Value::Null;
    let held = wait_until(limit, || {
        status = status_json(run);
        ok(&status)
    });
    assert!(held, "{status}");
    status
}

/// The launcher, PID 1, over `body`.
fn launch(d: &TempDir, body: &str, limit: Duration) -> Running {
    let cfg = config(d, body);
    Launch::new(&["-c", &cfg])
        .root(d.path())
        .timeout(limit)
        .spawn()
}

#[test]
fn a_fixed_rate_job_runs_in_order_and_its_pause_brackets_each_run() {
    let d = TempDir::new("sched-every");
    let log = d.join("events");
    let other = d.join("other.pids");
    let run = launch(
        &d,
        r#"services:
  web:
    cmd: ["sh", "-c", "trap 'echo web-stop >> @D@/events; exit 0' TERM; echo web-start >> @D@/events; while :; do sleep 0.05; done"]
  other:
    cmd: ["sh", "-c", "echo $$ >> @D@/other.pids; exec sleep 1000"]
  gc:
    cmd: ["sh", "-c", "echo gc-start >> @D@/events; sleep 0.2; echo gc-end >> @D@/events"]
    schedule: {every: 2s, pause: [web]}
"#,
        LONG,
    );
    let three_runs = || {
        let l = file_lines(&log);
        l.iter().filter(|x| *x == "gc-end").count() >= 3
            && l.last().is_some_and(|x| x == "web-start")
    };
    assert!(wait_until(LONG, three_runs), "{:?}", file_lines(&log));
    let status = status_json(&run);
    let metrics = ctl(&run, &["metrics"]).stdout;
    let text = ctl(&run, &["status"]).stdout;
    let out = run.stop();
    out.assert_code(0);
    // Every run: the paused service stops, the job runs, the service starts.
    let events = file_lines(&log);
    assert_eq!(events.first().map(String::as_str), Some("web-start"));
    let runs: Vec<&[String]> = events[1..].chunks(4).filter(|c| c.len() == 4).collect();
    assert!(runs.len() >= 3, "{events:?}");
    for r in runs {
        assert_eq!(
            r,
            ["web-stop", "gc-start", "gc-end", "web-start"],
            "{events:?}"
        );
    }
    assert_eq!(
        file_lines(&other).len(),
        1,
        "the other service is never touched"
    );
    let j = job(&status, "gc");
    assert!(j["runs"]["ok"].as_u64() >= Some(3), "{status}");
    assert_eq!(j["last_result"], "ok", "{status}");
    assert_eq!(j["last_exit"], "exit 0", "{status}");
    assert_eq!(j["schedule"], "every 2s", "{status}");
    let (last, next) = (j["last_run_unix"].as_f64(), j["next_run_unix"].as_f64());
    assert!(next > last && last.is_some(), "{status}");
    assert!(
        metrics.contains("mc_job_runs_total{service=\"gc\",result=\"ok\"}")
            && metrics.contains("mc_job_last_run_timestamp_seconds{service=\"gc\"}"),
        "{metrics}"
    );
    assert!(text.contains("gc: every 2s; "), "{text}");
    assert!(text.contains("runs: "), "{text}");
    let log_text = out.stderr;
    let pos = |s: &str| {
        log_text
            .find(s)
            .unwrap_or_else(|| panic!("{s}: {log_text}"))
    };
    assert!(pos("web: stopping for the run of gc") < pos("gc: run started"));
    assert!(pos("gc: run started") < pos("web: starting again after the run of gc"));
}

#[test]
fn a_run_due_while_the_previous_one_runs_is_skipped_and_counted() {
    let d = TempDir::new("sched-overlap");
    let log = d.join("events");
    let run = launch(
        &d,
        r#"services:
  slow:
    cmd: ["sh", "-c", "echo start >> @D@/events; sleep 2.2; echo end >> @D@/events"]
    schedule: {every: 1s}
"#,
        LONG,
    );
    let skipped = |s: &serde_json::Value| job(s, "slow")["runs"]["skipped"].as_u64().unwrap_or(0);
    status_when(&run, LONG, |status| {
        skipped(status) >= 2 && job(status, "slow")["runs"]["ok"].as_u64() >= Some(1)
    });
    let metrics = ctl(&run, &["metrics"]).stdout;
    let out = run.stop();
    out.assert_code(0);
    // Never two at once: every start is followed by its end first.
    let events = file_lines(&log);
    for pair in events.windows(2) {
        assert_ne!(pair, ["start", "start"], "{events:?}");
    }
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix("mc_job_runs_total{service=\"slow\",result=\"skipped\"} ")
            .and_then(|n| n.parse::<u64>().ok())
            >= Some(2)),
        "{metrics}"
    );
    out.assert_stderr("slow: run due now skipped");
}

#[test]
fn a_run_past_its_timeout_is_stopped() {
    let d = TempDir::new("sched-timeout");
    let log = d.join("events");
    let run = launch(
        &d,
        r#"services:
  stuck:
    cmd: ["sh", "-c", "trap 'echo term >> @D@/events; exit 143' TERM; echo start >> @D@/events; while :; do sleep 0.05; done"]
    schedule: {cron: "@reboot", timeout: 300ms}
"#,
        LONG,
    );
    let status = status_when(&run, LONG, |status| {
        job(status, "stuck")["runs"]["timeout"] == 1
    });
    let out = run.stop();
    assert_eq!(file_lines(&log), ["start", "term"], "{}", out.all());
    assert_eq!(job(&status, "stuck")["last_result"], "timeout");
    assert_eq!(job(&status, "stuck")["next_run"], serde_json::Value::Null);
    out.assert_stderr("stuck: run timed out after 300ms");
}

/// A run started by `ctl start` says `run started` once (the ctl line is
/// that one); a run cut short by the launcher's own stop is said as such,
/// at info: not a failed run with a next run that will never come.
#[test]
fn a_run_stopped_with_the_launcher_is_not_a_failure() {
    let d = TempDir::new("sched-stop");
    let log = d.join("events");
    let run = launch(
        &d,
        r#"services:
  long:
    cmd: ["sh", "-c", "echo start >> @D@/events; exec sleep 100"]
    schedule: {cron: "@yearly"}
"#,
        LONG,
    );
    assert!(
        wait_until(LONG, || ctl(&run, &["start", "long"]).code == Some(0)),
        "ctl start long"
    );
    assert!(
        wait_until(LONG, || file_lines(&log) == ["start"]),
        "the run never started"
    );
    let out = run.stop();
    out.assert_code(0);
    let said = out.stderr_lines_with("long: run");
    assert!(
        said.iter()
            .any(|l| l.contains("long: run stopped (killed by TERM) after ")
                && l.ends_with(": the launcher is stopping")),
        "{}",
        out.all()
    );
    out.assert_no_stderr("long: run failed");
    out.assert_stderr_count("long: run started", 1);
    assert!(!said.iter().any(|l| l.contains("next run at")), "{said:?}");
}

/// The job's cron names the next wall-clock minute in a zone 5:30 east
/// of UTC (a POSIX TZ string: no zoneinfo needed): it runs then.
#[test]
fn a_cron_job_runs_at_its_minute_in_its_time_zone() {
    let d = TempDir::new("sched-cron");
    let log = d.join("ran");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // The next whole minute at least 3 s away (the launcher must be up).
    let mut target = now - now.rem_euclid(60) + 60;
    if target - now < 3 {
        target += 60;
    }
    let local = target + 5 * 3600 + 30 * 60;
    let (hour, minute) = (local.rem_euclid(86_400) / 3600, local.rem_euclid(3600) / 60);
    let run = launch(
        &d,
        &format!(
            r#"services:
  tick:
    cmd: ["sh", "-c", "date +%s >> {log}"]
    schedule: "{minute} {hour} * * *"
    env: {{TZ: "<+0530>-5:30"}}
"#,
            log = log.display()
        ),
        Duration::from_secs(150),
    );
    let status = status_when(&run, Duration::from_secs(10), |status| {
        job(status, "tick")["next_run_unix"].as_f64().is_some()
    });
    assert_eq!(
        job(&status, "tick")["next_run_unix"].as_f64(),
        Some(target as f64)
    );
    assert!(
        wait_until(Duration::from_secs(130), || !file_lines(&log).is_empty()),
        "never ran"
    );
    let out = run.stop();
    let ran: i64 = file_lines(&log)[0].parse().expect("a time");
    assert!(
        ran >= target,
        "ran at {ran}, due at {target}\n{}",
        out.all()
    );
}

#[test]
fn check_names_a_bad_schedule_and_an_unknown_paused_service() {
    let d = TempDir::new("sched-check");
    let cfg = config(
        &d,
        r#"services:
  a:
    cmd: ["true"]
    schedule: "61 * * * *"
  b:
    cmd: ["true"]
    schedule: {every: 1m, pause: [nope]}
  c:
    cmd: ["true"]
    schedule: {cron: "@daily"}
    env: {TZ: Mars/Olympus_Mons}
  d:
    cmd: ["true"]
    after: [b]
"#,
    );
    let out = Launch::new(&["-c", &cfg, "check"])
        .root(d.path())
        .not_pid1()
        .run();
    out.assert_code(78);
    for want in [
        format!("{cfg}:4:15: a.schedule: minute: 61 is out of range 0-59"),
        "b.schedule.pause: unknown service `nope`".to_string(),
        "c.schedule.cron: TZ=Mars/Olympus_Mons: no such time zone".to_string(),
        "service d: `after` names the scheduled job `b`".to_string(),
    ] {
        assert!(out.stderr.contains(&want), "{want}\n{}", out.all());
    }
}
