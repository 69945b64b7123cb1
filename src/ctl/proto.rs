//! The control protocol (README "Control socket"): one JSON object per
//! line each way over a unix socket. What a request may say, and where the
//! socket may live. Layer 2.

use crate::config::model::Config;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Longest request line accepted; a longer one is refused and the
/// connection closed.
pub const MAX_LINE: usize = 64 * 1024;

/// A request as it travels: `{"cmd": "signal", "name": "web", "signal": "HUP"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// `health` only: `live` or `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// What `ctl health` asks (README "Health"): the default (every autostart
/// service running and ready), `--live` (up, no critical or autostart
/// service FAILED but those with `liveness: ignore`)
/// or `--ready` (the default, and not draining).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    All,
    Live,
    Ready,
}

/// What a client may ask, checked: the supervisor only ever sees these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Health(Health),
    /// The Prometheus exposition (README "Metrics").
    Metrics,
    Start(String),
    Stop(String),
    Restart(String),
    Signal(String, Signal),
    Incr(String),
    Decr(String),
    Reload,
    /// A live reconfigure now (README "Live reconfigure").
    Reconfigure,
    Quit,
}

/// The commands a request may name, and whether each takes a service name.
pub const COMMANDS: &[(&str, bool)] = &[
    ("status", false),
    ("health", false),
    ("metrics", false),
    ("start", true),
    ("stop", true),
    ("restart", true),
    ("signal", true),
    ("incr", true),
    ("decr", true),
    ("reload", false),
    ("reconfigure", false),
    ("quit", false),
];

impl Command {
    /// Check a request: a known command, with the arguments it needs.
    pub fn from_request(req: Request) -> Result<Command, String> {
        let needs_name = match COMMANDS.iter().find(|(c, _)| *c == req.cmd) {
            None => return Err(format!("unknown command: {}", req.cmd)),
            Some((_, n)) => *n,
        };
        let name = match (needs_name, req.name) {
            (true, None) => return Err(format!("{} needs a service name", req.cmd)),
            (_, name) => name.unwrap_or_default(),
        };
        Ok(match req.cmd.as_str() {
            "status" => Command::Status,
            "health" => Command::Health(match req.check.as_deref() {
                None => Health::All,
                Some("live") => Health::Live,
                Some("ready") => Health::Ready,
                Some(other) => {
                    return Err(format!("unknown health check: {other} (live or ready)"))
                }
            }),
            "metrics" => Command::Metrics,
            "start" => Command::Start(name),
            "stop" => Command::Stop(name),
            "restart" => Command::Restart(name),
            "signal" => {
                let text = req.signal.ok_or("signal needs a signal name")?;
                let sig = crate::signals::parse_signal(&text)
                    .ok_or_else(|| format!("unknown signal: {text}"))?;
                Command::Signal(name, sig)
            }
            "incr" => Command::Incr(name),
            "decr" => Command::Decr(name),
            "reload" => Command::Reload,
            "reconfigure" => Command::Reconfigure,
            _ => Command::Quit,
        })
    }

    /// The request that asks for this command.
    pub fn to_request(&self) -> Request {
        let named = |cmd: &str, name: &str| Request {
            cmd: cmd.into(),
            name: Some(name.into()),
            signal: None,
            check: None,
        };
        let plain = |cmd: &str| Request {
            cmd: cmd.into(),
            ..Request::default()
        };
        match self {
            Command::Status => plain("status"),
            Command::Health(h) => Request {
                check: match h {
                    Health::All => None,
                    Health::Live => Some("live".into()),
                    Health::Ready => Some("ready".into()),
                },
                ..plain("health")
            },
            Command::Metrics => plain("metrics"),
            Command::Start(n) => named("start", n),
            Command::Stop(n) => named("stop", n),
            Command::Restart(n) => named("restart", n),
            Command::Signal(n, s) => Request {
                signal: Some(crate::signals::short_name(*s).into()),
                ..named("signal", n)
            },
            Command::Incr(n) => named("incr", n),
            Command::Decr(n) => named("decr", n),
            Command::Reload => plain("reload"),
            Command::Reconfigure => plain("reconfigure"),
            Command::Quit => plain("quit"),
        }
    }
}

/// Parse and check one request line.
pub fn parse_request(line: &[u8]) -> Result<Command, String> {
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    Command::from_request(req)
}

/// The state of a service, as `ctl status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Pending,
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Ended,
    Failed,
    /// A scheduled job waiting for its next run.
    Scheduled,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Pending => "pending",
            StateName::Starting => "starting",
            StateName::Running => "running",
            StateName::Backoff => "backoff",
            StateName::Stopping => "stopping",
            StateName::Stopped => "stopped",
            StateName::Ended => "ended",
            StateName::Failed => "failed",
            StateName::Scheduled => "scheduled",
        }
    }
}

/// One row of `ctl status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub state: StateName,
    pub pids: Vec<i32>,
    pub uptime_s: Option<f64>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub numprocesses: u32,
    /// Why it FAILED.
    pub reason: Option<String>,
    /// Why the launcher last restarted it (`liveness`).
    #[serde(default)]
    pub restart_reason: Option<String>,
    /// Its last end was an OOM kill.
    #[serde(default)]
    pub oom: bool,
    #[serde(default)]
    pub oom_kills: u32,
    /// Running but not ready (a readiness probe failing).
    #[serde(default)]
    pub ready: bool,
    /// `STATUS=` from sd_notify.
    #[serde(default)]
    pub status: Option<String>,
    /// A scheduled job's runs (README "Scheduled jobs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobState>,
}

/// How a scheduled job's runs ended, by result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobRuns {
    pub ok: u64,
    pub failed: u64,
    pub timeout: u64,
    pub skipped: u64,
}

/// What `ctl status` says of a scheduled job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobState {
    /// `30 3 * * * (Europe/Paris)`, `every 10s`, `@reboot`.
    pub schedule: String,
    /// A run is in progress (pausing its services, or running).
    pub running: bool,
    /// When the last run started (RFC 3339, UTC), and in seconds since the epoch.
    pub last_run: Option<String>,
    pub last_run_unix: Option<f64>,
    /// `ok`, `failed` or `timeout`.
    pub last_result: Option<String>,
    /// How its process ended (`exit 0`, `exit 3`, `killed by SIGTERM`).
    pub last_exit: Option<String>,
    pub next_run: Option<String>,
    pub next_run_unix: Option<f64>,
    /// The services the run in progress stopped.
    #[serde(default)]
    pub paused: Vec<String>,
    pub runs: JobRuns,
}

/// The last live reconfigure, as `ctl status` shows it until the next one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReconfigureState {
    /// `ok`, `failed` or `invalid`.
    pub last: String,
    /// What was wrong (`file:line:col: ...` for an invalid input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The answer to a request, one JSON line.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numprocesses: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    /// `status`: the last live reconfigure, if any ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconfigure: Option<ReconfigureState>,
    /// `metrics`: the exposition text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: Some(message.into()),
            ..Reply::default()
        }
    }

    pub fn error(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(message.into()),
            ..Reply::default()
        }
    }

    /// One line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the reply"}"#.into());
        line.push('\n');
        line
    }
}

/// Where the socket may live, in order: the configured path, then
/// `$XDG_RUNTIME_DIR`, then the state dir (when `/run` is read-only or not
/// ours).
pub fn candidate_paths(cfg: &Config) -> Vec<PathBuf> {
    let mut out = vec![cfg.control.socket.clone()];
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(xdg).join("mc-launcher.sock"));
    }
    out.push(cfg.paths.state.join("mc-launcher.sock"));
    // Where a launcher whose state dir fell back put it (a client reads the
    // configured state dir, not the fallback the launcher picked).
    for d in crate::fsutil::state_fallbacks() {
        out.push(d.join("mc-launcher.sock"));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parsing() {
        let web = || "web".to_string();
        let rows: &[(&str, Result<Command, &str>)] = &[
            (r#"{"cmd":"status"}"#, Ok(Command::Status)),
            (r#"{"cmd":"stop","name":"web"}"#, Ok(Command::Stop(web()))),
            (
                r#"{"cmd":"signal","name":"web","signal":"HUP"}"#,
                Ok(Command::Signal(web(), Signal::SIGHUP)),
            ),
            (r#"{"cmd":"stop"}"#, Err("needs a service name")),
            (r#"{"cmd":"signal","name":"web"}"#, Err("needs a signal")),
            (
                r#"{"cmd":"signal","name":"web","signal":"NOPE"}"#,
                Err("unknown signal: NOPE"),
            ),
            (r#"{"cmd":"explode"}"#, Err("unknown command")),
            (r#"{"cmd":"status","extra":1}"#, Err("unknown field")),
            (r#"{"cmd":"#, Err("bad request")),
            ("[1,2]", Err("bad request")),
            ("", Err("bad request")),
        ];
        for (line, want) in rows {
            match (parse_request(line.as_bytes()), want) {
                (Ok(c), Ok(w)) => assert_eq!(&c, w, "{line}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{line}: {e}"),
                (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn commands_round_trip_through_the_wire() {
        let all = [
            Command::Status,
            Command::Health(Health::All),
            Command::Health(Health::Live),
            Command::Health(Health::Ready),
            Command::Metrics,
            Command::Start("a".into()),
            Command::Stop("a".into()),
            Command::Restart("a".into()),
            Command::Signal("a".into(), Signal::SIGUSR1),
            Command::Incr("a".into()),
            Command::Decr("a".into()),
            Command::Reload,
            Command::Reconfigure,
            Command::Quit,
        ];
        for c in all {
            let line = serde_json::to_string(&c.to_request()).expect("encode");
            assert_eq!(parse_request(line.as_bytes()), Ok(c.clone()), "{line}");
        }
        let r = Reply::error("no such service: x");
        assert_eq!(
            r.to_line(),
            "{\"ok\":false,\"error\":\"no such service: x\"}\n"
        );
    }
}
