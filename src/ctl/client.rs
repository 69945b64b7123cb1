//! `mc-launcher ctl`: the client of the control socket. Layer 4.

use super::proto::{candidate_paths, Reply, Request, COMMANDS};
use crate::config::model::Config;
use crate::error::{CTL_FAILED, CTL_NO_LAUNCHER, CTL_OK};
use serde_json::Value;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Send one request to the first launcher that answers; `Err` = none did,
/// saying every path tried, in order, and why each failed.
pub fn call(paths: &[PathBuf], req: &Value) -> Result<Value, String> {
    let mut tried: Vec<String> = Vec::new();
    for p in paths {
        match UnixStream::connect(p) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut line = req.to_string();
                line.push('\n');
                s.write_all(line.as_bytes())
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                let mut reader = io::BufReader::new(s);
                let mut answer = String::new();
                io::BufRead::read_line(&mut reader, &mut answer)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                return serde_json::from_str(&answer)
                    .map_err(|e| format!("{}: bad answer: {e}", p.display()));
            }
            Err(e) => tried.push(format!("{}: {}", p.display(), io_text(&e))),
        }
    }
    if tried.is_empty() {
        return Err("no control socket path".into());
    }
    Err(format!("tried {}", tried.join("; ")))
}

/// An I/O error as the C library words it, without `(os error N)`.
fn io_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// `mc-launcher ctl [--json] COMMAND [NAME] [SIGNAL]`.
pub fn client(cfg: &Config, args: &[String]) -> i32 {
    let json_out = args.iter().any(|a| a == "--json");
    let check = if args.iter().any(|a| a == "--live") {
        Some("live".to_string())
    } else if args.iter().any(|a| a == "--ready") {
        Some("ready".to_string())
    } else {
        None
    };
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !matches!(*a, "--json" | "--live" | "--ready"))
        .collect();
    let Some((&cmd, rest)) = words.split_first() else {
        eprintln!("mc-launcher ctl: a command is needed: {}", command_list());
        return crate::error::EXIT_USAGE;
    };
    let Some(&(_, needs_name)) = COMMANDS.iter().find(|(c, _)| *c == cmd) else {
        eprintln!("mc-launcher ctl: unknown command {cmd}: {}", command_list());
        return crate::error::EXIT_USAGE;
    };
    let want = if cmd == "signal" {
        2
    } else {
        usize::from(needs_name)
    };
    if rest.len() != want {
        eprintln!("mc-launcher ctl: {cmd} takes {want} argument(s)");
        return crate::error::EXIT_USAGE;
    }
    if check.is_some() && cmd != "health" {
        eprintln!("mc-launcher ctl: --live and --ready go with health");
        return crate::error::EXIT_USAGE;
    }
    let request = Request {
        cmd: cmd.to_string(),
        name: rest.first().map(|s| s.to_string()),
        signal: rest.get(1).map(|s| s.to_string()),
        check,
    };
    let req = serde_json::to_value(&request).unwrap_or_default();
    let answer = match call(&candidate_paths(cfg), &req) {
        Ok(a) => a,
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
        print!("{}", human(cmd, &reply));
    }
    if ok {
        CTL_OK
    } else {
        CTL_FAILED
    }
}

fn command_list() -> String {
    COMMANDS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
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
