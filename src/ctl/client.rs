//! `mc-launcher ctl`: the client of the control socket. Layer 4.

use super::proto::{candidate_paths, Command, Refusal, Reply};
use crate::config::model::Config;
use crate::error::{CTL_FAILED, CTL_NO_LAUNCHER, CTL_OK};
use serde_json::Value;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long `ctl` waits for a launcher by default (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// `ctl reconfigure` by default: its answer comes after the steps.
pub const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Send one request to the first launcher that answers, within `timeout`
/// in all; `Err` = none did, saying every path tried, in order, and why
/// each failed (or which launcher did not answer in time).
pub fn call(paths: &[PathBuf], req: &Value, timeout: Duration) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let mut tried: Vec<String> = Vec::new();
    for p in paths {
        match connect(p, deadline) {
            Ok(mut s) => {
                let late = |e: io::Error| {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        format!(
                            "the launcher at {} did not answer within {}",
                            p.display(),
                            humantime::format_duration(timeout)
                        )
                    } else {
                        format!("{}: {}", p.display(), io_text(&e))
                    }
                };
                let left = || {
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1))
                };
                let _ = s.set_write_timeout(Some(left()));
                let mut line = req.to_string();
                line.push('\n');
                s.write_all(line.as_bytes()).map_err(late)?;
                let _ = s.set_read_timeout(Some(left()));
                let mut reader = io::BufReader::new(s);
                let mut answer = String::new();
                io::BufRead::read_line(&mut reader, &mut answer).map_err(late)?;
                return serde_json::from_str(&answer)
                    .map_err(|e| format!("{}: bad answer: {e}", p.display()));
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(format!(
                    "the launcher at {} did not accept within {}",
                    p.display(),
                    humantime::format_duration(timeout)
                ));
            }
            Err(e) => tried.push(format!("{}: {}", p.display(), io_text(&e))),
        }
    }
    if tried.is_empty() {
        return Err("no control socket path".into());
    }
    Err(format!("tried {}", tried.join("; ")))
}

/// Connect without blocking past `deadline`: a launcher whose backlog is
/// full (it stopped accepting) makes a non-blocking connect say `EAGAIN`.
fn connect(path: &std::path::Path, deadline: Instant) -> io::Result<UnixStream> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(io::Error::from(io::ErrorKind::TimedOut));
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// `--timeout DURATION` / `--timeout=DURATION` out of the ctl words.
fn take_timeout(args: &[String]) -> Result<(Option<Duration>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut timeout = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if a == "--timeout" {
            Some(
                it.next()
                    .ok_or("--timeout needs a duration (e.g. 5s)")?
                    .clone(),
            )
        } else {
            a.strip_prefix("--timeout=").map(str::to_string)
        };
        match value {
            Some(v) => {
                let d = humantime::parse_duration(v.trim())
                    .ok()
                    .or_else(|| {
                        v.trim()
                            .parse::<f64>()
                            .ok()
                            .and_then(crate::units::duration_from_secs)
                    })
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        format!("--timeout: `{v}` is not a duration (e.g. 500ms, 5s)")
                    })?;
                timeout = Some(d);
            }
            None => out.push(a.clone()),
        }
    }
    Ok((timeout, out))
}

/// An I/O error as the C library words it, without `(os error N)`.
fn io_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// `mc-launcher ctl [--json] [--timeout D] COMMAND [NAME] [SIGNAL]`.
pub fn client(cfg: &Config, args: &[String]) -> i32 {
    // A client, not PID 1: Ctrl-C and SIGTERM end it at once.
    crate::signals::exit_on_stop_signals();
    let (timeout, args) = match take_timeout(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mc-launcher ctl: {e}");
            return crate::error::EXIT_USAGE;
        }
    };
    let json_out = args.iter().any(|a| a == "--json");
    let words: Vec<String> = args.into_iter().filter(|a| a != "--json").collect();
    let cmd = match Command::from_words(&words) {
        Ok(c) => c,
        Err(Refusal::Usage(e)) => {
            eprintln!("mc-launcher ctl: {e}");
            return crate::error::EXIT_USAGE;
        }
        Err(Refusal::Value(e)) => {
            eprintln!("mc-launcher ctl: {e}");
            return CTL_FAILED;
        }
    };
    let req = serde_json::to_value(&cmd).unwrap_or_default();
    let verb = req
        .get("cmd")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // A live reconfigure answers once its steps have run.
    let timeout = timeout.unwrap_or(if matches!(cmd, Command::Reconfigure {}) {
        RECONFIGURE_TIMEOUT
    } else {
        DEFAULT_TIMEOUT
    });
    let answer = match call(&candidate_paths(cfg), &req, timeout) {
        Ok(a) => a,
        Err(e) if e.starts_with("the launcher at") => {
            eprintln!("mc-launcher ctl: {e}");
            return CTL_NO_LAUNCHER;
        }
        Err(e) => {
            eprintln!("mc-launcher ctl: no launcher is listening ({e})");
            return CTL_NO_LAUNCHER;
        }
    };
    let reply: Reply = serde_json::from_value(answer.clone())
        .unwrap_or_else(|e| Reply::error(format!("the launcher's answer is not understood: {e}")));
    let ok = reply.ok;
    if json_out {
        println!("{answer}");
    } else if !ok {
        eprintln!(
            "mc-launcher ctl: {}",
            reply.error.as_deref().unwrap_or("failed")
        );
    } else {
        print!("{}", human(&verb, &reply));
    }
    if ok {
        CTL_OK
    } else {
        CTL_FAILED
    }
}

/// The readable form of an answer.
fn human(cmd: &str, answer: &Reply) -> String {
    let mut out = String::new();
    if let Some(text) = &answer.metrics {
        // As it is, so that `ctl metrics > file` is a scrape.
        out.push_str(text);
    }
    if let Some(services) = &answer.services {
        out.push_str(&format!(
            "{:<20} {:<10} {:<18} {:>9} {:>8}  {}\n",
            "SERVICE", "STATE", "PIDS", "UPTIME", "RESTARTS", "LAST EXIT"
        ));
        for s in services {
            let pids: Vec<String> = s.pids.iter().map(|p| p.to_string()).collect();
            let uptime = s
                .uptime_s
                .and_then(crate::units::duration_from_secs)
                .map(crate::units::fmt_duration)
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<20} {:<10} {:<18} {:>9} {:>8}  {}\n",
                s.name,
                s.state.as_str(),
                if pids.is_empty() {
                    "-".into()
                } else {
                    pids.join(",")
                },
                uptime,
                s.restarts,
                s.last_exit.as_deref().unwrap_or("-"),
            ));
        }
    }
    for s in answer.services.iter().flatten() {
        if let Some(j) = &s.job {
            out.push_str(&job_line(&s.name, j));
        }
    }
    if let Some(r) = &answer.reconfigure {
        out.push_str(&format!("reconfigure: {}", r.last));
        for part in [&r.error, &r.message].into_iter().flatten() {
            out.push_str(&format!(": {part}"));
        }
        out.push('\n');
    }
    if let Some(msg) = &answer.message {
        out.push_str(msg);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str(&format!("{cmd}: ok\n"));
    }
    out
}

/// `gc: 30 3 * * *; last run …: ok (exit 0); next run …; runs: …`.
fn job_line(name: &str, j: &super::proto::JobState) -> String {
    let mut line = format!("{name}: {}", j.schedule);
    if j.running {
        line.push_str("; running");
        if !j.paused.is_empty() {
            line.push_str(&format!(" (paused: {})", j.paused.join(", ")));
        }
    }
    match (&j.last_run, &j.last_result) {
        (Some(at), Some(result)) => {
            line.push_str(&format!("; last run {at}: {result}"));
            if let Some(e) = &j.last_exit {
                line.push_str(&format!(" ({e})"));
            }
        }
        (Some(at), None) => line.push_str(&format!("; last run {at}")),
        _ => line.push_str("; no run yet"),
    }
    match &j.next_run {
        Some(at) => line.push_str(&format!("; next run {at}")),
        None => line.push_str("; no next run"),
    }
    let r = j.runs;
    line.push_str(&format!(
        "; runs: {} ok, {} failed, {} timeout, {} skipped\n",
        r.ok, r.failed, r.timeout, r.skipped
    ));
    line
}
