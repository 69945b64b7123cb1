//! `ctl metrics` and `GET /metrics` (README "Metrics"): Prometheus text
//! format 0.0.4, read by prometheus_client's own parser (from the tools
//! venv that scripts/setup-test-env.sh makes), counters that only grow
//! while a service crash-loops, and an HTTP endpoint that no slow or
//! silent client can use to stall the event loop.

mod common;
use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tools_python() -> PathBuf {
    let venv = std::env::var_os("MC_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/mc-launcher-test/tools-venv".into());
    let py = venv.join("bin/python3");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup-test-env.sh",
        py.display()
    );
    py
}

/// Parse `text` with prometheus_client; one line per sample, as
/// `family type name{sorted labels} value`, or the parser's complaint.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{fam.name} {fam.type} {s.name}{{{labels}}} {s.value}")
"#;

fn parse(text: &str) -> Vec<String> {
    let mut c = Command::new(tools_python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = c.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What prometheus_client's parser lets through and the format does not:
/// every sample belongs to the family its TYPE line announced just
/// before, once; counters end in `_total`; every line ends with a newline.
fn strict_shape(text: &str) {
    assert!(text.ends_with('\n'), "{text}");
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(!typed.iter().any(|(n, _)| n == name), "{name} typed twice");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            typed.push((name.to_string(), kind.to_string()));
            current = Some(name.to_string());
        } else if line.starts_with("# HELP ") {
            continue;
        } else {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert_eq!(
                Some(&name),
                current.as_ref(),
                "sample out of its family: {line}"
            );
        }
    }
}

fn value(samples: &[String], prefix: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.starts_with(prefix))
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn config(d: &TempDir, body: &str) -> String {
    let p = d.join("mc-launcher.yml");
    write(&p, body);
    p.to_string_lossy().into_owned()
}

/// The control socket answers.
fn wait_answers(run: &Running) {
    let ok = wait_until(Duration::from_secs(10), || {
        ctl(run, &["status"]).code == Some(0)
    });
    assert!(ok, "the launcher never answered");
}

fn metrics(run: &Running) -> String {
    let out = ctl(run, &["metrics"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    out.stdout
}

#[test]
fn ctl_metrics_is_valid_exposition_and_counters_only_grow() {
    let d = TempDir::new("metrics-ctl");
    let cfg = config(
        &d,
        "services:\n  web:\n    cmd: [\"sleep\", \"1000\"]\n    ready: {file: /nonexistent, timeout: 60s, interval: 100ms}\n  crash:\n    cmd: [\"sh\", \"-c\", \"exit 3\"]\n    max_retry: -1\n    min_uptime: 0s\n    backoff: {initial: 50ms, max: 50ms}\n",
    );
    let run = Launch::new(&["-c", &cfg]).root(d.path()).spawn();
    wait_answers(&run);
    let started = Instant::now();
    let mut last_restarts = -1.0;
    let mut grew = 0;
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        let text = metrics(&run);
        strict_shape(&text);
        samples = parse(&text);
        let r = value(
            &samples,
            "mc_service_restarts counter mc_service_restarts_total{service=crash}",
        )
        .expect("restarts of crash");
        assert!(
            r >= last_restarts,
            "a counter went down: {last_restarts} then {r}"
        );
        if r > last_restarts {
            grew += 1;
        }
        last_restarts = r;
    }
    assert!(grew >= 3, "restarts grew only {grew} times: {samples:#?}");
    for want in [
        "mc_service_up gauge mc_service_up{service=web} 1",
        "mc_service_ready gauge mc_service_ready{service=web} 0",
        "mc_service_last_exit_code gauge mc_service_last_exit_code{service=crash} 3",
        "mc_service_oom_kills counter mc_service_oom_kills_total{service=web} 0",
        "mc_reconfigure counter mc_reconfigure_total{result=ok} 0",
        "mc_reconfigure counter mc_reconfigure_total{result=failed} 0",
        "mc_reconfigure counter mc_reconfigure_total{result=invalid} 0",
    ] {
        assert!(
            samples.iter().any(|s| s == want),
            "{want} missing: {samples:#?}"
        );
    }
    let failures = value(
        &samples,
        "mc_probe_failures counter mc_probe_failures_total{probe=ready,service=web}",
    )
    .expect("ready probe failures");
    assert!(failures >= 5.0, "{samples:#?}");
    let start = value(&samples, "mc_launcher_start_time_seconds gauge").expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        start <= now && now - start < 60.0,
        "start {start}, now {now}"
    );
    run.signal(15);
    assert_eq!(run.wait().code, Some(0));
}
