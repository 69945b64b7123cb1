//! Step 2 of the prepare phase: SSH public keys from the volume into a
//! managed block of `~user/.ssh/authorized_keys`, and optionally sshd.

use crate::config::model::{Config, Service, SshCfg, SshdMode};
use crate::error::{Diag, Pos};
use crate::fsutil::{self, FsError};
use base64::Engine;
use nix::unistd::{Gid, Uid};
use std::fmt;
use std::path::{Path, PathBuf};

pub const BEGIN: &str =
    "# BEGIN mc-launcher managed keys (generated from the data volume; do not edit)";
pub const END: &str = "# END mc-launcher managed keys";

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
];

/// authorized_keys options (sshd(8), AUTHORIZED_KEYS FILE FORMAT).
const OPTIONS: &[&str] = &[
    "agent-forwarding",
    "cert-authority",
    "command",
    "environment",
    "expiry-time",
    "from",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-user-rc",
    "no-x11-forwarding",
    "permitlisten",
    "permitopen",
    "port-forwarding",
    "principals",
    "pty",
    "no-touch-required",
    "verify-required",
    "restrict",
    "tunnel",
    "user-rc",
    "x11-forwarding",
];

/// Split on whitespace or `sep` outside double quotes (`\"` escapes).
fn split_unquoted(s: &str, at: impl Fn(char) -> bool) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && at(c) {
            out.push(s.get(start..i).unwrap_or(""));
            start = i + c.len_utf8();
        }
    }
    out.push(s.get(start..).unwrap_or(""));
    out
}

fn check_options(opts: &str) -> Result<(), String> {
    for opt in split_unquoted(opts, |c| c == ',') {
        let name = opt.split('=').next().unwrap_or("").to_ascii_lowercase();
        if !OPTIONS.contains(&name.as_str()) {
            return Err(format!("unknown option `{name}`"));
        }
        if let Some(value) = opt.split_once('=').map(|(_, v)| v) {
            if !(value.len() >= 2 && value.starts_with('"') && value.ends_with('"')) {
                return Err(format!("option `{name}` needs a double-quoted value"));
            }
        }
    }
    Ok(())
}

/// Parse one line of a `.pub` file. `Ok(None)` for blank lines and comments;
/// `Ok(Some(line))` gives the normalised key line.
pub fn parse_key_line(line: &str) -> Result<Option<String>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let fields = split_unquoted(line, char::is_whitespace)
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect::<Vec<_>>();
    let (options, rest) = match fields.first() {
        Some(f) if KEY_TYPES.contains(f) => (None, fields.as_slice()),
        Some(f) => (Some(*f), fields.get(1..).unwrap_or_default()),
        None => return Ok(None),
    };
    let (Some(kind), Some(body)) = (rest.first(), rest.get(1)) else {
        let first = fields.first().copied().unwrap_or("");
        if options.is_some() && !first.contains('=') && !first.contains(',') {
            return Err(format!("unknown key type `{first}`"));
        }
        return Err("expected: [options] key-type base64-key [comment]".into());
    };
    if !KEY_TYPES.contains(kind) {
        return Err(format!("unknown key type `{kind}`"));
    }
    if let Some(o) = options {
        check_options(o)?;
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the key is not valid base64: {e}"))?;
    let embedded = blob
        .get(..4)
        .and_then(|l| <[u8; 4]>::try_from(l).ok())
        .map(|l| u32::from_be_bytes(l) as usize)
        .and_then(|n| blob.get(4..4 + n))
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or("the key blob is truncated")?;
    if embedded != *kind {
        return Err(format!("the line says {kind} but the key is {embedded}"));
    }
    let comment: Vec<&str> = rest.get(2..).unwrap_or_default().to_vec();
    let mut out = String::new();
    if let Some(o) = options {
        out.push_str(o);
        out.push(' ');
    }
    out.push_str(kind);
    out.push(' ');
    out.push_str(body);
    if !comment.is_empty() {
        out.push(' ');
        out.push_str(&comment.join(" "));
    }
    Ok(Some(out))
}

/// The keys found in the volume, and what was wrong.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    pub keys: Vec<String>,
    /// Bad lines, skipped.
    pub problems: Vec<Diag>,
    /// Private keys or links out of the key directory: never read or copied.
    pub refused: Vec<Diag>,
}

fn looks_private(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes.get(..bytes.len().min(4096)).unwrap_or_default());
    text.contains("-----BEGIN") && text.contains("PRIVATE KEY")
}

/// Read every `*.pub` file in the key directories (sorted).
pub fn collect(cfg: &SshCfg) -> KeySet {
    let mut set = KeySet::default();
    for dir in &cfg.keys_dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let real_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let is_pub = path.extension().is_some_and(|e| e == "pub");
            // Links may point anywhere: only follow those that stay in the dir.
            let real = match std::fs::canonicalize(&path) {
                Ok(r) => r,
                Err(_) => continue,
            };
            if !real.starts_with(&real_dir) {
                set.refused.push(Diag::file(
                    &path,
                    format!(
                        "refused: a link to {} outside the key directory",
                        real.display()
                    ),
                ));
                continue;
            }
            if !real.is_file() {
                continue;
            }
            let Ok(bytes) = std::fs::read(&real) else {
                set.problems.push(Diag::file(&path, "cannot read"));
                continue;
            };
            if looks_private(&bytes) {
                set.refused.push(Diag::file(&path, "refused: this is a PRIVATE key; it is not installed (remove it from the volume)"));
                continue;
            }
            if !is_pub {
                continue;
            }
            for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                match parse_key_line(line) {
                    Ok(Some(k)) if !set.keys.contains(&k) => set.keys.push(k),
                    Ok(_) => {}
                    Err(e) => set.problems.push(Diag::new(&path, Pos::new(i + 1, 1), e)),
                }
            }
        }
    }
    set
}

/// Replace (or add, or remove) the managed block in `existing`.
pub fn merge_block(existing: &str, keys: &[String]) -> String {
    let mut out = String::new();
    let mut in_block = false;
    let mut placed = false;
    let block = || {
        let mut b = format!("{BEGIN}\n");
        for k in keys {
            b.push_str(k);
            b.push('\n');
        }
        b.push_str(END);
        b.push('\n');
        b
    };
    for line in existing.lines() {
        if line == BEGIN {
            in_block = true;
            continue;
        }
        if line == END && in_block {
            in_block = false;
            if !keys.is_empty() && !placed {
                out.push_str(&block());
                placed = true;
            }
            continue;
        }
        if !in_block {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !keys.is_empty() && !placed {
        out.push_str(&block());
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub path: PathBuf,
    pub count: usize,
    pub changed: bool,
}

impl fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.changed {
            "installed"
        } else {
            "already in place:"
        };
        write!(f, "{what} {} key(s) in {}", self.count, self.path.display())
    }
}

/// Write the keys for `user` (home and ids from the container's
/// /etc/passwd, crate::users).
pub fn sync(user: &str, home: Option<&Path>, keys: &[String]) -> Result<SyncOutcome, FsError> {
    let u = crate::users::user_by_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| FsError {
            path: PathBuf::from(user),
            err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such user"),
        })?;
    sync_into(
        home.unwrap_or(&u.home),
        Uid::from_raw(u.uid),
        Gid::from_raw(u.gid),
        keys,
    )
}

/// `~/.ssh` 0700 and `authorized_keys` 0600, both owned by the user; lines
/// outside the managed block are kept as they are.
pub fn sync_into(home: &Path, uid: Uid, gid: Gid, keys: &[String]) -> Result<SyncOutcome, FsError> {
    let dir = home.join(".ssh");
    let path = dir.join("authorized_keys");
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(FsError { path, err: e }),
    };
    let wanted = merge_block(&existing, keys);
    let owner = Uid::effective().is_root().then_some((uid, gid));
    if wanted == existing {
        return Ok(SyncOutcome {
            path,
            count: keys.len(),
            changed: false,
        });
    }
    fsutil::ensure_dir(&dir, 0o700, owner)?;
    fsutil::write_atomic(&path, wanted.as_bytes(), 0o600, owner)?;
    Ok(SyncOutcome {
        path,
        count: keys.len(),
        changed: true,
    })
}

/// Problems `check` reports: bad lines and refused files.
pub fn check(cfg: &SshCfg) -> Vec<Diag> {
    let set = collect(cfg);
    set.problems.into_iter().chain(set.refused).collect()
}

/// Host keys in `host_keys_dir`, generated once and reused afterwards.
pub fn host_keys(cfg: &SshCfg) -> Result<Vec<PathBuf>, String> {
    let dir = &cfg.host_keys_dir;
    fsutil::ensure_dir(dir, 0o700, None).map_err(|e| e.to_string())?;
    let keygen = which::which("ssh-keygen").map_err(|e| format!("ssh-keygen: {e}"))?;
    let mut out = Vec::new();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let path = dir.join(format!("ssh_host_{kind}_key"));
        if !path.exists() {
            let status = std::process::Command::new(&keygen)
                .args(["-q", "-N", "", "-t", kind, "-f"])
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .status()
                .map_err(|e| format!("ssh-keygen: {e}"))?;
            if !status.success() {
                return Err(format!("ssh-keygen -t {kind} failed ({status})"));
            }
            log::info!("sshd: generated host key {}", path.display());
        }
        out.push(path);
    }
    Ok(out)
}

/// The sshd service, when `ssh.sshd` asks for one: host keys persisted in
/// the volume, a config in the state dir that names them and then includes
/// the image's own `/etc/ssh/sshd_config` (sshd keeps the first value of a
/// keyword, so ours win only for host keys and the pid file).
pub fn sshd_service(cfg: &Config, have_keys: bool) -> Result<Option<Service>, String> {
    let sshd = which::which("sshd").or_else(|_| which::which("/usr/sbin/sshd"));
    let sshd = match (cfg.ssh.sshd, sshd) {
        (SshdMode::Never, _) => return Ok(None),
        (SshdMode::Auto, Err(_)) => return Ok(None),
        (SshdMode::Auto, Ok(_)) if !have_keys => return Ok(None),
        (SshdMode::Always, Err(e)) => return Err(format!("sshd: {e} (ssh.sshd is `always`)")),
        (_, Ok(p)) => p,
    };
    let keys = host_keys(&cfg.ssh)?;
    let mut conf = String::from("# written by mc-launcher\n");
    for k in &keys {
        conf.push_str(&format!("HostKey {}\n", k.display()));
    }
    conf.push_str("PidFile none\n");
    if Path::new("/etc/ssh/sshd_config").exists() {
        conf.push_str("Include /etc/ssh/sshd_config\n");
    }
    fsutil::ensure_dir(&cfg.paths.state, 0o700, None).map_err(|e| e.to_string())?;
    let conf_path = cfg.paths.state.join("sshd_config");
    fsutil::write_atomic(&conf_path, conf.as_bytes(), 0o600, None).map_err(|e| e.to_string())?;
    // The privilege separation directory sshd insists on.
    let _ = std::fs::create_dir_all("/run/sshd");
    let argv = vec![
        sshd.to_string_lossy().into_owned(),
        "-D".into(),
        "-e".into(),
        "-f".into(),
        conf_path.to_string_lossy().into_owned(),
    ];
    let mut s = Service::new("sshd", argv);
    s.stop_signal = nix::sys::signal::Signal::SIGTERM;
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A public key line with a blob that embeds `kind`.
    fn key(kind: &str, comment: &str) -> String {
        let mut blob = (kind.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(kind.as_bytes());
        blob.extend_from_slice(&[0, 0, 0, 4, 1, 2, 3, 4]);
        format!(
            "{kind} {} {comment}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    #[test]
    fn key_lines() {
        let ed = key("ssh-ed25519", "alice@laptop");
        let rsa = key("ssh-rsa", "");
        let sk = key("sk-ssh-ed25519@openssh.com", "yubi");
        let ok = [
            ed.clone(),
            rsa.clone(),
            sk,
            key("ecdsa-sha2-nistp256", "c"),
            format!("command=\"echo hi, there\",no-pty {ed}"),
            format!("from=\"10.0.0.0/8\",restrict {rsa}"),
            format!("  {ed}  "),
        ];
        for line in ok {
            assert!(
                matches!(parse_key_line(&line), Ok(Some(_))),
                "{line}: {:?}",
                parse_key_line(&line)
            );
        }
        for skip in ["", "   ", "# a comment"] {
            assert_eq!(parse_key_line(skip), Ok(None));
        }
        let mismatch = ed.replacen("ssh-ed25519", "ssh-rsa", 1);
        let bad: &[(String, &str)] = &[
            ("garbage".into(), "unknown key type `garbage`"),
            ("no-pty".into(), "unknown key type"),
            (
                "no-pty,command=\"x\" AAAA".into(),
                "expected: [options] key-type",
            ),
            ("ssh-ed25519 !!!notbase64!!!".into(), "not valid base64"),
            (mismatch, "the line says ssh-rsa but the key is ssh-ed25519"),
            ("ssh-foo AAAA".into(), "unknown key type"),
            (format!("bogus-option {ed}"), "unknown option"),
            (format!("command=unquoted {ed}"), "double-quoted"),
            ("ssh-ed25519 AAAA".into(), "truncated"),
        ];
        for (line, part) in bad {
            let e = parse_key_line(line).expect_err(line);
            assert!(e.contains(part), "{line}: {e}");
        }
    }

    #[test]
    fn managed_block() {
        let k1 = key("ssh-ed25519", "one");
        let k2 = key("ssh-rsa", "two");
        let outside = "# my own\nssh-ed25519 AAAAmine me@host\n";
        let with_two = merge_block(outside, &[k1.clone(), k2.clone()]);
        assert!(with_two.starts_with(outside), "{with_two}");
        assert!(with_two.contains(&k1) && with_two.contains(&k2));
        let with_one = merge_block(&with_two, std::slice::from_ref(&k2));
        assert!(!with_one.contains(&k1) && with_one.contains(&k2) && with_one.starts_with(outside));
        assert_eq!(
            merge_block(&with_one, std::slice::from_ref(&k2)),
            with_one,
            "idempotent"
        );
        assert_eq!(
            merge_block(&with_one, &[]),
            outside,
            "no keys: the block goes away"
        );
        let after = format!("{with_one}# after\n");
        assert!(merge_block(&after, std::slice::from_ref(&k1)).ends_with("# after\n"));
    }

    #[test]
    fn sync_into_a_home() {
        let home = std::env::temp_dir().join(format!("mcl-ssh-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).expect("home");
        let k = key("ssh-ed25519", "k");
        let (uid, gid) = (Uid::effective(), Gid::effective());
        let first = sync_into(&home, uid, gid, std::slice::from_ref(&k)).expect("sync");
        assert!(first.changed);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("md").permissions().mode() & 0o777;
        assert_eq!(mode(&home.join(".ssh")), 0o700);
        assert_eq!(mode(&home.join(".ssh/authorized_keys")), 0o600);
        let again = sync_into(&home, uid, gid, std::slice::from_ref(&k)).expect("sync");
        assert!(!again.changed, "nothing to write the second time");
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn collect_refuses_private_keys_and_escaping_links() {
        let d = std::env::temp_dir().join(format!("mcl-ssh-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(
            d.join("a.pub"),
            format!("{}\ngarbage line\n", key("ssh-ed25519", "a")),
        )
        .expect("w");
        std::fs::write(
            d.join("id_ed25519"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .expect("w");
        std::os::unix::fs::symlink("/etc/passwd", d.join("evil.pub")).expect("link");
        std::fs::write(d.join("notes.txt"), "hello").expect("w");
        let cfg = SshCfg {
            keys_dirs: vec![d.clone()],
            user: "root".into(),
            home: None,
            watch: false,
            sshd: SshdMode::Never,
            host_keys_dir: d.join("hk"),
        };
        let set = collect(&cfg);
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.problems.len(), 1, "{:?}", set.problems);
        assert_eq!(set.problems[0].pos.line, 2);
        assert_eq!(set.refused.len(), 2, "{:?}", set.refused);
        assert!(set.refused.iter().any(|r| r.msg.contains("PRIVATE")));
        assert!(set
            .refused
            .iter()
            .any(|r| r.msg.contains("outside the key directory")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
