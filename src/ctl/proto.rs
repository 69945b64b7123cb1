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

/// What `ctl health` asks (README "Health"): the default (every autostart
/// service running and ready), `--live` (up, no critical or autostart
/// service FAILED but those with `liveness: ignore`)
/// or `--ready` (the default, and not draining). On the wire: `"check":
/// "live"|"ready"`, absent for the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    All,
    Live,
    Ready,
}

impl Health {
    fn is_all(&self) -> bool {
        *self == Health::All
    }
}

/// What a client may ask: the request itself, one JSON object per line,
/// tagged by `cmd` (`{"cmd": "signal", "name": "web", "signal": "HUP"}`).
/// Client and server share it; the supervisor only ever sees these. A verb
/// without arguments is an empty struct variant so that an unknown key is
/// refused there too (serde ignores extra keys beside a unit variant).
///
/// A new verb is a variant here; the compiler then names every place to
/// change (README "Where a new feature goes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// Every service, or one in full (`ctl status NAME`).
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Health {
        #[serde(
            default,
            skip_serializing_if = "Health::is_all",
            deserialize_with = "health_check"
        )]
        check: Health,
    },
    /// The Prometheus exposition (README "Metrics").
    Metrics {},
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
    },
    Signal {
        name: String,
        #[serde(serialize_with = "signal_out", deserialize_with = "signal_in")]
        signal: Signal,
    },
    Incr {
        name: String,
    },
    Decr {
        name: String,
    },
    /// The last `lines` of a service's captured output, or of every one's
    /// and the launcher's; with `follow`, new lines as they come (README
    /// "Reading the output: ctl logs"). Answered by several replies, each
    /// with `log`, until the launcher closes the connection.
    Logs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        follow: bool,
        #[serde(default = "default_log_lines")]
        lines: usize,
    },
    Reload {},
    /// A live reconfigure now (README "Live reconfigure").
    Reconfigure {},
    Quit {},
}

/// `ctl logs` without `-n`.
pub const DEFAULT_LOG_LINES: usize = 100;

fn default_log_lines() -> usize {
    DEFAULT_LOG_LINES
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn signal_out<S: serde::Serializer>(sig: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(crate::signals::short_name(*sig))
}

fn signal_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
    let text = String::deserialize(d)?;
    crate::signals::parse_signal(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown signal: {text}")))
}

fn health_check<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Health, D::Error> {
    let text = String::deserialize(d)?;
    match text.as_str() {
        "live" => Ok(Health::Live),
        "ready" => Ok(Health::Ready),
        other => Err(serde::de::Error::custom(format!(
            "unknown health check: {other} (live or ready)"
        ))),
    }
}

/// The positional words of `ctl VERB WORD...`, in order: which key of the
/// request each one fills.
const POSITIONAL: &[&str] = &["name", "signal"];

impl Command {
    /// The service a command is about, if any: the supervisor answers "no
    /// such service" for an unknown one before anything else.
    pub fn service(&self) -> Option<&str> {
        match self {
            Command::Start { name }
            | Command::Stop { name }
            | Command::Restart { name }
            | Command::Signal { name, .. }
            | Command::Incr { name }
            | Command::Decr { name } => Some(name),
            Command::Status { name } | Command::Logs { name, .. } => name.as_deref(),
            Command::Health { .. }
            | Command::Metrics {}
            | Command::Reload {}
            | Command::Reconfigure {}
            | Command::Quit {} => None,
        }
    }

    /// `ctl`'s words (`signal web HUP`, `health --live`) as a command: the
    /// first plain word is the verb, the next ones fill `name` then
    /// `signal`, `--live`/`--ready` fill `check`, `-f` `follow` and `-n N`
    /// `lines`; then the same decoding as a request, so the CLI accepts
    /// exactly what the wire does.
    pub fn from_words(words: &[String]) -> Result<Command, Refusal> {
        let mut req = serde_json::Map::new();
        let mut verb: Option<&str> = None;
        let mut positional = POSITIONAL.iter();
        let mut words = words.iter();
        while let Some(w) = words.next() {
            let w = w.as_str();
            let (key, value): (&str, serde_json::Value) = match w {
                "--live" | "--ready" => ("check", w.trim_start_matches('-').into()),
                "-f" | "--follow" => ("follow", true.into()),
                "-n" | "--lines" => {
                    let n = words.next().and_then(|n| n.parse::<usize>().ok());
                    match n {
                        Some(n) => ("lines", n.into()),
                        None => return Err(Refusal::Usage(format!("{w} needs a number of lines"))),
                    }
                }
                _ if w.len() > 1 && w.starts_with('-') => {
                    return Err(Refusal::Usage(format!("unknown option {w}")))
                }
                _ if verb.is_none() => ("cmd", w.into()),
                _ => match positional.next() {
                    Some(key) => (*key, w.into()),
                    None => {
                        return Err(Refusal::Usage(format!(
                            "{}: too many arguments",
                            verb.unwrap_or_default()
                        )))
                    }
                },
            };
            if key == "cmd" {
                verb = Some(w);
            }
            if req.insert(key.into(), value).is_some() {
                return Err(Refusal::Usage(format!("{w}: given twice")));
            }
        }
        let Some(verb) = verb else {
            return Err(Refusal::Usage(format!("a command is needed: {}", verbs())));
        };
        // A second word only `signal NAME SIG` takes: for any other verb it
        // is one word too many (`logs web db`), not a signal it refuses.
        let takes_name = VERBS.iter().any(|v| v.verb == verb && v.takes_name);
        if verb != "signal" && takes_name {
            if let Some(extra) = req.get("signal").and_then(|v| v.as_str()) {
                return Err(Refusal::Usage(format!(
                    "{verb}: too many arguments (`{extra}`: it takes one service name at most)"
                )));
            }
        }
        Command::deserialize(serde_json::Value::Object(req)).map_err(|e| explain(verb, &e))
    }
}

/// One ctl verb as help and completion present it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtlVerb {
    pub verb: &'static str,
    /// Its arguments' synopsis (`NAME SIG`), empty for none.
    pub args: &'static str,
    pub help: &'static str,
    /// Its first argument is a service name (completed from the launcher).
    pub takes_name: bool,
    /// Flags of its own (`health --live`), completed after the verb.
    pub flags: &'static [&'static str],
}

const fn verb(
    verb: &'static str,
    args: &'static str,
    takes_name: bool,
    help: &'static str,
) -> CtlVerb {
    CtlVerb {
        verb,
        args,
        help,
        takes_name,
        flags: &[],
    }
}

/// Every verb as help and completion present it, in the order of the
/// `Command` enum (a test holds the two equal).
pub const VERBS: &[CtlVerb] = &[
    verb(
        "status",
        "[NAME]",
        true,
        "every service: state, pids, uptime, restarts, last exit, why; NAME: one in full",
    ),
    CtlVerb {
        flags: &["--live", "--ready"],
        ..verb(
            "health",
            "[--live|--ready]",
            false,
            "0 when healthy (--live: nothing FAILED; --ready: all ready)",
        )
    },
    verb("metrics", "", false, "the Prometheus text of /metrics"),
    verb(
        "start",
        "NAME",
        true,
        "start a stopped service (or run a job now)",
    ),
    verb("stop", "NAME", true, "stop a service, it stays stopped"),
    verb("restart", "NAME", true, "stop then start a service"),
    verb(
        "signal",
        "NAME SIG",
        true,
        "send SIG (HUP, USR1, 15, ...) to a service's processes",
    ),
    verb(
        "incr",
        "NAME",
        true,
        "one more process of a service (numprocesses)",
    ),
    verb("decr", "NAME", true, "one process fewer"),
    CtlVerb {
        flags: &["-f", "-n"],
        ..verb(
            "logs",
            "[NAME] [-f] [-n N]",
            true,
            "the last N (100) lines of a service's output, or everyone's; -f: follow",
        )
    },
    verb(
        "reload",
        "",
        false,
        "re-read the config file and apply what changed (as SIGHUP)",
    ),
    verb(
        "reconfigure",
        "",
        false,
        "re-run the pillar and reconfigure steps live",
    ),
    verb(
        "quit",
        "",
        false,
        "stop every service and exit (as SIGTERM)",
    ),
];

/// Every verb, as the enum's tags: `status, health, …` (serde's own list,
/// so it cannot drift from the enum).
pub fn verbs() -> String {
    let probe = serde_json::json!({ "cmd": "" });
    match Command::deserialize(probe) {
        Err(e) => e
            .to_string()
            .split_once("expected one of ")
            .map(|(_, list)| list.replace('`', ""))
            .unwrap_or_default(),
        Ok(_) => String::new(),
    }
}

/// Why `ctl`'s words or a request line are not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a command's shape: an unknown verb or option, an argument
    /// missing or one too many (`ctl` exits 2).
    Usage(String),
    /// A value the verb does not take: an unknown signal (`ctl` exits 1,
    /// as when the launcher refuses it).
    Value(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Usage(t) | Refusal::Value(t) => f.write_str(t),
        }
    }
}

/// A decoding error of a `verb` request in the operator's words.
fn explain(verb: &str, e: &serde_json::Error) -> Refusal {
    let text = e.to_string();
    let quoted = |prefix: &str| -> Option<String> {
        let rest = text.strip_prefix(prefix)?.strip_prefix('`')?;
        rest.split_once('`').map(|(f, _)| f.to_string())
    };
    let what = |field: &str| match field {
        "name" => "a service name".to_string(),
        "signal" => "a signal name".to_string(),
        "check" => "--live or --ready".to_string(),
        other => format!("`{other}`"),
    };
    if quoted("unknown variant ").is_some() {
        return Refusal::Usage(format!("unknown command {verb} (commands: {})", verbs()));
    }
    if let Some(field) = quoted("missing field ") {
        if field == "cmd" {
            return Refusal::Usage("bad request: no \"cmd\"".into());
        }
        return Refusal::Usage(format!("{verb} needs {}", what(&field)));
    }
    if let Some(field) = quoted("unknown field ") {
        return Refusal::Usage(format!(
            "{verb} takes no {}",
            what(&field).trim_start_matches("a ")
        ));
    }
    Refusal::Value(text)
}

/// Parse and check one request line.
pub fn parse_request(line: &[u8]) -> Result<Command, String> {
    let req: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    let verb = req
        .get("cmd")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("request")
        .to_string();
    Command::deserialize(req).map_err(|e| match explain(&verb, &e) {
        Refusal::Usage(t) => t,
        Refusal::Value(t) => format!("bad request: {t}"),
    })
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
    /// Waiting to start again: in this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_s: Option<f64>,
    /// `ctl status NAME`: the service in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ServiceDetail>,
}

/// What `ctl status NAME` adds: how the service is defined and probed, and
/// what it said last. Paths of its inputs, never their values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceDetail {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub probes: Vec<ProbeState>,
    /// `env_file` paths, in order.
    #[serde(default)]
    pub env_files: Vec<String>,
    /// `secrets`: `VAR: path`.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// `credentials`: `NAME: path`.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// The last lines of its stderr (when captured).
    #[serde(default)]
    pub stderr_tail: Vec<String>,
}

/// One probe of a service, as `ctl status NAME` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProbeState {
    /// `ready` or `live`.
    pub kind: String,
    /// `tcp 127.0.0.1:8080`, `http http://…/health`, `cmd …`, `file …`,
    /// `notify`.
    pub check: String,
    /// Failed probes in a row now.
    pub failures: u32,
    /// `ready`: whether it passes now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
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

/// The pillar the services run with, when it is not what the volume
/// says: `on_invalid: last-good` started on the last valid override
/// (README "The prepare phase"). Shown until a live reconfigure installs
/// a pillar.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PillarState {
    /// `last-good`.
    pub in_use: String,
    /// The copy installed (`pillar-last-good.sls` in the state dir).
    pub copy: String,
    /// Why the override was not used (`file:line:col: ...`).
    pub error: String,
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
    /// `status`: the pillar in use, when it is the last valid override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pillar: Option<PillarState>,
    /// `metrics`: the exposition text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// `logs`: lines of captured output, as they are (several replies
    /// follow one another, README "Reading the output: ctl logs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
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

    fn name() -> String {
        "web".to_string()
    }

    #[test]
    fn request_parsing() {
        let rows: &[(&str, Result<Command, &str>)] = &[
            (r#"{"cmd":"status"}"#, Ok(Command::Status { name: None })),
            (
                r#"{"cmd":"stop","name":"web"}"#,
                Ok(Command::Stop { name: name() }),
            ),
            (
                r#"{"cmd":"signal","name":"web","signal":"HUP"}"#,
                Ok(Command::Signal {
                    name: name(),
                    signal: Signal::SIGHUP,
                }),
            ),
            (
                r#"{"cmd":"health","check":"live"}"#,
                Ok(Command::Health {
                    check: Health::Live,
                }),
            ),
            (r#"{"cmd":"stop"}"#, Err("stop needs a service name")),
            (
                r#"{"cmd":"signal","name":"web"}"#,
                Err("signal needs a signal name"),
            ),
            (
                r#"{"cmd":"signal","name":"web","signal":"NOPE"}"#,
                Err("unknown signal: NOPE"),
            ),
            (
                r#"{"cmd":"health","check":"deep"}"#,
                Err("unknown health check: deep"),
            ),
            // An unknown verb is an error naming it, never another verb.
            (r#"{"cmd":"explode"}"#, Err("unknown command explode")),
            (
                r#"{"cmd":"status","extra":1}"#,
                Err("status takes no `extra`"),
            ),
            (
                r#"{"cmd":"quit","name":"web"}"#,
                Err("quit takes no service name"),
            ),
            (r#"{"name":"web"}"#, Err("no \"cmd\"")),
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
    fn words_of_the_command_line() {
        let rows: &[(&[&str], Result<Command, &str>)] = &[
            (&["status"], Ok(Command::Status { name: None })),
            (&["stop", "web"], Ok(Command::Stop { name: name() })),
            (
                &["signal", "web", "usr1"],
                Ok(Command::Signal {
                    name: name(),
                    signal: Signal::SIGUSR1,
                }),
            ),
            (
                &["health", "--ready"],
                Ok(Command::Health {
                    check: Health::Ready,
                }),
            ),
            (
                &["--live", "health"],
                Ok(Command::Health {
                    check: Health::Live,
                }),
            ),
            (&["health"], Ok(Command::Health { check: Health::All })),
            (
                &["logs"],
                Ok(Command::Logs {
                    name: None,
                    follow: false,
                    lines: 100,
                }),
            ),
            (
                &["logs", "-f", "web", "-n", "5"],
                Ok(Command::Logs {
                    name: Some(name()),
                    follow: true,
                    lines: 5,
                }),
            ),
            (
                &["logs", "--lines", "0", "--follow"],
                Ok(Command::Logs {
                    name: None,
                    follow: true,
                    lines: 0,
                }),
            ),
            (&["logs", "-n", "many"], Err("-n needs a number of lines")),
            (&["logs", "-n"], Err("-n needs a number of lines")),
            (&["logs", "-f", "-f"], Err("-f: given twice")),
            (
                &["logs", "web", "db"],
                Err("logs: too many arguments (`db`: it takes one service name at most)"),
            ),
            (&["stop", "web", "-f"], Err("stop takes no `follow`")),
            (&[], Err("a command is needed: status, health")),
            (
                &["explode"],
                Err("unknown command explode (commands: status"),
            ),
            (&["stop"], Err("stop needs a service name")),
            (
                &["status", "web"],
                Ok(Command::Status { name: Some(name()) }),
            ),
            (
                &["status", "web", "HUP"],
                Err("status: too many arguments (`HUP`"),
            ),
            (
                &["stop", "web", "HUP"],
                Err("stop: too many arguments (`HUP`"),
            ),
            (&["quit", "web", "x"], Err("quit takes no service name")),
            (
                &["signal", "web", "HUP", "x"],
                Err("signal: too many arguments"),
            ),
            (
                &["stop", "--live", "web"],
                Err("stop takes no --live or --ready"),
            ),
            (
                &["health", "--live", "--ready"],
                Err("--ready: given twice"),
            ),
            (&["status", "--bogus"], Err("unknown option --bogus")),
            (&["signal", "web", "BOGUS"], Err("unknown signal: BOGUS")),
        ];
        for (words, want) in rows {
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            match (Command::from_words(&words), want) {
                (Ok(c), Ok(w)) => assert_eq!(&c, w, "{words:?}"),
                (Err(e), Err(part)) => {
                    let usage = !part.starts_with("unknown signal");
                    assert_eq!(matches!(e, Refusal::Usage(_)), usage, "{words:?}: {e:?}");
                    assert!(e.to_string().contains(part), "{words:?}: {e}");
                }
                (got, want) => panic!("{words:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn help_lists_every_verb_of_the_enum_in_its_order() {
        let listed: Vec<&str> = VERBS.iter().map(|v| v.verb).collect();
        assert_eq!(listed.join(", "), verbs());
        for v in VERBS {
            let alone = Command::from_words(&[v.verb.to_string()]);
            let needs_name = alone
                .as_ref()
                .is_err_and(|e| e.to_string().contains("needs a service name"));
            assert!(!needs_name || v.takes_name, "{}: {alone:?}", v.verb);
        }
    }

    #[test]
    fn verbs_are_the_enum_tags() {
        let list = verbs();
        assert!(list.starts_with("status, health, metrics, start"), "{list}");
        assert!(list.ends_with("reload, reconfigure, quit"), "{list}");
    }

    #[test]
    fn commands_round_trip_through_the_wire() {
        let all = [
            Command::Status { name: None },
            Command::Health { check: Health::All },
            Command::Health {
                check: Health::Live,
            },
            Command::Health {
                check: Health::Ready,
            },
            Command::Metrics {},
            Command::Start { name: name() },
            Command::Stop { name: name() },
            Command::Restart { name: name() },
            Command::Signal {
                name: name(),
                signal: Signal::SIGUSR1,
            },
            Command::Incr { name: name() },
            Command::Decr { name: name() },
            Command::Reload {},
            Command::Logs {
                name: None,
                follow: false,
                lines: DEFAULT_LOG_LINES,
            },
            Command::Logs {
                name: Some("a".into()),
                follow: true,
                lines: 0,
            },
            Command::Reconfigure {},
            Command::Quit {},
        ];
        for c in all {
            let line = serde_json::to_string(&c).expect("encode");
            assert_eq!(parse_request(line.as_bytes()), Ok(c.clone()), "{line}");
        }
        // The wire form of older clients and scripts.
        assert_eq!(
            serde_json::to_string(&Command::Signal {
                name: name(),
                signal: Signal::SIGHUP
            })
            .expect("encode"),
            r#"{"cmd":"signal","name":"web","signal":"HUP"}"#
        );
        assert_eq!(
            serde_json::to_string(&Command::Health { check: Health::All }).expect("encode"),
            r#"{"cmd":"health"}"#
        );
        let r = Reply::error("no such service: x");
        assert_eq!(
            r.to_line(),
            "{\"ok\":false,\"error\":\"no such service: x\"}\n"
        );
    }
}
