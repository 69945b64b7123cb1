//! `ctl metrics` and `GET /metrics` (README "Metrics"): Prometheus text
//! format 0.0.4, read by prometheus_client's own parser (from the tools
//! venv that scripts/setup-test-env.sh makes), counters that only grow
//! while a service crash-loops, and an HTTP endpoint that no slow or
//! silent client can use to stall the event loop.

mod common;
use common::*;
use std::io::{Read, Write};
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
    out.assert_code(0);
    out.stdout
}

#[test]
fn ctl_metrics_is_valid_exposition_and_counters_only_grow() {
    let d = TempDir::new("metrics-ctl");
    let run = launch_in(
        &d,
        "services:\n  web:\n    cmd: [\"sleep\", \"1000\"]\n    ready: {file: /nonexistent, timeout: 60s, interval: 100ms}\n  crash:\n    cmd: [\"sh\", \"-c\", \"exit 3\"]\n    max_retry: -1\n    min_uptime: 0s\n    backoff: {initial: 50ms, max: 50ms}\n",
        &[],
    )
    .spawn();
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
    run.stop().assert_code(0);
}

fn get(addr: &str, path: &str) -> (u16, String, String) {
    http_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n"),
    )
}

#[test]
fn http_endpoint_serves_the_same_exposition() {
    let d = TempDir::new("metrics-http");
    let addr = free_addr();
    let yml = format!(
        "metrics: {{listen: \"{addr}\"}}\nservices:\n  web:\n    cmd: [\"sleep\", \"1000\"]\n    live: {{cmd: [\"false\"], period: 1h, initial_delay: 1h}}\n"
    );
    let run = launch_in(&d, &yml, &[]).spawn();
    wait_answers(&run);
    let (code, head, body) = get(&addr, "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    strict_shape(&body);
    let samples = parse(&body);
    assert!(
        samples
            .iter()
            .any(|s| s
                == "mc_probe_failures counter mc_probe_failures_total{probe=live,service=web} 0"),
        "{samples:#?}"
    );
    // The same families as `ctl metrics`, in the same order.
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names(&body), names(&metrics(&run)));
    let (code, _, _) = get(&addr, "/metrics?name=x");
    assert_eq!(code, 200);
    let (code, _, _) = get(&addr, "/");
    assert_eq!(code, 404);
    let (code, head, _) = http_exchange(
        &addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    let (code, _, _) = http_exchange(
        &addr,
        &format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)),
    );
    assert_eq!(code, 431);
    run.stop().assert_code(0);
}

/// A TCP connection whose receive buffer is as small as the kernel allows:
/// an answer it never reads stays in our send buffer.
fn tiny_window(addr: &str) -> std::net::TcpStream {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &1024).expect("SO_RCVBUF");
    let sa: SockaddrIn = addr.parse::<std::net::SocketAddrV4>().expect("v4").into();
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &sa).expect("connect");
    std::net::TcpStream::from(fd)
}

#[test]
fn silent_and_never_reading_scrapers_do_not_stall_the_loop() {
    let d = TempDir::new("metrics-hogs");
    let addr = free_addr();
    // Many services with long names: an exposition of some 190 KiB, more
    // than a socket takes at once from a client with a tiny window.
    let body = services_yml(&format!("metrics: {{listen: \"{addr}\"}}\n"), 200, |i| {
        format!(
            "  s{i:03}-{}:\n    cmd: [\"sleep\", \"1000\"]\n",
            "n".repeat(200)
        )
    });
    let cfg = config(&d, &body);
    let run = Launch::new(&["-c", &cfg])
        .root(d.path())
        .timeout(Duration::from_secs(60))
        .spawn();
    wait_answers(&run);
    let size = get(&addr, "/metrics").2.len();
    assert!(size > 150_000, "{size} bytes");
    // Silent clients: connected, never a byte.
    let silent: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    // Clients that ask and never read the answer.
    let mut greedy = Vec::new();
    for _ in 0..5 {
        let mut s = tiny_window(&addr);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        greedy.push(s);
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = ctl(&run, &["status"]);
        times.push(t.elapsed());
        out.assert_code(0);
        let (code, _, b) = get(&addr, "/metrics");
        assert_eq!((code, b.len()), (200, size));
    }
    times.sort();
    eprintln!(
        "ctl status (200 services) with 10 silent and 5 never-reading scrapers: median {:?}, worst {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    // Past the deadline the launcher has let the hogs go.
    std::thread::sleep(Duration::from_secs(6));
    for mut s in greedy {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut sink = Vec::new();
        // The end of the connection comes (a reset, or the end of what
        // the kernel had taken), not a time-out: nothing of it is held.
        let got = s.read_to_end(&mut sink);
        assert!(
            !matches!(&got, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "a never-reading client is still held after the deadline: {got:?}"
        );
    }
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut sink = Vec::new();
        assert!(
            matches!(s.read_to_end(&mut sink), Ok(0)),
            "closed, nothing sent"
        );
    }
    run.stop().assert_code(0);
}

#[test]
fn scrape_latency_with_50_services() {
    let d = TempDir::new("metrics-50");
    let addr = free_addr();
    let body = services_yml(&format!("metrics: {{listen: \"{addr}\"}}\n"), 50, |i| {
        format!("  s{i}:\n    cmd: [\"sleep\", \"1000\"]\n    ready: {{file: /\"}}\n")
    });
    let run = launch_in(&d, &body, &[]).spawn();
    wait_answers(&run);
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let (code, _, b) = get(&addr, "/metrics");
        times.push(t.elapsed());
        assert_eq!(code, 200);
        assert!(b.contains("mc_service_up{service=\"s49\"}"));
    }
    times.sort();
    eprintln!(
        "GET /metrics, 50 services: p50 {:?}, p99 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    run.stop().assert_code(0);
}
