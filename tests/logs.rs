//! `ctl logs` (README "Reading the output: ctl logs"): the last lines of a
//! service's captured output or of everyone's, new ones with `-f`, a
//! follower that does not read skipped rather than waited for, and
//! `inherit` said to go straight to the container's output.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The launcher over `body`, its own stdout and stderr sent to /dev/null
/// by a wrapper script (a flood must not fill a pipe the test holds), once
/// its control socket answers.
fn launch(d: &TempDir, body: &str) -> Running {
    let cfg = config_in(d, body);
    let p = d.join("launch.sh");
    write(&p, "#!/bin/sh\nexec \"$MC_BIN\" \"$@\" >/dev/null 2>&1\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = Launch::new(&["-c", &cfg])
        .program(&p)
        .env("MC_BIN", &bin().to_string_lossy())
        .root(d.path())
        .timeout(Duration::from_secs(90))
        .spawn();
    assert!(
        wait_until(Duration::from_secs(10), || ctl(&run, &["status"]).code
            == Some(0)),
        "the launcher answers"
    );
    run
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn the_last_lines_of_a_service_as_written_and_of_everyone_merged() {
    let d = TempDir::new("logs-last");
    // JSON records in the log; `ctl logs` shows the lines as written.
    let run = launch(
        &d,
        "log: {format: json}\n\
         services:\n  \
           web:\n    \
             cmd: [\"sh\", \"-c\", \"for i in $(seq 1 150); do echo line-$i; done; sleep 0.3; echo oops >&2; exec sleep 1000\"]\n    \
             stdout: prefix\n    stderr: prefix\n  \
           plain:\n    cmd: [\"sleep\", \"1000\"]\n    stdout: inherit\n    stderr: inherit\n  \
           quiet:\n    cmd: [\"sleep\", \"1000\"]\n    stdout: null\n    stderr: null\n",
    );
    assert!(
        wait_until(Duration::from_secs(10), || ctl(
            &run,
            &["logs", "web", "-n", "3"]
        )
        .stdout
            == "line-149\nline-150\noops\n"),
        "{}",
        ctl(&run, &["logs", "web", "-n", "3"]).all()
    );
    // 100 lines by default.
    let out = ctl(&run, &["logs", "web"]);
    out.assert_code(0);
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 100, "{}", out.stdout);
    assert_eq!(got.first(), Some(&"line-52"));
    assert_eq!(got.last(), Some(&"oops"));
    // Everyone: each service's lines after its prefix, the launcher's own.
    let out = ctl(&run, &["logs", "-n", "1000"]);
    out.assert_code(0);
    let all = lines(&out.stdout);
    let at = |want: &str| all.iter().position(|l| *l == want);
    let (first, last, err) = (at("web | line-1"), at("web | line-150"), at("web ! oops"));
    assert!(
        first < last && last < err && first.is_some(),
        "{}",
        out.stdout
    );
    assert!(
        all.iter().any(|l| l.starts_with("mc-launcher: ")),
        "the launcher's own lines, as text: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("{\"ts\""), "{}", out.stdout);
    // Not captured: said, not an error.
    let out = ctl(&run, &["logs", "plain"]);
    out.assert_code(0);
    out.assert_stdout("goes straight to the container's stdout");
    let out = ctl(&run, &["logs", "quiet"]);
    out.assert_stdout("discarded");
    let out = ctl(&run, &["logs", "nosuch"]);
    out.assert_code(1);
    out.assert_stderr("no such service: nosuch");
    let out = ctl(&run, &["logs", "web", "-n", "many"]);
    out.assert_code(2);
}

/// With the rings off, `ctl logs` keeps nothing and says so, and where
/// the last stderr lines still are: `ctl status NAME` shows the ones the
/// termination report keeps (apart from the rings), as they are now.
#[test]
fn a_zero_buffer_keeps_nothing_and_says_so() {
    let d = TempDir::new("logs-off");
    let run = launch(
        &d,
        "log: {buffer: 0}\nservices:\n  web:\n    cmd: [\"sh\", \"-c\", \"echo hello; echo oops >&2; exec sleep 1000\"]\n    stdout: prefix\n    stderr: prefix\n",
    );
    let status = || ctl(&run, &["status", "web"]).stdout;
    assert!(
        wait_until(Duration::from_secs(20), || status().contains("    oops\n")),
        "{}",
        status()
    );
    assert!(
        status().contains("  last 1 line(s) of stderr:\n    oops\n"),
        "{}",
        status()
    );
    let out = ctl(&run, &["logs", "web"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "no output is kept for `ctl logs` (log.buffer: 0); `ctl status web` shows its last stderr lines (the 10 the termination report keeps)\n",
        "{}",
        out.all()
    );
    assert!(!out.stdout.contains("hello"), "{}", out.all());
}

/// `ctl logs ARGS` as a process of its own, its stdout read line by line
/// on a thread.
struct Follow {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follow {
    fn start(run: &Running, args: &[&str]) -> Follow {
        let mut words = vec!["logs"];
        words.extend_from_slice(args);
        let mut c = ctl_command(run, None, &words);
        c.stdout(std::process::Stdio::piped());
        let mut child = c.spawn().expect("ctl logs -f");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line within 20 s")
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_prints_new_lines_as_they_come() {
    let d = TempDir::new("logs-follow");
    let run = launch(
        &d,
        "services:\n  web:\n    cmd: [\"sh\", \"-c\", \"i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo tick-$i; sleep 0.02; done\"]\n    stdout: prefix\n",
    );
    let f = Follow::start(&run, &["-f", "web", "-n", "1"]);
    let number = |l: &str| -> u64 {
        l.strip_prefix("tick-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a tick: {l:?}"))
    };
    let first = number(&f.next());
    // Every line once, in order, as the service writes them (a line a
    // 50th of a second: more than a reply's worth would hold).
    for i in 1..=30 {
        assert_eq!(number(&f.next()), first + i);
    }
    // A follower without a name sees the same lines, prefixed.
    let all = Follow::start(&run, &["-f", "-n", "0"]);
    let l = all.next();
    assert!(l.starts_with("web | tick-"), "{l}");
}

/// `{"cmd":"status"}` straight on the control socket: answered, within a
/// generous timeout.
fn status_answers(run: &Running) {
    let mut s = UnixStream::connect(socket_path(run)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"{\"cmd\":\"status\"}\n").expect("send");
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .expect("an answer within 10 s");
    assert!(line.starts_with("{\"ok\":true"), "{line}");
}

#[test]
fn a_follower_that_never_reads_is_skipped_and_never_slows_the_loop() {
    let d = TempDir::new("logs-slow");
    let run = launch(&d, &flooders("shutdown: {timeout: 5s}\n"));
    // Following everyone, and never reading.
    let mut stuck = UnixStream::connect(socket_path(&run)).expect("connect");
    stuck
        .write_all(b"{\"cmd\":\"logs\",\"follow\":true,\"lines\":100}\n")
        .expect("send");
    // The loop answers all along (the times are printed, not bounded).
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let t = std::time::Instant::now();
            status_answers(&run);
            let took = t.elapsed();
            std::thread::sleep(Duration::from_millis(10));
            took
        })
        .collect();
    times.sort();
    eprintln!(
        "ctl status beside a follower that never reads, 4 services flooding: p50 {:?}, p99 {:?}",
        times[50], times[98]
    );
    // A `ctl logs` that does not follow ends, with the lines asked for.
    let out = ctl(&run, &["logs", "flood2", "-n", "5"]);
    out.assert_code(0);
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 5, "{}", out.stdout);
    assert!(
        got.iter().all(|l| l.starts_with("flood2-std")),
        "{}",
        out.stdout
    );
    // Reading at last: past what waited in the socket, one line says how
    // many lines it missed.
    stuck
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reader = BufReader::new(stuck.try_clone().expect("clone"));
    let mut seen = 0usize;
    let skipped = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("follower lines");
        assert!(n > 0, "the follower was cut off");
        seen += n;
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON reply");
        assert_eq!(v["ok"], true, "{line}");
        // The first reply only says that lines follow.
        let Some(log) = v["log"].as_str() else {
            continue;
        };
        if let Some(m) = log.lines().find(|l| l.ends_with(" lines skipped")) {
            break m.to_string();
        }
        assert!(seen < 64 << 20, "no skip marker in {seen} bytes");
    };
    let n: u64 = skipped
        .strip_prefix("… ")
        .and_then(|t| t.strip_suffix(" lines skipped"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{skipped:?}"));
    assert!(n > 0, "{skipped}");
    status_answers(&run);
    drop(reader);
    let mut rest = Vec::new();
    let _ = stuck.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = stuck.read(&mut rest);
    let out = run.stop();
    out.assert_code(0);
}

/// A service the launcher runs but no `services:` lists (the main
/// command; the launcher's sshd alike) is one `ctl logs` knows: the
/// main command's output is not captured, and that is what it says.
#[test]
fn the_main_command_is_a_service_logs_knows() {
    let d = TempDir::new("logs-main");
    let cfg = config_in(
        &d,
        "services:\n  web:\n    cmd: [\"sleep\", \"1000\"]\n    stdout: prefix\n",
    );
    let run = Launch::new(&["-c", &cfg, "--", "sleep", "1000"])
        .root(d.path())
        .spawn();
    assert!(
        wait_until(Duration::from_secs(10), || ctl(&run, &["status"])
            .stdout
            .contains("\nmain ")),
        "{}",
        ctl(&run, &["status"]).all()
    );
    let out = ctl(&run, &["logs", "main"]);
    out.assert_code(0);
    out.assert_stdout("main: its output goes straight to the container's stdout");
    let out = ctl(&run, &["logs", "nosuch"]);
    out.assert_code(1);
    run.stop();
}
