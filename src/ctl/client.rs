//! `mc-launcher ctl`: the client of the control socket. Layer 4.

use super::proto::{candidate_paths, Command, Refusal, Reply};
use crate::config::model::Config;
use crate::error::Outcome;
use serde_json::Value;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
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

/// Where `ctl` looks: the launcher's own candidates (as this user would
/// bind them), then where a launcher run as another uid is: the control
/// socket PID 1 listens on (readable by root only: `docker exec` as root
/// into a `--user 1000` container), then each uid's fallback state dir
/// under `$TMPDIR` that is its owner's alone. The socket itself still
/// refuses any peer but its owner and root.
pub fn client_paths(cfg: &Config) -> Vec<PathBuf> {
    let mut out = candidate_paths(cfg);
    out.extend(pid1_sockets(Path::new("/proc/1")));
    out.extend(other_uids_fallbacks(&std::env::temp_dir()));
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// The paths of the listening stream sockets named `mc-launcher.sock` that
/// the process at `proc_dir` holds (`/proc/PID/fd` against the socket
/// table of its network namespace). Nothing when its fds are not ours to
/// read.
fn pid1_sockets(proc_dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
        return Vec::new();
    };
    let inodes: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            let inode = l.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(proc_dir.join("net/unix")).unwrap_or_default();
    listening_paths(&table)
        .into_iter()
        .filter(|(inode, path)| inodes.contains(inode) && path.ends_with("/mc-launcher.sock"))
        .map(|(_, path)| PathBuf::from(path))
        .collect()
}

/// `(inode, path)` of each listening stream socket with a path in a
/// `/proc/net/unix` table.
fn listening_paths(table: &str) -> Vec<(String, String)> {
    const ACCEPTING: u32 = 0x0001_0000;
    const STREAM: u32 = 1;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            let kind = u32::from_str_radix(cols.get(4)?, 16).ok()?;
            let inode = cols.get(6)?;
            let path = cols.get(7..).map(|p| p.join(" "))?;
            (flags & ACCEPTING != 0 && kind == STREAM && path.starts_with('/'))
                .then(|| (inode.to_string(), path))
        })
        .collect()
}

/// `DIR/mc-launcher-UID/mc-launcher.sock` of every uid whose directory is
/// a real one owned by that uid and writable by nobody else (as the
/// launcher makes it), with a socket owned by the same uid.
fn other_uids_fallbacks(tmp: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let uid: u32 = name.strip_prefix("mc-launcher-")?.parse().ok()?;
            let dir = std::fs::symlink_metadata(e.path()).ok()?;
            let sock_path = e.path().join("mc-launcher.sock");
            let sock = std::fs::symlink_metadata(&sock_path).ok()?;
            let ok = dir.file_type().is_dir()
                && dir.uid() == uid
                && dir.mode() & 0o022 == 0
                && sock.file_type().is_socket()
                && sock.uid() == uid;
            ok.then_some(sock_path)
        })
        .collect();
    out.sort();
    out
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
                    .ok_or_else(|| {
                        format!("--timeout: `{v}` is not a duration (e.g. 500ms, 5s)")
                    })?;
                if d.is_zero() {
                    return Err(format!(
                        "--timeout: `{v}` is no time at all: give more than 0 (e.g. 500ms, 5s)"
                    ));
                }
                timeout = Some(d);
            }
            None => out.push(a.clone()),
        }
    }
    Ok((timeout, out))
}

/// `ctl logs`: the request to the first launcher that takes it, then its
/// replies as they come, each one's `log` text printed as it is, until the
/// launcher ends the answer (with `-f`: until it stops, or Ctrl-C). The
/// first reply comes within `timeout`; a follower then waits as long as it
/// takes. A closed stdout (`| head`) ends it quietly.
fn stream_logs(
    paths: &[PathBuf],
    req: &Value,
    timeout: Duration,
    follow: bool,
    json: bool,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut tried: Vec<String> = Vec::new();
    let mut found = None;
    for p in paths {
        match connect(p, deadline) {
            Ok(s) => {
                found = Some((p, s));
                break;
            }
            Err(e) => tried.push(format!("{}: {}", p.display(), io_text(&e))),
        }
    }
    let Some((path, mut s)) = found else {
        eprintln!(
            "mc-launcher ctl: no launcher is listening (tried {})",
            tried.join("; ")
        );
        return Outcome::NoLauncher;
    };
    let late = || {
        eprintln!(
            "mc-launcher ctl: the launcher at {} did not answer within {}",
            path.display(),
            humantime::format_duration(timeout)
        );
        Outcome::NoLauncher
    };
    let mut line = req.to_string();
    line.push('\n');
    let _ = s.set_write_timeout(Some(timeout));
    let _ = s.set_read_timeout(Some(timeout));
    if s.write_all(line.as_bytes()).is_err() {
        return late();
    }
    let mut reader = io::BufReader::new(s);
    let stdout = io::stdout();
    let mut first = true;
    loop {
        let mut answer = String::new();
        match io::BufRead::read_line(&mut reader, &mut answer) {
            Ok(0) => return Outcome::Done,
            Ok(_) => {}
            Err(_) if first => return late(),
            Err(e) => {
                eprintln!("mc-launcher ctl: {}: {}", path.display(), io_text(&e));
                return Outcome::Refused;
            }
        }
        if first && follow {
            // Lines come when the services write them.
            let _ = reader.get_ref().set_read_timeout(None);
        }
        first = false;
        let reply: Reply = match serde_json::from_str(&answer) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("mc-launcher ctl: {}: bad answer: {e}", path.display());
                return Outcome::Refused;
            }
        };
        let mut out = stdout.lock();
        let written = if json {
            out.write_all(answer.as_bytes())
        } else {
            let text = reply.log.as_deref().or(reply.message.as_deref());
            match text {
                Some(t) if reply.log.is_some() => out.write_all(t.as_bytes()),
                Some(t) => writeln!(out, "{t}"),
                None => Ok(()),
            }
        };
        if written.and_then(|()| out.flush()).is_err() {
            return Outcome::Done;
        }
        if !reply.ok {
            if !json {
                eprintln!(
                    "mc-launcher ctl: {}",
                    reply.error.as_deref().unwrap_or("logs failed")
                );
            }
            return Outcome::Refused;
        }
    }
}

/// An I/O error as the C library words it, without `(os error N)`.
fn io_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// `mc-launcher ctl [--json] [--timeout D] COMMAND [NAME] [SIGNAL]`.
pub fn client(cfg: &Config, args: &[String]) -> Outcome {
    // A client, not PID 1: Ctrl-C and SIGTERM end it at once.
    crate::signals::exit_on_stop_signals();
    let (timeout, args) = match take_timeout(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mc-launcher ctl: {e}");
            return Outcome::Usage;
        }
    };
    let json_out = args.iter().any(|a| a == "--json");
    let words: Vec<String> = args.into_iter().filter(|a| a != "--json").collect();
    let cmd = match Command::from_words(&words) {
        Ok(c) => c,
        Err(Refusal::Usage(e)) => {
            eprintln!("mc-launcher ctl: {e}");
            return Outcome::Usage;
        }
        Err(Refusal::Value(e)) => {
            eprintln!("mc-launcher ctl: {e}");
            return Outcome::Refused;
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
    if let Command::Logs { follow, .. } = cmd {
        // Several replies, as the lines come.
        return stream_logs(&client_paths(cfg), &req, timeout, follow, json_out);
    }
    let answer = match call(&client_paths(cfg), &req, timeout) {
        Ok(a) => a,
        Err(e) if e.starts_with("the launcher at") => {
            eprintln!("mc-launcher ctl: {e}");
            return Outcome::NoLauncher;
        }
        Err(e) => {
            eprintln!("mc-launcher ctl: no launcher is listening ({e})");
            return Outcome::NoLauncher;
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
        Outcome::Done
    } else {
        Outcome::Refused
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
                match (s.last_exit.as_deref(), s.oom) {
                    (Some(e), true) => format!("{e} (oom)"),
                    (Some(e), false) => e.to_string(),
                    (None, _) => "-".into(),
                },
            ));
        }
    }
    for s in answer.services.iter().flatten() {
        if let Some(line) = why_line(s) {
            out.push_str(&line);
        }
        if let Some(j) = &s.job {
            out.push_str(&job_line(&s.name, j));
        }
        if let Some(d) = &s.detail {
            out.push_str(&detail_text(d));
        }
    }
    if let Some(p) = &answer.pillar {
        out.push_str(&format!(
            "pillar: {}: the last valid override is in use (from {}): {}\n",
            p.in_use, p.copy, p.error
        ));
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

/// What `ctl status` knows of why a service is as it is, on one line:
/// `web: FAILED: …; restarted: liveness; status: …; restarting in 2s`.
fn why_line(s: &super::proto::ServiceState) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = &s.reason {
        if s.state == super::proto::StateName::Failed {
            parts.push(format!("FAILED: {r}"));
        } else {
            parts.push(r.clone());
        }
    }
    // A FAILED service is not restarted any more: its reason says why
    // (`restarted: crash` after it read as if it came back).
    if let Some(r) = s
        .restart_reason
        .as_ref()
        .filter(|_| s.state != super::proto::StateName::Failed)
    {
        parts.push(format!("restarted: {r}"));
    }
    if s.oom_kills > 0 {
        parts.push(format!("OOM kills: {}", s.oom_kills));
    }
    if let Some(t) = &s.status {
        parts.push(format!("status: {t}"));
    }
    if let Some(d) = s.next_restart_s.and_then(crate::units::duration_from_secs) {
        parts.push(format!("restarting in {}", crate::units::fmt_duration(d)));
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "{}: {}
",
        s.name,
        parts.join("; ")
    ))
}

/// `ctl status NAME`: the service in full, one fact a line.
fn detail_text(d: &super::proto::ServiceDetail) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: &str| out.push_str(&format!("  {key:<12} {value}\n"));
    line("command:", &d.command.join(" "));
    if let Some(u) = &d.user {
        line("user:", u);
    }
    if let Some(w) = &d.working_dir {
        line("working dir:", w);
    }
    for p in &d.probes {
        let state = match p.ok {
            Some(true) => "passing".to_string(),
            Some(false) => "not passing".to_string(),
            None => String::new(),
        };
        let failures = match p.failures {
            0 => String::new(),
            n => format!("{n} failed in a row"),
        };
        let said: Vec<&str> = [state.as_str(), failures.as_str()]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect();
        let text = if said.is_empty() {
            p.check.clone()
        } else {
            format!("{} ({})", p.check, said.join(", "))
        };
        line(&format!("{}:", p.kind), &text);
    }
    for f in &d.env_files {
        line("env file:", f);
    }
    for f in &d.secrets {
        line("secret:", f);
    }
    for f in &d.credentials {
        line("credential:", f);
    }
    if !d.stderr_tail.is_empty() {
        out.push_str(&format!(
            "  last {} line(s) of stderr:\n",
            d.stderr_tail.len()
        ));
        for l in &d.stderr_tail {
            out.push_str(&format!("    {l}\n"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_why_line_of_a_row() {
        use super::super::proto::{ServiceState, StateName};
        let row = |f: &dyn Fn(&mut ServiceState)| {
            let mut s = ServiceState {
                name: "web".into(),
                state: StateName::Running,
                pids: vec![7],
                uptime_s: Some(1.0),
                restarts: 0,
                last_exit: None,
                numprocesses: 1,
                reason: None,
                restart_reason: None,
                oom: false,
                oom_kills: 0,
                ready: true,
                status: None,
                job: None,
                next_restart_s: None,
                detail: None,
            };
            f(&mut s);
            why_line(&s)
        };
        type Change<'a> = &'a dyn Fn(&mut ServiceState);
        let rows: &[(Change, Option<&str>)] = &[
            (&|_| {}, None),
            (
                &|s| {
                    s.state = StateName::Failed;
                    s.reason = Some("3 consecutive failed starts".into());
                },
                Some("web: FAILED: 3 consecutive failed starts\n"),
            ),
            (
                &|s| {
                    s.state = StateName::Failed;
                    s.reason = Some("3 consecutive failed starts".into());
                    s.restart_reason = Some("crash".into());
                },
                Some("web: FAILED: 3 consecutive failed starts\n"),
            ),
            (
                &|s| {
                    s.state = StateName::Backoff;
                    s.reason = Some("not started: no such file".into());
                    s.next_restart_s = Some(2.0);
                },
                Some("web: not started: no such file; restarting in 2.0s\n"),
            ),
            (
                &|s| {
                    s.restart_reason = Some("crash".into());
                    s.oom = true;
                    s.oom_kills = 2;
                    s.status = Some("serving".into());
                },
                Some("web: restarted: crash; OOM kills: 2; status: serving\n"),
            ),
        ];
        for (change, want) in rows {
            assert_eq!(row(*change).as_deref(), *want);
        }
    }

    #[test]
    fn a_timeout_of_zero_is_told_as_such() {
        let words = |v: &str| vec!["--timeout".to_string(), v.to_string(), "health".to_string()];
        let (t, rest) = take_timeout(&words("1.5")).expect("1.5");
        assert_eq!(
            (t, rest),
            (
                Some(Duration::from_millis(1500)),
                vec!["health".to_string()]
            )
        );
        for zero in ["0", "0s"] {
            assert_eq!(
                take_timeout(&words(zero)).expect_err(zero),
                format!("--timeout: `{zero}` is no time at all: give more than 0 (e.g. 500ms, 5s)")
            );
        }
        assert_eq!(
            take_timeout(&words("soon")).expect_err("soon"),
            "--timeout: `soon` is not a duration (e.g. 500ms, 5s)"
        );
    }

    #[test]
    fn listening_sockets_of_a_socket_table() {
        let table = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 111 /run/mc-launcher.sock
0000000000000000: 00000002 00000000 00000000 0001 03 112 /run/mc-launcher.sock
0000000000000000: 00000002 00000000 00010000 0002 01 113 /run/notify.sock
0000000000000000: 00000002 00000000 00010000 0001 01 114 @abstract
0000000000000000: 00000002 00000000 00010000 0001 01 115 /tmp/a dir/mc-launcher.sock
0000000000000000: 00000002 00000000 00010000 0001 01 116
garbage
";
        assert_eq!(
            listening_paths(table),
            vec![
                ("111".to_string(), "/run/mc-launcher.sock".to_string()),
                ("115".to_string(), "/tmp/a dir/mc-launcher.sock".to_string()),
            ]
        );
    }

    #[test]
    fn a_fallback_dir_counts_only_when_its_uid_owns_it_alone() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = crate::fsutil::scratch::Tmp::new("ctl-fallbacks");
        let tmp = scratch.path();
        let me = nix::unistd::Uid::effective().as_raw();
        let mine = tmp.join(format!("mc-launcher-{me}"));
        let other = tmp.join(format!("mc-launcher-{}", me.wrapping_add(1)));
        let open = tmp.join("mc-launcher-open");
        for d in [&mine, &other, &open] {
            std::fs::create_dir_all(d).expect("mkdir");
            let _l =
                std::os::unix::net::UnixListener::bind(d.join("mc-launcher.sock")).expect("bind");
        }
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let found = other_uids_fallbacks(tmp);
        // `other` is named for a uid that does not own it; `open` for none.
        assert_eq!(found, vec![mine.join("mc-launcher.sock")]);
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(other_uids_fallbacks(tmp).is_empty(), "writable by others");
    }
}
