//! A service's environment from files (README "Env files and secrets"):
//! `env_file` (dotenv syntax), `secrets` (a variable from a file's content)
//! and `credentials` (files copied into a private directory), all read at
//! each start of the service.
//!
//! Values read here are secret: no message of this module ever quotes
//! one; errors name the file, the line and the variable.

use crate::config::model::{Config, Service};
use crate::fsutil::{self, DirFd};
use nix::unistd::{Gid, Uid};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The largest env file, secret or credential read (each).
pub const MAX_INPUT_BYTES: u64 = 1 << 20;

/// Where credentials go when `/run` is writable (systemd's place).
pub const CREDENTIALS_RUN: &str = "/run/credentials";

/// A problem of one line of an env file (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub msg: String,
}

/// A variable name as the shell and Docker accept it.
pub fn valid_name(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Parse dotenv text: `KEY=value` (no spaces around `=`), `export KEY=…`,
/// `#` comment lines and blank lines; a value in single quotes is taken
/// literally, one in double quotes knows `\n`, `\"` and `\\`; both may span
/// lines. No `$` expansion. A later definition of a key wins.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, LineError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while let Some(raw) = lines.get(i) {
        let no = i + 1;
        i += 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let err = |msg: &str| LineError {
            line: no,
            msg: msg.to_string(),
        };
        let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
        let Some((key, rest)) = t.split_once('=') else {
            return Err(err("expected KEY=value"));
        };
        if key.ends_with([' ', '\t']) || rest.starts_with([' ', '\t']) {
            return Err(err(
                "a space around `=`: write KEY=value (quote a value that starts with a space)",
            ));
        }
        if !valid_name(key) {
            return Err(err(
                "the name before `=` is not a variable name (letters, digits, _; not starting with a digit)",
            ));
        }
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // The quoted value, possibly over several lines.
                let mut body = String::new();
                let mut cur = &rest[1..];
                let closed = loop {
                    match quoted(cur, q, &mut body) {
                        Some(after) => break Some(after),
                        None => match lines.get(i) {
                            Some(next) => {
                                body.push('\n');
                                cur = next;
                                i += 1;
                            }
                            None => break None,
                        },
                    }
                };
                let Some(after) = closed else {
                    return Err(err(&format!("the {q} opened here is never closed")));
                };
                let after = after.strip_suffix('\r').unwrap_or(after).trim();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err(LineError {
                        line: i,
                        msg: format!("text after the closing {q} (only a # comment may follow)"),
                    });
                }
                body
            }
            _ => rest.to_string(),
        };
        if value.contains('\0') {
            return Err(err("a NUL byte in the value"));
        }
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key.to_string(), value)),
        }
    }
    Ok(out)
}

/// Append to `body` the quoted text of `s` up to the closing `q`: the rest
/// of the line after it, or `None` when the line ends first.
fn quoted<'a>(s: &'a str, q: char, body: &mut String) -> Option<&'a str> {
    let mut chars = s.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == q {
            return s.get(at + 1..);
        }
        if c == '\\' && q == '"' {
            match chars.clone().next() {
                Some((_, 'n')) => body.push('\n'),
                Some((_, '"')) => body.push('"'),
                Some((_, '\\')) => body.push('\\'),
                _ => {
                    body.push('\\');
                    continue;
                }
            }
            chars.next();
            continue;
        }
        body.push(c);
    }
    None
}

/// Read the file `path`: beneath the data volume when it lies under it
/// (links only while they stay beneath it: a Kubernetes `..data` layout
/// works), else by its path; a regular file, opened without blocking, at
/// most [`MAX_INPUT_BYTES`].
pub fn read_input(path: &Path, volume: &Path) -> Result<Vec<u8>, String> {
    fsutil::read_file_in(path, Some(volume), MAX_INPUT_BYTES).map_err(|e| e.to_string())
}

/// The variables of one env file, or why not (`file:line: …`, never a value).
pub fn read_env_file(path: &Path, volume: &Path) -> Result<Vec<(String, String)>, String> {
    let bytes = read_input(path, volume).map_err(|e| format!("env_file {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "env_file {}: not UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    parse(&text).map_err(|e| format!("env_file {}:{}: {}", path.display(), e.line, e.msg))
}

/// A secret's value: the file's content, one trailing newline trimmed.
pub fn read_secret(var: &str, path: &Path, volume: &Path) -> Result<String, String> {
    let mut bytes = read_input(path, volume).map_err(|e| format!("secret {var}: {e}"))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.contains(&0) {
        return Err(format!(
            "secret {var}: {}: a NUL byte (an environment variable cannot hold it; use credentials)",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        format!(
            "secret {var}: {}: not UTF-8 (use credentials for binary data)",
            path.display()
        )
    })
}

/// What a start of `svc` adds to its environment, lowest first: the
/// top-level env files, the service's own in order, then `env` (given by
/// the caller), then the secrets (returned apart, to go over `env`).
pub struct FileEnv {
    pub files: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
}

/// Read every env file and secret of `svc` now.
pub fn load(cfg: &Config, svc: &Service) -> Result<FileEnv, String> {
    let vol = &cfg.paths.volume;
    let mut files = Vec::new();
    for p in cfg.env_file.iter().chain(&svc.inputs.env_file) {
        files.extend(read_env_file(p, vol)?);
    }
    let mut secrets = Vec::new();
    for (var, p) in &svc.inputs.secrets {
        secrets.push((var.clone(), read_secret(var, p, vol)?));
    }
    Ok(FileEnv { files, secrets })
}

/// The directory that holds the credentials of `service`:
/// `/run/credentials/NAME` when `/run` can hold it (a tmpfs in a container),
/// else under the state dir.
fn credentials_base(cfg: &Config) -> PathBuf {
    let run = Path::new(CREDENTIALS_RUN);
    if fsutil::ensure_dir(run, 0o711, None).is_ok() {
        return run.to_path_buf();
    }
    fsutil::usable_state_dir(&cfg.paths.state).join("credentials")
}

/// The credentials directory of the service `service` as it is now
/// (`svc` says whether there are credentials at all): `None` when it has
/// none or none was installed yet. Nothing is copied.
pub fn credentials_dir(cfg: &Config, svc: &Service, service: &str) -> Option<PathBuf> {
    if svc.inputs.credentials.is_empty() {
        return None;
    }
    let dir = credentials_base(cfg).join(service);
    dir.symlink_metadata()
        .is_ok_and(|m| m.is_dir())
        .then_some(dir)
}

/// Copy the credentials of `svc` into a fresh private directory owned by
/// `owner` (the service's user), mode 0700, files 0400, then put it in the
/// place of the old one atomically (readers never find the files missing):
/// its path, for `$CREDENTIALS_DIRECTORY`. `None` when the service has
/// none.
pub fn install_credentials(
    cfg: &Config,
    svc: &Service,
    owner: (Uid, Gid),
) -> Result<Option<PathBuf>, String> {
    if svc.inputs.credentials.is_empty() {
        return Ok(None);
    }
    let vol = &cfg.paths.volume;
    // Every source first: a missing one leaves the last copy as it was.
    let mut data = Vec::new();
    for (name, p) in &svc.inputs.credentials {
        let bytes = read_input(p, vol).map_err(|e| format!("credential {name}: {e}"))?;
        data.push((name, bytes));
    }
    let base = credentials_base(cfg);
    let dir = base.join(&svc.name);
    // The copy in place already holds exactly these (a process joining
    // running ones, a restart with nothing rotated): it stays, shared.
    if is_current(&dir, &data, owner) {
        return Ok(Some(dir));
    }
    let fail = |e: fsutil::FsError| format!("credentials of {}: {e}", svc.name);
    let parent = DirFd::open(&base).map_err(fail)?;
    // A whole new copy (a credential removed from the config must not
    // linger), swapped in over the old one.
    let tmp = std::ffi::OsString::from(format!(".{}.new.{}", svc.name, std::process::id()));
    parent.remove_tree(&tmp).map_err(fail)?;
    let result = (|| {
        let (d, _) = parent.mkdirs(Path::new(&tmp), 0o700)?;
        d.set_owner_mode(Some(0o700), Some(owner))?;
        for (name, bytes) in data {
            d.write_atomic(OsStr::new(name), &bytes, 0o400, Some(owner))?;
        }
        parent.replace_entry(&tmp, OsStr::new(&svc.name))
    })();
    if let Err(e) = result {
        let _ = parent.remove_tree(&tmp);
        return Err(fail(e));
    }
    Ok(Some(dir))
}

/// Whether the credentials directory `dir` (the launcher's own, under
/// `/run/credentials`) holds exactly the files of `data`, with their
/// contents, owned by `owner`.
fn is_current(dir: &Path, data: &[(&String, Vec<u8>)], owner: (Uid, Gid)) -> bool {
    use std::os::unix::fs::MetadataExt;
    let owned = |m: &std::fs::Metadata| m.uid() == owner.0.as_raw() && m.gid() == owner.1.as_raw();
    let Ok(m) = dir.symlink_metadata() else {
        return false;
    };
    if !m.is_dir() || !owned(&m) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.count() == data.len()
        && data.iter().all(|(name, bytes)| {
            let p = dir.join(name.as_str());
            p.symlink_metadata()
                .is_ok_and(|m| m.is_file() && owned(&m) && m.len() == bytes.len() as u64)
                && std::fs::read(&p).is_ok_and(|b| b == *bytes)
        })
}

/// Problems `check` reports about the env files, secrets and credentials
/// of `services`: errors (a bad line, a refused file) and warnings (a file
/// that does not exist yet: a prepare step may write it).
pub fn check(cfg: &Config, services: &[Service]) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let vol = &cfg.paths.volume;
    // What a `template` step writes need not exist before the prepare
    // phase (the example renders its worker's env file).
    let rendered: Vec<&Path> = cfg
        .reconfigure
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            crate::config::model::StepKind::Template { dest, .. } => Some(dest.as_path()),
            _ => None,
        })
        .collect();
    let mut sort = |r: Result<(), String>, path: &Path, what: &str| {
        if let Err(e) = r {
            if !path.exists() && path.symlink_metadata().is_err() {
                if rendered.contains(&path) {
                    return;
                }
                warnings.push(format!(
                    "{what} {} does not exist (yet): the service will not start without it",
                    path.display()
                ));
            } else {
                errors.push(e);
            }
        }
    };
    for p in &cfg.env_file {
        sort(read_env_file(p, vol).map(drop), p, "env_file");
    }
    for s in services {
        for p in &s.inputs.env_file {
            sort(read_env_file(p, vol).map(drop), p, "env_file");
        }
        for (var, p) in &s.inputs.secrets {
            sort(read_secret(var, p, vol).map(drop), p, "secret");
        }
        for (name, p) in &s.inputs.credentials {
            let r = read_input(p, vol).map(drop);
            sort(
                r.map_err(|e| format!("credential {name}: {e}")),
                p,
                "credential",
            );
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dotenv_table() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("A=1", &[("A", "1")]),
            ("A=1\nB=2\n", &[("A", "1"), ("B", "2")]),
            ("A=1\r\nB=2\r\n", &[("A", "1"), ("B", "2")]),
            ("# comment\n  # indented\n\nA=x", &[("A", "x")]),
            ("export A=1", &[("A", "1")]),
            ("export  A=1", &[("A", "1")]),
            ("A=", &[("A", "")]),
            ("A=a b  c ", &[("A", "a b  c ")]),
            ("A=x # not a comment", &[("A", "x # not a comment")]),
            ("A=$HOME", &[("A", "$HOME")]),
            ("A=${B:-x}", &[("A", "${B:-x}")]),
            ("A=x=y", &[("A", "x=y")]),
            ("A='lit $X \\n \"q\"'", &[("A", "lit $X \\n \"q\"")]),
            ("A=''", &[("A", "")]),
            ("A=\"a\\nb\"", &[("A", "a\nb")]),
            ("A=\"q\\\"q\"", &[("A", "q\"q")]),
            ("A=\"back\\\\slash\"", &[("A", "back\\slash")]),
            ("A=\"keep \\t\"", &[("A", "keep \\t")]),
            ("A=\"$HOME\"", &[("A", "$HOME")]),
            ("A=\"x\" # comment", &[("A", "x")]),
            ("A='x'   ", &[("A", "x")]),
            (
                "A=\"line1\nline2\"\nB=3",
                &[("A", "line1\nline2"), ("B", "3")],
            ),
            ("A='a\n\nb'", &[("A", "a\n\nb")]),
            ("A=1\nA=2", &[("A", "2")]),
            ("_x9=ok", &[("_x9", "ok")]),
            ("A=\"é\"", &[("A", "é")]),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(kv(want)), "{text:?}");
        }
    }

    #[test]
    fn dotenv_errors_name_the_line_never_the_value() {
        let cases: &[(&str, usize, &str)] = &[
            ("A=1\nnovalue", 2, "expected KEY=value"),
            ("A =1", 1, "a space around"),
            ("A= 1", 1, "a space around"),
            ("1A=x", 1, "not a variable name"),
            ("A-B=x", 1, "not a variable name"),
            ("=x", 1, "not a variable name"),
            ("\nA=\"S3CRET\nS3CRET", 2, "never closed"),
            ("A='S3CRET", 1, "never closed"),
            ("A=\"x\"S3CRET", 1, "text after the closing"),
            ("A=\"x\ny\" S3CRET", 2, "text after the closing"),
            ("A=\"S3CRET\0b\"", 1, "NUL"),
            ("S3CRET", 1, "expected KEY=value"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}");
            assert!(e.msg.contains(msg), "{text:?}: {}", e.msg);
            assert!(!e.msg.contains("S3CRET"), "{text:?} leaks: {}", e.msg);
        }
    }

    #[test]
    fn names() {
        for (k, ok) in [
            ("A", true),
            ("_", true),
            ("a_1", true),
            ("1a", false),
            ("", false),
            ("a.b", false),
        ] {
            assert_eq!(valid_name(k), ok, "{k}");
        }
    }
}
