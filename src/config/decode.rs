//! From the spanned YAML tree to the validated model, collecting every
//! error with its position instead of stopping at the first.

use super::decoder::{key_pos, user_exists, Decoder, MAX_ID};
use super::inputs;
use super::model::*;
use crate::error::Pos;
use crate::yaml::{Node, Scalar, Value};
use nix::sys::resource::Resource;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most processes one service may run.
pub const MAX_NUMPROCESSES: i64 = 10_000;
/// The most rotated files one log stream keeps.
pub const MAX_BACKUP_COUNT: i64 = 1000;

pub const TOP: &[&str] = &[
    "project",
    "root",
    "paths",
    "pillar",
    "ssh",
    "reconfigure",
    "prepopulate",
    "circus",
    "services",
    "shutdown",
    "control",
    "log",
    "http",
    "metrics",
    "termination_log",
    "env_file",
];
pub const PATHS: &[&str] = &["salt", "project", "pillar", "volume", "state"];
pub const PILLAR: &[&str] = &["source", "target", "on_invalid"];
pub const SSH: &[&str] = &[
    "keys_dirs",
    "user",
    "home",
    "watch",
    "sshd",
    "host_keys_dir",
];
pub const RECONFIGURE: &[&str] = &["on_error", "skip_unchanged", "steps", "watch"];
pub const STEP: &[&str] = &["salt", "template", "command", "timeout", "config_dir"];
pub const TEMPLATE: &[&str] = &["src", "dest", "mode", "owner"];
pub const PREPOPULATE: &[&str] = &["src", "dest", "owner"];
pub const CIRCUS: &[&str] = &["config", "include"];
pub const SERVICE: &[&str] = &[
    "cmd",
    "shell",
    "numprocesses",
    "working_dir",
    "user",
    "uid",
    "gid",
    "env",
    "copy_env",
    "after",
    "priority",
    "ready",
    "live",
    "pre_stop",
    "respawn",
    "max_retry",
    "backoff",
    "min_uptime",
    "critical",
    "stop_signal",
    "graceful_timeout",
    "stdout",
    "stderr",
    "rlimits",
    "autostart",
    "warmup_delay",
    "max_age",
    "max_age_variance",
    "on_reconfigure",
    "reload_signal",
    "log_rate_limit",
    "env_file",
    "secrets",
    "credentials",
    "profiles",
    "liveness",
    "schedule",
    "watch",
];
pub const BACKOFF: &[&str] = &["initial", "max"];
/// `ready:`: one of the check kinds (config::model::probe), and these.
const READY_OPTIONS: &[&str] = &["timeout", "interval", "period", "failure_threshold"];
pub const READY: &[&str] =
    &concat::<{ CHECK_KINDS.len() + READY_OPTIONS.len() }>(&CHECK_KINDS, READY_OPTIONS);
/// `live:`: one of the probed kinds, and these.
const LIVE_OPTIONS: &[&str] = &["period", "timeout", "failure_threshold", "initial_delay"];
pub const LIVE: &[&str] =
    &concat::<{ PROBE_KINDS.len() + LIVE_OPTIONS.len() }>(&PROBE_KINDS, LIVE_OPTIONS);

/// `a` then `b`, when the crate is compiled (an index out of bounds, a
/// wrong `N`, fails the build).
#[allow(clippy::indexing_slicing)]
const fn concat<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    assert!(a.len() + b.len() == N, "N is the length of a and b");
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}
pub const PRE_STOP: &[&str] = &["cmd", "timeout"];
pub const STREAM: &[&str] = &[
    "file",
    "max_bytes",
    "backup_count",
    "time_format",
    "watched",
];
pub const SHUTDOWN: &[&str] = &["timeout", "drain"];
pub const CONTROL: &[&str] = &["socket"];
pub const LOG: &[&str] = &["format", "max_line", "rate_limit", "buffer"];
pub const RATE_LIMIT: &[&str] = &["lines", "per"];
pub const HTTP: &[&str] = &["listen"];
/// `metrics.listen`: the older name of `http.listen`.
pub const METRICS: &[&str] = &["listen"];

/// Every option the config accepts, by section: the source of truth that
/// README.rst's reference is checked against.
pub const REFERENCE: &[(&str, &[&str])] = &[
    ("", TOP),
    ("paths", PATHS),
    ("pillar", PILLAR),
    ("ssh", SSH),
    ("reconfigure", RECONFIGURE),
    ("reconfigure.steps[]", STEP),
    ("reconfigure.steps[].template", TEMPLATE),
    ("prepopulate[]", PREPOPULATE),
    ("circus", CIRCUS),
    ("services.NAME", SERVICE),
    ("services.NAME.backoff", BACKOFF),
    ("services.NAME.ready", READY),
    ("services.NAME.live", LIVE),
    ("services.NAME.pre_stop", PRE_STOP),
    ("services.NAME.stdout", STREAM),
    ("services.NAME.schedule", super::jobs::SCHEDULE),
    ("services.NAME.watch", super::jobs::WATCH),
    ("shutdown", SHUTDOWN),
    ("control", CONTROL),
    ("log", LOG),
    ("log.rate_limit", RATE_LIMIT),
    ("http", HTTP),
    ("metrics", METRICS),
];

/// The `paths:` section over the defaults for `root` and `project`.
pub fn paths(d: &mut Decoder, n: Option<&Node>, root: &Path, project: &str) -> Paths {
    let mut p = Paths::defaults(root, project);
    let Some(n) = n else { return p };
    for (k, v) in d.map(n, "paths", PATHS).unwrap_or_default() {
        let Some(path) = d.path(v, &format!("paths.{k}")) else {
            continue;
        };
        match k {
            "salt" => p.salt = path,
            "project" => p.project = path,
            "pillar" => p.pillar = path,
            "volume" => p.volume = path,
            "state" => p.state = path,
            other => d.unknown_key(n, "paths", other, PATHS),
        }
    }
    p
}

/// Decode the whole document over `base` (the defaults for its root,
/// project and paths).
pub fn config(d: &mut Decoder, doc: &Node, mut cfg: Config) -> Config {
    let Some(top) = d.map(doc, "config", TOP) else {
        return cfg;
    };
    let both_listen = ["http", "metrics"]
        .iter()
        .all(|s| top.iter().any(|(k, _)| k == s));
    for (k, v) in top {
        match k {
            "project" | "root" | "paths" => {} // read before rendering the defaults
            "pillar" => pillar(d, v, &mut cfg.pillar),
            "ssh" => ssh(d, v, &mut cfg.ssh),
            "reconfigure" => reconfigure(d, v, &mut cfg.reconfigure),
            "prepopulate" => cfg.prepopulate = prepopulate(d, v),
            "circus" => circus(d, v, &mut cfg.circus),
            "services" => cfg.services = services(d, v),
            "shutdown" => {
                let section = v;
                for (k, v) in d.map(section, "shutdown", SHUTDOWN).unwrap_or_default() {
                    let t = d.duration(v, &format!("shutdown.{k}"));
                    match (k, t) {
                        ("timeout", Some(t)) => cfg.shutdown.timeout = t,
                        ("drain", Some(t)) => cfg.shutdown.drain = t,
                        ("timeout" | "drain", None) => {}
                        (other, _) => d.unknown_key(section, "shutdown", other, SHUTDOWN),
                    }
                }
            }
            "termination_log" => {
                cfg.termination_log = if v.is_null() {
                    None
                } else {
                    d.path(v, "termination_log")
                };
            }
            "log" => log(d, v, &mut cfg.log),
            "env_file" => cfg.env_file = inputs::env_files(d, v, "env_file"),
            // `metrics.listen` is the older name of `http.listen`: one
            // of them, not both.
            "http" | "metrics" => {
                let section = v;
                let keys = if k == "http" { HTTP } else { METRICS };
                for (key, v) in d.map(section, k, keys).unwrap_or_default() {
                    match key {
                        "listen" => {
                            let what = format!("{k}.listen");
                            cfg.metrics.listen = listen_addr(d, v, &what);
                            if both_listen && k == "metrics" {
                                d.err(
                                    v.pos,
                                    "http.listen and metrics.listen: both given; \
                                     metrics.listen is the older name of http.listen, keep one"
                                        .to_string(),
                                );
                            }
                        }
                        other => d.unknown_key(section, k, other, keys),
                    }
                }
            }
            "control" => {
                let section = v;
                for (k, v) in d.map(section, "control", CONTROL).unwrap_or_default() {
                    match k {
                        "socket" => {
                            if let Some(p) = d.path(v, "control.socket") {
                                cfg.control.socket = p;
                            }
                        }
                        other => d.unknown_key(section, "control", other, CONTROL),
                    }
                }
            }
            other => d.unknown_key(doc, "config", other, TOP),
        }
    }
    validate_services(d, &cfg.services);
    cfg
}

fn log(d: &mut Decoder, n: &Node, l: &mut LogCfg) {
    for (k, v) in d.map(n, "log", LOG).unwrap_or_default() {
        match k {
            "format" => {
                if let Some(name) = d.string(v, "log.format") {
                    match LogFormat::from_name(&name) {
                        Some(f) => l.format = f,
                        None => d.err(
                            v.pos,
                            format!("log.format: `{name}` is not {}", log_format_names()),
                        ),
                    }
                }
            }
            "max_line" => match d.size(v, "log.max_line") {
                Some(b) if (MIN_MAX_LINE as u64..=MAX_MAX_LINE as u64).contains(&b) => {
                    l.max_line = b as usize;
                }
                Some(b) => d.err(
                    v.pos,
                    format!(
                        "log.max_line: {b} bytes is outside {}..{} (1K..1M)",
                        MIN_MAX_LINE, MAX_MAX_LINE
                    ),
                ),
                None => {}
            },
            "buffer" => match d.size(v, "log.buffer") {
                Some(b) if b <= MAX_LOG_BUFFER as u64 => l.buffer = b as usize,
                Some(b) => d.err(
                    v.pos,
                    format!("log.buffer: {b} bytes is over {MAX_LOG_BUFFER} (64M)"),
                ),
                None => {}
            },
            "rate_limit" => l.rate_limit = rate_limit(d, v, "log.rate_limit"),
            other => d.unknown_key(n, "log", other, LOG),
        }
    }
}

/// `text or json`: the names `log.format` takes.
fn log_format_names() -> String {
    let names: Vec<&str> = LogFormat::ALL.iter().map(|f| f.name()).collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// `{lines: N, per: DURATION}` (`what` names it in messages); `null` is
/// no limit.
fn rate_limit(d: &mut Decoder, n: &Node, what: &str) -> Option<RateLimit> {
    if n.is_null() {
        return None;
    }
    let entries = d.map(n, what, RATE_LIMIT)?;
    let has = |key: &str| entries.iter().any(|(k, _)| *k == key);
    if !has("lines") || !has("per") {
        d.err(n.pos, format!("{what}: needs both `lines` and `per`"));
    }
    let (mut lines, mut per) = (None, None);
    for (k, v) in entries {
        match k {
            "lines" => lines = d.int(v, &format!("{what}.lines"), 1),
            "per" => match d.duration(v, &format!("{what}.per")) {
                Some(p) if p.is_zero() => {
                    d.err(v.pos, format!("{what}.per: must be longer than 0s"))
                }
                p => per = p,
            },
            other => d.unknown_key(n, what, other, RATE_LIMIT),
        }
    }
    Some(RateLimit {
        lines: u64::try_from(lines?).ok()?,
        per: per?,
    })
}

/// `127.0.0.1:9300`, `[::1]:9300`, or `:9300` for every address.
fn listen_addr(d: &mut Decoder, n: &Node, what: &str) -> Option<std::net::SocketAddr> {
    if n.is_null() {
        return None;
    }
    let text = d.string(n, what)?;
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.clone(),
    };
    match full.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            d.err(
                n.pos,
                format!("{what}: `{text}` is not ADDRESS:PORT (e.g. 127.0.0.1:9300)"),
            );
            None
        }
    }
}

fn pillar(d: &mut Decoder, n: &Node, p: &mut PillarCfg) {
    for (k, v) in d.map(n, "pillar", PILLAR).unwrap_or_default() {
        match k {
            "source" => {
                p.source = d
                    .path(v, "pillar.source")
                    .unwrap_or_else(|| p.source.clone())
            }
            "target" => {
                p.target = d
                    .path(v, "pillar.target")
                    .unwrap_or_else(|| p.target.clone())
            }
            "on_invalid" => match v.text() {
                Some("abort") => p.on_invalid = OnInvalid::Abort,
                Some("keep-default") => p.on_invalid = OnInvalid::KeepDefault,
                Some("last-good") => p.on_invalid = OnInvalid::LastGood,
                _ => d.err(
                    v.pos,
                    "pillar.on_invalid: expected abort, keep-default or last-good",
                ),
            },
            other => d.unknown_key(n, "pillar", other, PILLAR),
        }
    }
}

fn ssh(d: &mut Decoder, n: &Node, s: &mut SshCfg) {
    for (k, v) in d.map(n, "ssh", SSH).unwrap_or_default() {
        match k {
            "keys_dirs" => {
                if let Some(dirs) = d.strings(v, "ssh.keys_dirs") {
                    s.keys_dirs = dirs.into_iter().map(PathBuf::from).collect();
                }
            }
            "user" => {
                if let Some(u) = d.string(v, "ssh.user") {
                    if user_exists(&u) {
                        s.user = u;
                    } else {
                        d.err(v.pos, format!("ssh.user: no such user `{u}`"));
                    }
                }
            }
            "home" => s.home = d.path(v, "ssh.home").or_else(|| s.home.clone()),
            "watch" => s.watch = d.bool(v, "ssh.watch").unwrap_or(s.watch),
            "sshd" => match v.scalar() {
                Some(Scalar::Str("auto")) => s.sshd = SshdMode::Auto,
                Some(Scalar::Str("never")) | Some(Scalar::Bool(false)) => s.sshd = SshdMode::Never,
                Some(Scalar::Str("always")) | Some(Scalar::Bool(true)) => s.sshd = SshdMode::Always,
                _ => d.err(v.pos, "ssh.sshd: expected auto, never or always"),
            },
            "host_keys_dir" => {
                s.host_keys_dir = d
                    .path(v, "ssh.host_keys_dir")
                    .unwrap_or_else(|| s.host_keys_dir.clone())
            }
            other => d.unknown_key(n, "ssh", other, SSH),
        }
    }
}

fn reconfigure(d: &mut Decoder, n: &Node, r: &mut ReconfigureCfg) {
    for (k, v) in d.map(n, "reconfigure", RECONFIGURE).unwrap_or_default() {
        match k {
            "on_error" => match v.text() {
                Some("abort") => r.on_error = OnError::Abort,
                Some("continue") => r.on_error = OnError::Continue,
                _ => d.err(v.pos, "reconfigure.on_error: expected abort or continue"),
            },
            "skip_unchanged" => {
                r.skip_unchanged = d.bool(v, "reconfigure.skip_unchanged").unwrap_or(true)
            }
            "watch" => r.watch = d.bool(v, "reconfigure.watch").unwrap_or(false),
            "steps" => {
                let Some(items) = v.as_seq() else {
                    if !v.is_null() {
                        d.err(
                            v.pos,
                            format!("reconfigure.steps: expected a list, found {}", v.kind()),
                        );
                    }
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    if let Some(step) = step(d, item, i + 1) {
                        r.steps.push(step);
                    }
                }
            }
            other => d.unknown_key(n, "reconfigure", other, RECONFIGURE),
        }
    }
}

fn step(d: &mut Decoder, n: &Node, index: usize) -> Option<Step> {
    let entries = d.map(n, "reconfigure step", STEP)?;
    let get = |key: &str| entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let kinds: Vec<&str> = ["salt", "template", "command"]
        .into_iter()
        .filter(|k| get(k).is_some())
        .collect();
    if kinds.len() != 1 {
        d.err(
            n.pos,
            "reconfigure step: needs exactly one of salt, template, command",
        );
        return None;
    }
    let timeout = get("timeout").and_then(|v| d.duration(v, "timeout"));
    let config_dir = get("config_dir").and_then(|v| d.path(v, "config_dir"));
    let kind_name = kinds.first().copied().unwrap_or("command");
    if config_dir.is_some() && kind_name != "salt" {
        d.err(
            n.pos,
            "reconfigure step: config_dir goes with salt steps only",
        );
    }
    let body = get(kind_name)?;
    let kind = match kind_name {
        "salt" => {
            let states = d.strings(body, "salt")?;
            if states.is_empty() {
                d.err(body.pos, "salt: name at least one state");
                return None;
            }
            StepKind::Salt { states, config_dir }
        }
        "template" => {
            let t = d.map(body, "template", TEMPLATE)?;
            let tget = |key: &str| t.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            let (Some(src), Some(dest)) = (tget("src"), tget("dest")) else {
                d.err(body.pos, "template: src and dest are required");
                return None;
            };
            StepKind::Template {
                src: d.path(src, "template.src")?,
                dest: d.path(dest, "template.dest")?,
                mode: tget("mode").and_then(|m| d.mode(m, "template.mode")),
                owner: tget("owner").and_then(|o| d.owner(o, "template.owner")),
            }
        }
        "command" => StepKind::Command {
            argv: d.argv(body, "command")?,
        },
        other => {
            d.unknown_key(n, "reconfigure step", other, STEP);
            return None;
        }
    };
    Some(Step {
        name: format!("{kind_name}-{index}"),
        kind,
        timeout,
        origin: Origin {
            file: d.file.to_path_buf(),
            pos: n.pos,
        },
    })
}

fn prepopulate(d: &mut Decoder, n: &Node) -> Vec<Prepopulate> {
    let mut out = Vec::new();
    let Some(items) = n.as_seq() else {
        if !n.is_null() {
            d.err(
                n.pos,
                format!("prepopulate: expected a list, found {}", n.kind()),
            );
        }
        return out;
    };
    for item in items {
        let Some(e) = d.map(item, "prepopulate", PREPOPULATE) else {
            continue;
        };
        let get = |key: &str| e.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let (Some(src), Some(dest)) = (get("src"), get("dest")) else {
            d.err(item.pos, "prepopulate: src and dest are required");
            continue;
        };
        let (src, dest) = (
            d.path(src, "prepopulate.src"),
            d.path(dest, "prepopulate.dest"),
        );
        let owner = get("owner").and_then(|o| d.owner(o, "prepopulate.owner"));
        if let (Some(src), Some(dest)) = (src, dest) {
            out.push(Prepopulate {
                src,
                dest,
                owner,
                origin: Origin {
                    file: d.file.to_path_buf(),
                    pos: item.pos,
                },
            });
        }
    }
    out
}

fn circus(d: &mut Decoder, n: &Node, c: &mut CircusCfg) {
    for (k, v) in d.map(n, "circus", CIRCUS).unwrap_or_default() {
        match k {
            "config" => c.config = d.path(v, "circus.config"),
            "include" => {
                if let Some(globs) = d.strings(v, "circus.include") {
                    c.include = globs;
                }
            }
            other => d.unknown_key(n, "circus", other, CIRCUS),
        }
    }
}

fn services(d: &mut Decoder, n: &Node) -> Vec<Service> {
    let mut out = Vec::new();
    for (name, v) in d.map(n, "services", &[]).unwrap_or_default() {
        // Messages about a whole service point at its name.
        let key_pos = key_pos(n, name);
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
        if !valid {
            d.err(
                key_pos,
                format!("service name `{name}`: use letters, digits, and _ . @ -"),
            );
        }
        if name == "main" {
            d.err(
                key_pos,
                "service name `main` is reserved for the command given on the command line",
            );
        }
        if let Some(s) = service(d, name, key_pos, v) {
            out.push(s);
        }
    }
    out
}

fn service(d: &mut Decoder, name: &str, key_pos: Pos, n: &Node) -> Option<Service> {
    let entries = d.map(n, &format!("service {name}"), SERVICE)?;
    let what = |k: &str| format!("{name}.{k}");
    let mut s = Service::new(name, Vec::new());
    s.origin = Origin {
        file: d.file.to_path_buf(),
        pos: key_pos,
    };
    let mut shell = false;
    let mut cmd_node: Option<&Node> = None;
    let mut schedule_node: Option<&Node> = None;
    let mut variance = Duration::ZERO;
    for (k, v) in &entries {
        let w = what(k);
        match *k {
            "cmd" => cmd_node = Some(v),
            "shell" => shell = d.bool(v, &w).unwrap_or(false),
            "numprocesses" => s.numprocesses = d.int_in(v, &w, 1, MAX_NUMPROCESSES).unwrap_or(1),
            "working_dir" => {
                s.working_dir = d.path(v, &w);
                if s.working_dir.as_ref().is_some_and(|p| !p.is_absolute()) {
                    d.err(v.pos, format!("{w}: must be an absolute path"));
                }
            }
            "user" => {
                if let Some(u) = d.string(v, &w) {
                    if !user_exists(&u) {
                        d.err(v.pos, format!("{w}: no such user `{u}`"));
                    }
                    s.user = Some(u);
                }
            }
            // Never truncated: uid 4294967296 must not become 0 (root).
            "uid" => s.uid = d.int_in(v, &w, 0, MAX_ID),
            "gid" => s.gid = d.int_in(v, &w, 0, MAX_ID),
            "env" => {
                for (ek, ev) in d.map(v, &w, &[]).unwrap_or_default() {
                    if let Some(val) = d.string(ev, &format!("{w}.{ek}")) {
                        s.env.insert(ek.to_string(), val);
                    }
                }
            }
            "copy_env" => s.copy_env = d.bool(v, &w).unwrap_or(true),
            "after" => s.after = d.strings(v, &w).unwrap_or_default(),
            "priority" => s.priority = d.int(v, &w, i64::MIN).unwrap_or(0),
            "ready" => s.ready = ready(d, v, &w),
            "live" => s.live = live(d, v, &w),
            "pre_stop" => s.pre_stop = pre_stop(d, v, &w),
            "respawn" => s.respawn = d.bool(v, &w).unwrap_or(true),
            "max_retry" => {
                // -1 is forever; anything else must fit the counter.
                s.max_retry = match d.int_in::<i64>(v, &w, -1, u32::MAX.into()) {
                    Some(-1) => None,
                    Some(i) => u32::try_from(i).ok(),
                    None => Some(5),
                }
            }
            "backoff" => {
                for (bk, bv) in d.map(v, &w, BACKOFF).unwrap_or_default() {
                    let val = d.duration(bv, &format!("{w}.{bk}"));
                    match (bk, val) {
                        ("initial", Some(t)) => s.backoff.initial = t,
                        ("max", Some(t)) => s.backoff.max = t,
                        ("initial" | "max", None) => {}
                        (other, _) => d.unknown_key(v, &w, other, BACKOFF),
                    }
                }
                if s.backoff.max < s.backoff.initial {
                    d.err(v.pos, format!("{w}: max is smaller than initial"));
                }
            }
            "min_uptime" => s.min_uptime = d.duration(v, &w).unwrap_or(s.min_uptime),
            "critical" => s.critical = d.bool(v, &w).unwrap_or(false),
            "stop_signal" => s.stop_signal = d.signal(v, &w).unwrap_or(Signal::SIGTERM),
            "graceful_timeout" => {
                s.graceful_timeout = d.duration(v, &w).unwrap_or(s.graceful_timeout)
            }
            "stdout" => s.stdout = stream(d, v, &w).unwrap_or(Stream::Inherit),
            "stderr" => s.stderr = stream(d, v, &w).unwrap_or(Stream::Inherit),
            "rlimits" => s.rlimits = rlimits(d, v, &w),
            "autostart" => s.autostart = d.bool(v, &w).unwrap_or(true),
            "warmup_delay" => s.warmup_delay = d.duration(v, &w).unwrap_or_default(),
            "max_age" => s.max_age = d.duration(v, &w).map(|a| (a, Duration::ZERO)),
            "on_reconfigure" => match v.text() {
                Some("restart") => s.on_reconfigure = OnReconfigure::Restart,
                Some("reload") => s.on_reconfigure = OnReconfigure::Reload,
                Some("none") => s.on_reconfigure = OnReconfigure::None,
                _ => d.err(v.pos, format!("{w}: expected restart, reload or none")),
            },
            "reload_signal" => s.reload_signal = d.signal(v, &w).unwrap_or(Signal::SIGHUP),
            "log_rate_limit" => s.log_rate_limit = Some(rate_limit(d, v, &w)),
            "env_file" => s.inputs.env_file = inputs::env_files(d, v, &w),
            "secrets" => s.inputs.secrets = inputs::path_map(d, v, &w, true),
            "credentials" => s.inputs.credentials = inputs::path_map(d, v, &w, false),
            "profiles" => s.profiles = inputs::profiles(d, v, &w),
            "liveness" => s.liveness_ignore = inputs::liveness(d, v, &w),
            "schedule" => schedule_node = Some(v),
            "watch" => s.watch = super::jobs::watch(d, v, &w),
            "max_age_variance" => variance = d.duration(v, &w).unwrap_or_default(),
            other => d.unknown_key(n, &format!("service {name}"), other, SERVICE),
        }
    }
    if let Some((age, _)) = s.max_age {
        s.max_age = Some((age, variance));
    }
    if let Some(n) = schedule_node {
        // After the loop: a job's cron times are in the `TZ` of its `env`.
        s.schedule = super::jobs::schedule(d, n, &s);
    }
    match cmd_node {
        None => {
            d.err(s.origin.pos, format!("service {name}: `cmd` is required"));
            None
        }
        Some(c) if shell => {
            let text = match &c.value {
                Value::Seq(_) => d.strings(c, &what("cmd"))?.join(" "),
                _ => d.string(c, &what("cmd"))?,
            };
            s.argv = vec!["/bin/sh".into(), "-c".into(), text];
            Some(s)
        }
        Some(c) => {
            s.argv = d.argv(c, &what("cmd"))?;
            Some(s)
        }
    }
}

/// What one check key of a `ready:` or `live:` mapping decoded to.
enum Decoded {
    Check(ReadyCheck),
    /// `notify: false`: no check.
    Off,
    /// An error, reported.
    Bad,
}

/// One check of a `ready:` or `live:` mapping (`kw` names it in messages).
/// A new probe kind is one more arm here (config::model::probe).
fn check(d: &mut Decoder, kind: CheckKind, v: &Node, kw: &str) -> Decoded {
    let bad = |d: &mut Decoder, msg: String| {
        d.err(v.pos, msg);
        Decoded::Bad
    };
    let check = match kind {
        CheckKind::Tcp => {
            let Some(text) = d.string(v, kw) else {
                return Decoded::Bad;
            };
            match HostPort::parse(&text, None) {
                Ok(addr) => ReadyCheck::Tcp(addr),
                Err(e) => {
                    return bad(d, format!("{kw}: expected host:port, found `{text}` ({e}); write e.g. 127.0.0.1:8080 or [::1]:8080"))
                }
            }
        }
        CheckKind::Http => {
            let Some(text) = d.string(v, kw) else {
                return Decoded::Bad;
            };
            match HttpUrl::parse(&text) {
                Ok(url) => ReadyCheck::Http(url),
                Err(e) => {
                    return bad(
                        d,
                        format!("{kw}: {e}; write e.g. http://127.0.0.1:8080/health"),
                    )
                }
            }
        }
        CheckKind::Cmd => match d.argv(v, kw) {
            Some(argv) => ReadyCheck::Cmd(argv),
            None => return Decoded::Bad,
        },
        CheckKind::File => match d.path(v, kw) {
            Some(p) => ReadyCheck::File(p),
            None => return Decoded::Bad,
        },
        CheckKind::Notify => match d.bool(v, kw) {
            Some(true) => ReadyCheck::Notify,
            Some(false) => return Decoded::Off,
            None => return Decoded::Bad,
        },
    };
    Decoded::Check(check)
}

/// The checks of a `ready:` or `live:` mapping: exactly one is required
/// (`kinds` lists the allowed ones). `None` when it is missing, doubled or
/// bad (reported).
fn one_check(
    d: &mut Decoder,
    n: &Node,
    w: &str,
    found: Vec<(CheckKind, &Node)>,
    kinds: &[&str],
) -> Option<ReadyCheck> {
    let mut checks = Vec::new();
    let mut bad = 0;
    for (kind, v) in found {
        match check(d, kind, v, &format!("{w}.{}", kind.name())) {
            Decoded::Check(c) => checks.push(c),
            Decoded::Off => {}
            Decoded::Bad => bad += 1,
        }
    }
    if checks.len() + bad != 1 {
        let list = kinds
            .iter()
            .map(|k| match CheckKind::from_name(k) {
                Some(CheckKind::Notify) => "notify: true".to_string(),
                _ => k.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        d.err(n.pos, format!("{w}: needs exactly one of {list}"));
        return None;
    }
    // (None when the one check was bad: reported.)
    checks.pop()
}

/// A `ready:` or `live:` mapping `n`, whose keys are `keys`: each option
/// goes to `option` (`k`, its value and its full name; `false`: not an
/// option), the one check among the others (`kinds`, their names) is
/// decoded. `None` when `n` is not a mapping or the check is missing,
/// doubled or bad (reported).
fn check_and_options(
    d: &mut Decoder,
    n: &Node,
    w: &str,
    (kinds, keys): (&[&str], &[&str]),
    mut option: impl FnMut(&mut Decoder, &str, &Node, &str) -> bool,
) -> Option<ReadyCheck> {
    let mut found = Vec::new();
    for (k, v) in d.map(n, w, keys)? {
        if option(d, k, v, &format!("{w}.{k}")) {
            continue;
        }
        match CheckKind::from_name(k).filter(|c| kinds.contains(&c.name())) {
            Some(kind) => found.push((kind, v)),
            None => d.unknown_key(n, w, k, keys),
        }
    }
    one_check(d, n, w, found, kinds)
}

fn threshold(d: &mut Decoder, v: &Node, kw: &str) -> Option<u32> {
    d.int(v, kw, 1)
        .map(|i| u32::try_from(i.min(1_000_000)).unwrap_or(1))
}

fn ready(d: &mut Decoder, n: &Node, w: &str) -> Option<Ready> {
    let mut r = Ready {
        check: ReadyCheck::Notify,
        timeout: Duration::from_secs(30),
        interval: Duration::from_millis(250),
        period: None,
        failure_threshold: 3,
    };
    r.check = check_and_options(d, n, w, (&CHECK_KINDS, READY), |d, k, v, kw| {
        match k {
            "timeout" => r.timeout = d.duration(v, kw).unwrap_or(r.timeout),
            "interval" => r.interval = d.duration(v, kw).unwrap_or(r.interval),
            "period" => r.period = d.duration(v, kw),
            "failure_threshold" => r.failure_threshold = threshold(d, v, kw).unwrap_or(3),
            _ => return false,
        }
        true
    })?;
    let floor = Duration::from_millis(10);
    if r.interval < floor || r.period.is_some_and(|p| p < floor) {
        // A probe every few microseconds would be a busy loop.
        d.err(
            n.pos,
            format!("{w}: interval and period must be at least 10ms"),
        );
        return None;
    }
    if r.check == ReadyCheck::Notify && r.period.is_some() {
        d.err(
            n.pos,
            format!("{w}.period: a notify service says when it is ready; period applies to probes"),
        );
        return None;
    }
    Some(r)
}

fn live(d: &mut Decoder, n: &Node, w: &str) -> Option<Live> {
    let mut l = Live {
        check: ReadyCheck::Notify,
        period: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        failure_threshold: 3,
        initial_delay: Duration::ZERO,
    };
    l.check = check_and_options(d, n, w, (&PROBE_KINDS, LIVE), |d, k, v, kw| {
        match k {
            "period" => l.period = d.duration(v, kw).unwrap_or(l.period),
            "timeout" => l.timeout = d.duration(v, kw).unwrap_or(l.timeout),
            "failure_threshold" => l.failure_threshold = threshold(d, v, kw).unwrap_or(3),
            "initial_delay" => l.initial_delay = d.duration(v, kw).unwrap_or_default(),
            _ => return false,
        }
        true
    })?;
    if l.period < Duration::from_millis(10) {
        d.err(n.pos, format!("{w}.period: must be at least 10ms"));
        return None;
    }
    Some(l)
}

/// `pre_stop: [argv]` or `{cmd: [argv], timeout: 5s}`.
fn pre_stop(d: &mut Decoder, n: &Node, w: &str) -> Option<PreStop> {
    let default = Duration::from_secs(10);
    if n.as_map().is_none() {
        return Some(PreStop {
            argv: d.argv(n, w)?,
            timeout: default,
        });
    }
    let mut argv = None;
    let mut timeout = default;
    for (k, v) in d.map(n, w, PRE_STOP)? {
        let kw = format!("{w}.{k}");
        match k {
            "cmd" => argv = d.argv(v, &kw),
            "timeout" => timeout = d.duration(v, &kw).unwrap_or(default),
            other => d.unknown_key(n, w, other, PRE_STOP),
        }
    }
    match argv {
        Some(argv) => Some(PreStop { argv, timeout }),
        None => {
            d.err(n.pos, format!("{w}: `cmd` is required"));
            None
        }
    }
}

fn stream(d: &mut Decoder, n: &Node, w: &str) -> Option<Stream> {
    if n.is_null() {
        return Some(Stream::Null);
    }
    match n.scalar() {
        Some(Scalar::Str("inherit")) => return Some(Stream::Inherit),
        Some(Scalar::Str("prefix")) => return Some(Stream::Prefix),
        Some(Scalar::Str("null")) => return Some(Stream::Null),
        Some(_) => {
            d.err(
                n.pos,
                format!("{w}: expected inherit, prefix, null or {{file: …}}"),
            );
            return None;
        }
        None => {}
    }
    let e = d.map(n, w, STREAM)?;
    let mut fs = FileStream {
        path: PathBuf::new(),
        max_bytes: 0,
        backup_count: 5,
        time_format: None,
        watched: false,
    };
    let mut has_file = false;
    for (k, v) in e {
        let kw = format!("{w}.{k}");
        match k {
            "file" => {
                has_file = true;
                fs.path = d.path(v, &kw)?;
            }
            "max_bytes" => fs.max_bytes = d.size(v, &kw).unwrap_or(0),
            "backup_count" => fs.backup_count = d.int_in(v, &kw, 0, MAX_BACKUP_COUNT).unwrap_or(5),
            "time_format" => fs.time_format = d.string(v, &kw),
            "watched" => fs.watched = d.bool(v, &kw).unwrap_or(false),
            other => d.unknown_key(n, w, other, STREAM),
        }
    }
    if !has_file {
        d.err(n.pos, format!("{w}: `file` is required"));
        return None;
    }
    Some(Stream::File(fs))
}

/// The names `rlimits:` accepts (its keys; [`rlimit_resource`] maps them).
pub const RLIMITS: &[&str] = &[
    "nofile",
    "nproc",
    "core",
    "memlock",
    "stack",
    "as",
    "fsize",
    "cpu",
    "data",
    "rss",
    "msgqueue",
    "nice",
    "rtprio",
    "sigpending",
    "locks",
];

/// `nofile`, `nproc`… (every name of [`RLIMITS`]) and their `RLIMIT_*` resource.
pub fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "core" => Resource::RLIMIT_CORE,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "stack" => Resource::RLIMIT_STACK,
        "as" => Resource::RLIMIT_AS,
        "fsize" => Resource::RLIMIT_FSIZE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "rss" => Resource::RLIMIT_RSS,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "locks" => Resource::RLIMIT_LOCKS,
        _ => return None,
    })
}

fn rlimits(d: &mut Decoder, n: &Node, w: &str) -> Vec<Rlimit> {
    let mut out = Vec::new();
    for (k, v) in d.map(n, w, &[]).unwrap_or_default() {
        let Some(resource) = rlimit_resource(k) else {
            d.err(
                key_pos(n, k),
                format!("{w}: unknown limit `{k}` ({})", RLIMITS.join(", ")),
            );
            continue;
        };
        let value = match v.scalar() {
            Some(Scalar::Str("unlimited" | "infinity")) => nix::libc::RLIM_INFINITY,
            _ => match d.int_in(v, &format!("{w}.{k}"), 0, i64::MAX) {
                Some(i) => i,
                None => continue,
            },
        };
        out.push(Rlimit { resource, value });
    }
    out
}

/// `after` names services that exist, and no cycle; scheduled jobs follow
/// their rules (`config::jobs`).
pub fn validate_services(d: &mut Decoder, services: &[Service]) {
    super::jobs::validate(d, services);
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for s in services {
        for dep in &s.after {
            if !index.contains_key(dep.as_str()) {
                d.err(
                    s.origin.pos,
                    format!(
                        "service {}: `after` names an unknown service `{dep}`",
                        s.name
                    ),
                );
            } else if dep == &s.name {
                d.err(
                    s.origin.pos,
                    format!("service {}: cannot start after itself", s.name),
                );
            }
        }
    }
    // Depth-first search; a back edge is a cycle, reported once.
    let mut state: BTreeMap<usize, u8> = BTreeMap::new(); // 1 = on stack, 2 = done
    let mut reported = false;
    for start in 0..services.len() {
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        let mut path: Vec<usize> = Vec::new();
        while let Some((node, next)) = stack.pop() {
            if next == 0 {
                if state.get(&node) == Some(&2) {
                    continue;
                }
                state.insert(node, 1);
                path.push(node);
            }
            let deps: Vec<usize> = services
                .get(node)
                .map(|s| {
                    s.after
                        .iter()
                        .filter_map(|a| index.get(a.as_str()).copied())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(&dep) = deps.get(next) {
                stack.push((node, next + 1));
                match state.get(&dep) {
                    Some(1) if !reported && dep != node => {
                        reported = true;
                        let from = path.iter().position(|&p| p == dep).unwrap_or(0);
                        let mut names: Vec<&str> = path
                            .iter()
                            .skip(from)
                            .filter_map(|&p| services.get(p).map(|s| s.name.as_str()))
                            .collect();
                        names.push(services.get(dep).map(|s| s.name.as_str()).unwrap_or("?"));
                        let pos = services.get(dep).map(|s| s.origin.pos).unwrap_or_default();
                        d.err(
                            pos,
                            format!("dependency cycle in `after`: {}", names.join(" -> ")),
                        );
                    }
                    Some(_) => {}
                    None => stack.push((dep, 0)),
                }
            } else {
                state.insert(node, 2);
                path.pop();
            }
        }
    }
}
