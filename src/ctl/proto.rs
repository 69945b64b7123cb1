//! The control protocol (README "Control socket"): one JSON object per
//! line each way over a unix socket. What a request may say, and where the
//! socket may live. Layer 2.

use crate::config::model::Config;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Longest request line accepted; a longer one is refused and the
/// connection closed.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cmd: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub signal: Option<String>,
}

/// The commands a request may name, and whether each takes a service name.
pub const COMMANDS: &[(&str, bool)] = &[
    ("status", false),
    ("health", false),
    ("start", true),
    ("stop", true),
    ("restart", true),
    ("signal", true),
    ("incr", true),
    ("decr", true),
    ("reload", false),
    ("quit", false),
];

/// Parse and check one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    match COMMANDS.iter().find(|(c, _)| *c == req.cmd) {
        None => Err(format!("unknown command: {}", req.cmd)),
        Some((_, true)) if req.name.is_none() => Err(format!("{} needs a service name", req.cmd)),
        Some(_) if req.cmd == "signal" && req.signal.is_none() => {
            Err("signal needs a signal name".into())
        }
        Some(_) => Ok(req),
    }
}

pub fn error_reply(msg: &str) -> Value {
    json!({"ok": false, "error": msg})
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

    /// The command and service name a line parses to, or part of the error.
    type Want = Result<(&'static str, Option<&'static str>), &'static str>;

    #[test]
    fn request_parsing() {
        let rows: &[(&str, Want)] = &[
            (r#"{"cmd":"status"}"#, Ok(("status", None))),
            (r#"{"cmd":"stop","name":"web"}"#, Ok(("stop", Some("web")))),
            (
                r#"{"cmd":"signal","name":"web","signal":"HUP"}"#,
                Ok(("signal", Some("web"))),
            ),
            (r#"{"cmd":"stop"}"#, Err("needs a service name")),
            (r#"{"cmd":"signal","name":"web"}"#, Err("needs a signal")),
            (r#"{"cmd":"explode"}"#, Err("unknown command")),
            (r#"{"cmd":"status","extra":1}"#, Err("unknown field")),
            (r#"{"cmd":"#, Err("bad request")),
            ("[1,2]", Err("bad request")),
            ("", Err("bad request")),
        ];
        for (line, want) in rows {
            match (parse_request(line.as_bytes()), want) {
                (Ok(r), Ok((cmd, name))) => {
                    assert_eq!(r.cmd, *cmd, "{line}");
                    assert_eq!(r.name.as_deref(), *name, "{line}");
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{line}: {e}"),
                (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
            }
        }
    }
}
