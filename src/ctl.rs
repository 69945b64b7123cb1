//! The control socket (DESIGN §6): a unix socket speaking one JSON object
//! per line each way. The server side lives in the supervisor's event loop
//! (non-blocking, no thread); `mc-launcher ctl` is the client.

use crate::config::Config;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest request line accepted; a longer one is refused and the
/// connection closed.
pub const MAX_LINE: usize = 64 * 1024;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNS: usize = 32;

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

pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

pub struct Server {
    listener: UnixListener,
    pub path: PathBuf,
    pub conns: Vec<Option<Conn>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What reading a connection produced.
pub enum Incoming {
    Request(Request),
    /// A bad request: reply with this error, keep the connection.
    Bad(String),
    /// A line too long: reply and close.
    TooLong,
}

impl Server {
    /// Bind the first usable path. A socket left by a dead launcher is
    /// replaced; one a live launcher answers on is left alone.
    pub fn bind(cfg: &Config) -> Option<Server> {
        for path in candidate_paths(cfg) {
            if UnixStream::connect(&path).is_ok() {
                log::warn!(
                    "control socket {}: another launcher is listening there",
                    path.display()
                );
                continue;
            }
            let _ = std::fs::remove_file(&path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // The socket is created 0600: no moment where others may connect.
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let res = UnixListener::bind(&path);
            nix::sys::stat::umask(old);
            match res {
                Ok(listener) => {
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                    if listener.set_nonblocking(true).is_err() {
                        continue;
                    }
                    log::debug!("control socket: {}", path.display());
                    return Some(Server {
                        listener,
                        path,
                        conns: Vec::new(),
                    });
                }
                Err(e) => log::debug!("control socket {}: {e}", path.display()),
            }
        }
        log::warn!("no control socket: none of the candidate paths was usable");
        None
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Accept pending connections from our own user (or root).
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let me = nix::unistd::Uid::effective().as_raw();
            let peer =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                    .map(|c| c.uid())
                    .unwrap_or(u32::MAX);
            if peer != me && peer != 0 {
                log::warn!("control socket: refused a connection from uid {peer}");
                continue;
            }
            let live = self.conns.iter().filter(|c| c.is_some()).count();
            if live >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let conn = Conn {
                stream,
                buf: Vec::new(),
            };
            match self.conns.iter_mut().find(|c| c.is_none()) {
                Some(slot) => *slot = Some(conn),
                None => self.conns.push(Some(conn)),
            }
        }
    }

    /// Read what connection `i` sent: complete lines become requests. A
    /// closed connection is dropped.
    pub fn read(&mut self, i: usize) -> Vec<Incoming> {
        let mut out = Vec::new();
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return out;
        };
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => conn
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            if conn.buf.len() > MAX_LINE {
                break;
            }
        }
        while let Some(nl) = conn.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.buf.drain(..=nl).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(match parse_request(line) {
                Ok(r) => Incoming::Request(r),
                Err(e) => Incoming::Bad(e),
            });
        }
        if conn.buf.len() > MAX_LINE {
            out.push(Incoming::TooLong);
        }
        if closed && out.is_empty() {
            if let Some(slot) = self.conns.get_mut(i) {
                *slot = None;
            }
        }
        out
    }

    /// Send one reply line; a client that does not read is dropped.
    pub fn reply(&mut self, i: usize, v: &Value) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        let mut line = v.to_string();
        line.push('\n');
        let _ = conn.stream.set_nonblocking(false);
        let _ = conn.stream.set_write_timeout(Some(Duration::from_secs(1)));
        let ok = conn.stream.write_all(line.as_bytes()).is_ok();
        let _ = conn.stream.set_nonblocking(true);
        if !ok {
            self.close(i);
        }
    }

    pub fn close(&mut self, i: usize) {
        if let Some(slot) = self.conns.get_mut(i) {
            *slot = None;
        }
    }
}

// ----- the client ---------------------------------------------------------

/// Client exit statuses scripts can trust.
pub const CTL_OK: i32 = 0;
pub const CTL_FAILED: i32 = 1;
pub const CTL_NO_LAUNCHER: i32 = 3;

/// Send one request to the first launcher that answers; `Err` = none did.
pub fn call(paths: &[PathBuf], req: &Value) -> Result<Value, String> {
    let mut last = String::from("no control socket path");
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
            Err(e) => last = format!("{}: {e}", p.display()),
        }
    }
    Err(last)
}

/// `mc-launcher ctl [--json] COMMAND [NAME] [SIGNAL]`.
pub fn client(cfg: &Config, args: &[String]) -> i32 {
    let json_out = args.iter().any(|a| a == "--json");
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--json")
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
    let req = json!({"cmd": cmd, "name": rest.first(), "signal": rest.get(1)});
    let answer = match call(&candidate_paths(cfg), &req) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mc-launcher ctl: no launcher is listening ({e})");
            return CTL_NO_LAUNCHER;
        }
    };
    let ok = answer.get("ok").and_then(Value::as_bool).unwrap_or(false);
    if json_out {
        println!("{answer}");
    } else if !ok {
        eprintln!(
            "mc-launcher ctl: {}",
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("failed")
        );
    } else {
        print!("{}", human(cmd, &answer));
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
fn human(cmd: &str, answer: &Value) -> String {
    let mut out = String::new();
    if let Some(services) = answer.get("services").and_then(Value::as_array) {
        out.push_str(&format!(
            "{:<20} {:<10} {:<18} {:>9} {:>8}  {}\n",
            "SERVICE", "STATE", "PIDS", "UPTIME", "RESTARTS", "LAST EXIT"
        ));
        for s in services {
            let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let pids: Vec<String> = s
                .get("pids")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|p| p.to_string()).collect())
                .unwrap_or_default();
            let uptime = s
                .get("uptime_s")
                .and_then(Value::as_f64)
                .map(|u| {
                    crate::supervisor::fmt_duration(
                        crate::config::duration_from_secs(u).unwrap_or_default(),
                    )
                })
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<20} {:<10} {:<18} {:>9} {:>8}  {}\n",
                text("name"),
                text("state"),
                if pids.is_empty() {
                    "-".into()
                } else {
                    pids.join(",")
                },
                uptime,
                s.get("restarts").and_then(Value::as_u64).unwrap_or(0),
                s.get("last_exit").and_then(Value::as_str).unwrap_or("-"),
            ));
        }
    }
    if let Some(msg) = answer.get("message").and_then(Value::as_str) {
        out.push_str(msg);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str(&format!("{cmd}: ok\n"));
    }
    out
}

/// For tests and `check`: does a socket at `path` answer?
pub fn is_listening(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
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
