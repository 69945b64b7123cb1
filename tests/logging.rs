//! The launcher's output (README "Logging and metrics"): JSON records
//! that any JSON parser reads, lines longer than `log.max_line` split into
//! records that join back byte for byte, per-service rate limits, and a
//! loop that stays responsive under a flood of output or a stalled reader.

mod common;
use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn records(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON record ({e}): {l:?}"))
        })
        .collect()
}

fn is_rfc3339_utc_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn json_records_parse_and_carry_their_fields() {
    let d = TempDir::new("log-json");
    let script = d.join("say.sh");
    write(
        &script,
        "printf 'plain\\n\"quoted\" back\\\\slash\\ttab\\001ctl\\n\\377bad\\n'\nprintf 'to stderr\\n' >&2\n",
    );
    let yml = format!(
            "log: {{format: json}}\nservices:\n  web:\n    cmd: [\"sh\", \"{}\"]\n    stdout: prefix\n    stderr: prefix\n    respawn: false\n",
            script.display()
        );
    let out = launch_in(&d, &yml, &[]).run();
    out.assert_code(0);
    let stdout = records(&out.stdout);
    let stderr = records(&out.stderr);
    for r in stdout.iter().chain(&stderr) {
        assert!(r["ts"].as_str().is_some_and(is_rfc3339_utc_millis), "{r}");
        assert!(r["msg"].is_string(), "{r}");
    }
    let msgs: Vec<&str> = stdout.iter().filter_map(|r| r["msg"].as_str()).collect();
    assert_eq!(
        msgs,
        [
            "plain",
            "\"quoted\" back\\slash\ttab\u{1}ctl",
            "\u{fffd}bad"
        ],
        "{}",
        out.stdout
    );
    assert!(stdout
        .iter()
        .all(|r| r["service"] == "web" && r["stream"] == "stdout" && r.get("level").is_none()));
    assert!(stderr
        .iter()
        .any(|r| r["service"] == "web" && r["stream"] == "stderr" && r["msg"] == "to stderr"));
    let own: Vec<_> = stderr
        .iter()
        .filter(|r| r["stream"] == "launcher")
        .collect();
    assert!(!own.is_empty(), "{}", out.stderr);
    for r in &own {
        assert_eq!(r["service"], "mc-launcher", "{r}");
        assert!(
            ["error", "warn", "info", "debug", "trace"]
                .contains(&r["level"].as_str().unwrap_or("")),
            "{r}"
        );
    }
    assert!(
        own.iter().any(|r| r["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("summary: web"))),
        "{}",
        out.stderr
    );
}

/// A line with every kind of character that escaping or UTF-8 cuts could
/// get wrong, `len` bytes long.
fn nasty_line(len: usize) -> String {
    let alphabet = [
        "a", "b", "\"", "\\", "\t", "é", "€", "😀", "\u{1}", "x", "y", "z", "/", " ",
    ];
    let mut s = String::with_capacity(len + 4);
    let mut i = 0usize;
    while s.len() < len {
        s.push_str(alphabet[(i * 7 + i / 13) % alphabet.len()]);
        i += 1;
    }
    s
}

/// Join the records of `name`'s stdout back into lines: JSON through
/// `partial_id`/`partial_last`, text through the `name+ | ` mark.
fn joined(stdout: &str, json: bool, name: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if json {
        let mut open: HashMap<u64, String> = HashMap::new();
        for r in records(stdout) {
            if r["service"] != name {
                continue;
            }
            let msg = r["msg"].as_str().expect("msg");
            match r["partial_id"].as_u64() {
                None => lines.push(msg.to_string()),
                Some(id) => {
                    open.entry(id).or_default().push_str(msg);
                    if r["partial_last"] == true {
                        lines.push(open.remove(&id).expect("open line"));
                    } else {
                        assert_eq!(r["partial_last"], false, "{r}");
                    }
                }
            }
        }
        assert!(open.is_empty(), "a split line never ended");
    } else {
        let (first, cont) = (format!("{name} | "), format!("{name}+ | "));
        for l in stdout.lines() {
            if let Some(rest) = l.strip_prefix(&cont) {
                lines.last_mut().expect("a first piece").push_str(rest);
            } else if let Some(rest) = l.strip_prefix(&first) {
                lines.push(rest.to_string());
            }
        }
    }
    lines
}

#[test]
fn long_lines_split_within_max_line_and_join_back_exactly() {
    for json in [false, true] {
        let d = TempDir::new(if json {
            "log-long-json"
        } else {
            "log-long-text"
        });
        let short = "short line";
        let l40 = nasty_line(40 * 1024);
        let l1m = nasty_line(1 << 20);
        let data = d.join("lines.txt");
        write(&data, &format!("{short}\n{l40}\n{l1m}\n{short}\n"));
        let cfg = config(
            &d,
            &format!(
                "log: {{format: {}}}\nservices:\n  web:\n    cmd: [\"cat\", \"{}\"]\n    stdout: prefix\n    respawn: false\n",
                if json { "json" } else { "text" },
                data.display()
            ),
        );
        let out = Launch::new(&["-c", &cfg]).root(d.path()).run();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let longest = out
            .stdout
            .split_inclusive('\n')
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest <= 16384, "json {json}: a record of {longest} bytes");
        let records = out.stdout.lines().count();
        let lines = joined(&out.stdout, json, "web");
        assert_eq!(lines.len(), 4, "json {json}");
        assert_eq!(lines[0], short);
        assert!(lines[1] == l40, "json {json}: the 40 KiB line differs");
        assert!(lines[2] == l1m, "json {json}: the 1 MiB line differs");
        assert_eq!(lines[3], short);
        eprintln!("json {json}: {records} records, the longest {longest} bytes");
    }
}

#[test]
fn the_launchers_own_long_lines_are_split_too() {
    let d = TempDir::new("log-own-long");
    let long = "n".repeat(3000);
    // A command that does not exist: the launcher's error names it whole.
    let out = launch_in(&d, "log: {format: text, max_line: 1K}\nservices:\n  web:\n    cmd: [\"true\"]\n    respawn: false\n", &["--", &long]).run();
    assert!(
        out.stderr.split_inclusive('\n').all(|l| l.len() <= 1024),
        "{}",
        out.stderr
    );
    out.assert_stderr("\nmc-launcher+: ");
}

#[test]
fn rate_limit_drops_and_says_how_many() {
    let d = TempDir::new("log-rate");
    let out = launch_in(&d, "log:\n  rate_limit: {lines: 100, per: 1s}\nservices:\n  chatty:\n    cmd: [\"seq\", \"1\", \"10000\"]\n    stdout: prefix\n    respawn: false\n  calm:\n    cmd: [\"seq\", \"1\", \"50\"]\n    stdout: prefix\n    respawn: false\n  free:\n    cmd: [\"seq\", \"1\", \"3000\"]\n    stdout: prefix\n    respawn: false\n    log_rate_limit: null\n", &[]).run();
    out.assert_code(0);
    let shown = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("chatty | "))
        .count();
    let calm = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("calm | "))
        .count();
    let dropped: usize = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("mc-launcher: warning: chatty: "))
        .map(|l| {
            let (n, rest) = l.split_once(' ').expect("count");
            assert_eq!(rest, "lines dropped (rate limit 100/1s)", "{l}");
            n.parse::<usize>().expect("a number")
        })
        .sum();
    assert_eq!(calm, 50, "another service's budget is its own");
    let free = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("free | "))
        .count();
    assert_eq!(free, 3000, "log_rate_limit: null lifts the limit");
    assert!(
        (100..=300).contains(&shown),
        "{shown} shown\n{}",
        out.stderr
    );
    assert_eq!(shown + dropped, 10000, "{}", out.stderr);
}

/// The launcher over `cfg`, with its stdout and stderr sent to `to` (a
/// shell redirection, e.g. `>/dev/null 2>&1`) by a wrapper script, once its
/// control socket answers.
fn spawn_with_output(d: &TempDir, cfg: &str, to: &str, limit: Duration) -> Running {
    let p = d.join("launch.sh");
    write(&p, &format!("#!/bin/sh\nexec \"$MC_BIN\" \"$@\" {to}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = Launch::new(&["-c", cfg])
        .program(&p)
        .env("MC_BIN", &bin().to_string_lossy())
        .root(d.path())
        .timeout(limit)
        .spawn();
    assert!(wait_until(Duration::from_secs(10), || ctl(
        &run,
        &["status"]
    )
    .code
        == Some(0)));
    run
}

/// `{"cmd":"status"}` straight on the control socket: the loop's own
/// answer time, without a `ctl` process to start.
fn status_rtt(run: &Running) -> Duration {
    use std::io::{BufRead, Write};
    let t = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(run)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"{\"cmd\":\"status\"}\n").expect("send");
    let mut line = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut line)
        .expect("an answer within 5 s");
    assert!(line.starts_with("{\"ok\":true"), "{line}");
    t.elapsed()
}

fn restarts_of(run: &Running, name: &str) -> u64 {
    let out = ctl(run, &["metrics"]);
    let key = format!("mc_service_restarts_total{{service=\"{name}\"}} ");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}", out.all()))
}

#[test]
fn a_flood_of_output_never_stalls_the_loop() {
    for format in ["text", "json"] {
        let d = TempDir::new(&format!("log-flood-{format}"));
        let mut body = flooders(&format!(
            "log: {{format: {format}}}\nshutdown: {{timeout: 5s}}\n"
        ));
        // Reaping goes on: a service that ends at once, restarted again and again.
        body.push_str("  crash:\n    cmd: [\"true\"]\n    max_retry: -1\n    min_uptime: 0s\n    backoff: {initial: 10ms, max: 10ms}\n");
        let cfg = config(&d, &body);
        let run = spawn_with_output(&d, &cfg, ">/dev/null 2>&1", Duration::from_secs(90));
        // Let the flood fill every pipe and the writer's queue first.
        std::thread::sleep(Duration::from_secs(1));
        let before = restarts_of(&run, "crash");
        let mut times: Vec<Duration> = (0..200)
            .map(|_| {
                let t = status_rtt(&run);
                std::thread::sleep(Duration::from_millis(10));
                t
            })
            .collect();
        let after = restarts_of(&run, "crash");
        assert!(
            after > before + 10,
            "reaping and restarts go on under the flood: {before} then {after}"
        );
        times.sort();
        let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
        eprintln!(
            "{format}: ctl status under a flood of 4 services x 2 streams: p50 {:?}, p99 {:?}, max {:?}; crash restarted {} times meanwhile",
            pct(50),
            pct(99),
            times[times.len() - 1],
            after - before
        );
        let t = Instant::now();
        let out = run.stop();
        let took = t.elapsed();
        out.assert_code(0);
        eprintln!("{format}: stopped {took:?} after SIGTERM");
        assert!(
            took < Duration::from_secs(5),
            "the stop took {took:?}, over shutdown.timeout"
        );
    }
}

/// The read end of a FIFO, opened without waiting for a writer.
fn fifo(d: &TempDir) -> (std::path::PathBuf, std::fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = d.join("stderr.fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&path)
        .expect("open fifo");
    (path, f)
}

fn stalled_launch(d: &TempDir) -> (Running, std::fs::File) {
    let (path, reader) = fifo(d);
    let cfg = config(
        d,
        "shutdown: {timeout: 3s}\nservices:\n  chatty:\n    cmd: [\"sh\", \"-c\", \"exec yes chatty-stderr-line >&2\"]\n    stderr: prefix\n  quiet:\n    cmd: [\"sleep\", \"1000\"]\n",
    );
    let run = spawn_with_output(
        d,
        &cfg,
        &format!("2>{}", path.display()),
        Duration::from_secs(60),
    );
    // The FIFO (64 KiB) is full at once; the writer's queue soon after.
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..20 {
        assert!(status_rtt(&run) < Duration::from_secs(5));
    }
    (run, reader)
}

#[test]
fn a_stalled_reader_of_our_stderr_blocks_nothing_and_hears_what_was_lost() {
    // Nobody reads: a stop still ends within shutdown.timeout (plus the
    // final flush the launcher grants its output before giving up on it).
    let d = TempDir::new("log-stall-stop");
    let (run, _reader) = stalled_launch(&d);
    let t = Instant::now();
    let out = run.stop();
    let took = t.elapsed();
    out.assert_code(0);
    eprintln!("stalled stderr: stopped {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(3 + 2 + 1), "{took:?}");

    // The reader resumes: the loss is reported once writing works again.
    let d = TempDir::new("log-stall-resume");
    let (run, reader) = stalled_launch(&d);
    assert_eq!(ctl(&run, &["stop", "chatty"]).code, Some(0));
    let flags = nix::fcntl::OFlag::empty();
    nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETFL(flags)).expect("blocking");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if line.contains("output could not keep up") && tx.send(line).is_err() {
                break;
            }
        }
    });
    let note = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a report of the lines dropped");
    let dropped: u64 = note
        .split("keep up: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!(dropped > 1000, "{note}");
    eprintln!("after the reader resumed: {note}");
    run.stop().assert_code(0);
}

/// A reader of our output that is slow but keeps reading loses nothing:
/// past 4 MiB queued the launcher stops reading the service's pipe (the
/// service waits, as on a slow terminal) instead of filling its 16 MiB
/// queue and dropping. 22 MiB of lines through a reader taking ~16 MB/s.
#[test]
fn a_slow_reader_of_our_output_gets_every_line_in_order() {
    let d = TempDir::new("log-slow-reader");
    let (path, reader) = fifo(&d);
    let lines = 250_000u32;
    let cfg = config(
        &d,
        &format!(
            "services:\n  flow:\n    cmd: [\"awk\", \"BEGIN {{ for (i = 1; i <= {lines}; i++) printf \\\"%d %080d\\\\n\\\", i, 0 }}\"]\n    stdout: prefix\n    respawn: false\n  quiet:\n    cmd: [\"sleep\", \"1000\"]\n"
        ),
    );
    let flags = nix::fcntl::OFlag::empty();
    nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETFL(flags)).expect("blocking");
    let (tx, rx) = std::sync::mpsc::channel::<(u32, bool)>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut reader = reader;
        let mut buf = vec![0u8; 16 * 1024];
        let mut carry = Vec::new();
        let (mut next, mut ordered, mut lost) = (1u32, true, false);
        let mut opened = false;
        loop {
            let n = match reader.read(&mut buf) {
                // No writer yet (the launcher opens the FIFO as it starts).
                Ok(0) if !opened => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            opened = true;
            carry.extend_from_slice(&buf[..n]);
            while let Some(i) = carry.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&carry[..i]).into_owned();
                carry.drain(..=i);
                lost |= line.contains("could not keep up");
                if let Some(rest) = line.strip_prefix("flow | ") {
                    let num: u32 = rest
                        .split(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    ordered &= num == next;
                    next = num + 1;
                    if num == lines {
                        let _ = tx.send((num, ordered && !lost));
                    }
                }
            }
            // A slow consumer: ~16 MB/s.
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let run = spawn_with_output(
        &d,
        &cfg,
        &format!(">{}", path.display()),
        Duration::from_secs(120),
    );
    // While the service waits on its pipe, the loop still answers.
    assert!(status_rtt(&run) < Duration::from_secs(5));
    let (last, clean) = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("the last line never came");
    assert_eq!(last, lines);
    assert!(clean, "lines lost, reordered, or dropped by the launcher");
    run.stop().assert_code(0);
}

/// The writer thread starts with the services when their output is
/// captured; a quiet launcher of `inherit` services has none to end (or to
/// keep resident) at all.
#[test]
fn the_writer_thread_exists_only_for_output_to_write() {
    for (captured, want) in [(false, 1), (true, 2)] {
        let d = TempDir::new("log-threads");
        let stdout = if captured { "prefix" } else { "inherit" };
        let cfg = config(
            &d,
            &format!(
                "services:\n  talker:\n    cmd: [\"sh\", \"-c\", \"echo hello; exec sleep 60\"]\n    stdout: {stdout}\n"
            ),
        );
        let run = Launch::new(&["-c", &cfg])
            .root(d.path())
            .env("MC_LOG", "warn")
            .spawn();
        let pid = run.launcher_pid();
        assert!(wait_until(Duration::from_secs(10), || {
            let st = ctl(&run, &["--json", "status"]);
            serde_json::from_str::<serde_json::Value>(&st.stdout)
                .is_ok_and(|v| !status_pids(&v, "talker").is_empty())
        }));
        assert_eq!(threads(pid), want, "captured output: {captured}");
        let out = run.stop();
        out.assert_code(0);
        let framed = out.stdout.contains("talker | hello");
        assert_eq!(framed, captured, "{}", out.all());
        out.assert_stdout("hello");
    }
}
