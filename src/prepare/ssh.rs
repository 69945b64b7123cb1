//! Step 2 of the prepare phase: SSH public keys from the volume into a
//! managed block of `~user/.ssh/authorized_keys`, and optionally sshd.

use crate::config::model::{Config, Service, SshCfg, SshdMode};
use crate::error::{Diag, Pos};
use crate::fsutil::{self, DirFd, FsError, Links, Refusal};
use base64::Engine;
use nix::unistd::{Gid, Uid};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// A `.pub` file is a few hundred bytes per key: one larger than this is
/// refused unread (a dropped disk image must not cost memory or time).
pub const PUB_LIMIT: u64 = 256 * 1024;
/// Of any other file in a key directory only this much is read: enough to
/// spot a private key.
pub const SNIFF_LIMIT: u64 = 4096;
/// The existing `authorized_keys`, read to keep the lines outside the
/// managed block.
pub const AUTHORIZED_KEYS_LIMIT: u64 = 16 << 20;
/// At most this many files are looked at in one key directory, and at
/// most this many bytes read from all of them in one scan: a scan (which
/// runs in the event loop with `ssh.watch`) costs a bounded time whatever
/// the volume holds.
pub const MAX_KEY_FILES: usize = 1000;
pub const MAX_KEY_BYTES: u64 = 8 << 20;
/// A host key read back from the volume (an RSA 4096 key is about 3 KiB).
pub const HOST_KEY_LIMIT: u64 = 64 * 1024;
/// At most this much of a rejected line (or of a word in it) is quoted.
pub const QUOTE_LIMIT: usize = 100;

/// `s` cut at `max` bytes (on a character boundary), and whether it was.
fn clip(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s.get(..end).unwrap_or(""), true)
}

/// A word of a rejected line, for a message: at most 40 bytes, escaped.
fn word(s: &str) -> String {
    match clip(s, 40) {
        (w, false) => w.escape_debug().to_string(),
        (w, true) => format!("{}…", w.escape_debug()),
    }
}

/// A rejected line, quoted for a warning: at most [`QUOTE_LIMIT`] bytes,
/// control characters escaped.
pub fn quote_line(line: &str) -> String {
    match clip(line, QUOTE_LIMIT) {
        (l, false) => format!("\"{}\"", l.escape_debug()),
        (l, true) => format!("\"{}…\" (line truncated)", l.escape_debug()),
    }
}

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
            return Err(format!("unknown option `{}`", word(&name)));
        }
        if let Some(value) = opt.split_once('=').map(|(_, v)| v) {
            if !(value.len() >= 2 && value.starts_with('"') && value.ends_with('"')) {
                return Err(format!(
                    "option `{}` needs a double-quoted value",
                    word(&name)
                ));
            }
        }
    }
    Ok(())
}

/// What a line that is no key at all is told.
const NOT_A_KEY: &str = "not a public key line: expected [options] key-type base64 [comment]";

/// A word that means to be a key type (`ssh-foo`, `ecdsa-…`, `…@openssh.com`).
fn looks_like_key_type(w: &str) -> bool {
    w.starts_with("ssh-")
        || w.starts_with("ecdsa-")
        || w.starts_with("sk-")
        || w.ends_with("@openssh.com")
}

/// A word that means to be authorized_keys options (`no-pty`,
/// `command="…",from="…"`).
fn looks_like_options(w: &str) -> bool {
    w.contains('=') || w.contains(',') || OPTIONS.contains(&w.to_ascii_lowercase().as_str())
}

/// Parse one line of a `.pub` file. `Ok(None)` for blank lines and comments;
/// `Ok(Some(line))` gives the normalised key line. An error quotes at most
/// a few dozen bytes of what it found.
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
        Some(f) if looks_like_key_type(f) => return Err(format!("unknown key type `{}`", word(f))),
        Some(f) => (Some(*f), fields.get(1..).unwrap_or_default()),
        None => return Ok(None),
    };
    let (Some(kind), Some(body)) = (rest.first(), rest.get(1)) else {
        return Err(match (options, rest.first()) {
            (Some(o), Some(k)) if looks_like_options(o) && looks_like_key_type(k) => {
                format!("unknown key type `{}`", word(k))
            }
            (Some(o), None) if looks_like_options(o) => {
                "options but no key: expected [options] key-type base64 [comment]".into()
            }
            (Some(o), _) if !looks_like_options(o) => NOT_A_KEY.into(),
            _ => "expected: [options] key-type base64-key [comment]".into(),
        });
    };
    if !KEY_TYPES.contains(kind) {
        let o = options.unwrap_or("");
        if looks_like_options(o) || looks_like_key_type(kind) {
            return Err(format!("unknown key type `{}`", word(kind)));
        }
        return Err(NOT_A_KEY.into());
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
        return Err(format!(
            "the line says {kind} but the key is {}",
            word(embedded)
        ));
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

/// A private key (OpenSSH, PEM, PuTTY) anywhere in `bytes`.
fn looks_private(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| memchr::memmem::find(bytes, needle).is_some();
    (has(b"-----BEGIN") && has(b"PRIVATE KEY")) || has(b"PuTTY-User-Key-File-")
}

const PRIVATE_REFUSED: &str =
    "refused: this is a PRIVATE key; it is not installed (remove it from the volume)";

/// Read every `*.pub` file in the key directories (sorted). Key
/// directories under an untrusted root (see `fsutil::set_untrusted_roots`)
/// are opened beneath it.
pub fn collect(cfg: &SshCfg) -> KeySet {
    collect_in(cfg, None)
}

/// [`collect`], the key directories that lie under `volume` being opened
/// beneath it. Every file is opened beneath its key directory's fd (links
/// followed only while they stay in it: a Kubernetes Secret mount works),
/// non-blocking, and its type checked on the fd: a FIFO or a link out is
/// refused, never waited on or read. A `*.pub` is read up to
/// [`PUB_LIMIT`], any other file only up to [`SNIFF_LIMIT`] (to spot a
/// private key). Keys are de-duplicated in one pass.
pub fn collect_in(cfg: &SshCfg, volume: Option<&Path>) -> KeySet {
    let mut set = KeySet::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut budget = MAX_KEY_BYTES;
    for dir in &cfg.keys_dirs {
        let d = match fsutil::open_dir_in(dir, volume, Links::Beneath) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                set.refused.push(Diag::file(dir, refusal_text(&e, dir)));
                continue;
            }
        };
        let names = match d.entries() {
            Ok(n) => n,
            Err(e) => {
                set.refused
                    .push(Diag::file(dir, format!("cannot list: {}", e.err)));
                continue;
            }
        };
        if names.len() > MAX_KEY_FILES {
            set.refused.push(Diag::file(
                dir,
                format!(
                    "holds {} entries: only the first {MAX_KEY_FILES} (sorted) are read",
                    names.len()
                ),
            ));
        }
        for name in names.iter().take(MAX_KEY_FILES) {
            if budget == 0 {
                set.refused.push(Diag::file(
                    &d.path().join(name),
                    format!(
                        "not read: the key directories hold more than {} of files to read",
                        fsutil::human_size(MAX_KEY_BYTES)
                    ),
                ));
                break;
            }
            budget = budget.saturating_sub(read_key_file(&d, name, &mut set, &mut seen));
        }
    }
    set
}

/// What a refused or unreadable key file is told.
fn refusal_text(e: &FsError, dir: &Path) -> String {
    match e.refusal() {
        Some(Refusal::Outside(_)) => format!(
            "refused: a link that leads outside the key directory {}",
            dir.display()
        ),
        Some(r @ Refusal::TooBig(_)) => {
            format!("{r} (a .pub file holds a few short lines): not read")
        }
        Some(r) => r.to_string(),
        None => format!("cannot read: {}", e.err),
    }
}

/// Read one entry of a key directory; how many bytes it cost.
fn read_key_file(d: &DirFd, name: &OsStr, set: &mut KeySet, seen: &mut HashSet<String>) -> u64 {
    let path = d.path().join(name);
    let is_pub = Path::new(name).extension().is_some_and(|e| e == "pub");
    let opened = d.file(Path::new(name), Links::Beneath);
    let (mut f, _) = match opened {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return 0, // gone meanwhile, or a dangling link
        // Directories (`..data` of a Kubernetes mount…) and other odd
        // files are only worth a word when they are named like a key.
        Err(e) if matches!(e.refusal(), Some(Refusal::Kind { .. })) && !is_pub => return 0,
        Err(e) => {
            set.refused
                .push(Diag::file(&path, refusal_text(&e, d.path())));
            return 0;
        }
    };
    let read = if is_pub {
        fsutil::read_bounded(&mut f, PUB_LIMIT)
    } else {
        fsutil::read_prefix(&mut f, SNIFF_LIMIT)
    };
    let bytes = match read {
        Ok(b) => b,
        Err(err) => {
            let e = FsError::new(&path, err);
            set.refused
                .push(Diag::file(&path, refusal_text(&e, d.path())));
            // What was read before the limit said no.
            return PUB_LIMIT;
        }
    };
    let cost = bytes.len() as u64;
    if looks_private(&bytes) {
        set.refused.push(Diag::file(&path, PRIVATE_REFUSED));
        return cost;
    }
    if !is_pub {
        return cost;
    }
    for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
        match parse_key_line(line) {
            Ok(Some(k)) => {
                if seen.insert(k.clone()) {
                    set.keys.push(k);
                }
            }
            Ok(None) => {}
            Err(e) => set.problems.push(Diag::new(
                &path,
                Pos::new(i + 1, 1),
                format!("{e}: {}", quote_line(line.trim())),
            )),
        }
    }
    cost
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

/// The keys of the managed block in `existing`.
pub fn block_keys(existing: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in existing.lines() {
        if line == BEGIN {
            in_block = true;
        } else if line == END && in_block {
            in_block = false;
        } else if in_block && !line.trim().is_empty() {
            out.push(line);
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub path: PathBuf,
    /// Keys in the managed block now.
    pub count: usize,
    pub changed: bool,
    /// Keys that came, and keys that left, with this sync.
    pub added: usize,
    pub removed: usize,
}

impl fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changed {
            return write!(
                f,
                "already in place: {} key(s) in {}",
                self.count,
                self.path.display()
            );
        }
        let mut parts = Vec::new();
        if self.added > 0 {
            parts.push(format!("installed {} key(s)", self.added));
        }
        if self.removed > 0 {
            parts.push(format!("removed {} key(s)", self.removed));
        }
        if parts.is_empty() {
            parts.push("rewrote the managed block".to_string());
        }
        // "installed 1 key(s) in …" when that is all there is; otherwise
        // what changed, then what the file holds now.
        if self.removed == 0 && self.added == self.count {
            return write!(f, "{} in {}", parts.join(", "), self.path.display());
        }
        write!(
            f,
            "{}; now {} key(s) in {}",
            parts.join(", "),
            self.count,
            self.path.display()
        )
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

/// A refusal under the home, said the way an operator reads it.
fn home_refusal(e: FsError, what: &str) -> FsError {
    match e.refusal() {
        Some(Refusal::Link) => FsError::new(
            &e.path,
            std::io::Error::other(format!(
                "{what} is a symbolic link: refused (the launcher does not write or chown through links)"
            )),
        ),
        Some(Refusal::Kind { found, expected }) => FsError::new(
            &e.path,
            std::io::Error::other(format!("{what} is {found}, not {expected}: refused")),
        ),
        _ => e,
    }
}

/// `~/.ssh` 0700 and `authorized_keys` 0600, both owned by the user; lines
/// outside the managed block are kept as they are.
///
/// The home may belong to the user, who could plant links there: `~/.ssh`
/// and `authorized_keys` are opened beneath the home's fd without following
/// any link (a link is refused, never chowned or written through), the
/// existing file is read non-blocking, bounded, and only when it is a
/// regular file with a single name, and owner and mode are set on the fds.
pub fn sync_into(home: &Path, uid: Uid, gid: Gid, keys: &[String]) -> Result<SyncOutcome, FsError> {
    // The home path itself is trusted (the password database, the
    // config): a missing one is created, as `mkdir -p` would.
    let home_fd = match DirFd::open(home) {
        Err(e) if e.is_not_found() && !keys.is_empty() => {
            fsutil::at(home, std::fs::create_dir_all(home))?;
            DirFd::open(home)?
        }
        Err(e) if e.is_not_found() => {
            return Ok(SyncOutcome {
                path: home.join(".ssh/authorized_keys"),
                count: 0,
                changed: false,
                added: 0,
                removed: 0,
            })
        }
        r => r?,
    };
    let dir_path = home.join(".ssh");
    let path = dir_path.join("authorized_keys");
    let dir = match home_fd.dir(Path::new(".ssh"), Links::Refuse) {
        Ok(d) => Some(d),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(home_refusal(e, "~/.ssh")),
    };
    let existing = match &dir {
        None => String::new(),
        Some(d) => read_authorized_keys(d, &path)?,
    };
    let wanted = merge_block(&existing, keys);
    let owner = Uid::effective().is_root().then_some((uid, gid));
    let before: HashSet<&str> = block_keys(&existing).into_iter().collect();
    let after: HashSet<&str> = block_keys(&wanted).into_iter().collect();
    let outcome = |changed| SyncOutcome {
        path: path.clone(),
        count: keys.len(),
        changed,
        added: after.difference(&before).count(),
        removed: before.difference(&after).count(),
    };
    if wanted == existing {
        return Ok(outcome(false));
    }
    let dir = match dir {
        Some(d) => d,
        None => {
            home_fd
                .mkdirs(Path::new(".ssh"), 0o700)
                .map_err(|e| home_refusal(e, "~/.ssh"))?
                .0
        }
    };
    dir.set_owner_mode(Some(0o700), owner)?;
    dir.write_atomic(
        OsStr::new("authorized_keys"),
        wanted.as_bytes(),
        0o600,
        owner,
    )?;
    Ok(outcome(true))
}

/// The current `authorized_keys` in `~/.ssh` (empty when missing).
fn read_authorized_keys(dir: &DirFd, path: &Path) -> Result<String, FsError> {
    let (mut f, st) = match dir.file(Path::new("authorized_keys"), Links::Refuse) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(String::new()),
        Err(e) => return Err(home_refusal(e, "~/.ssh/authorized_keys")),
    };
    // A second name may be a file the user must not see (a hard link to
    // a root-only file): its lines would be copied into the user's file.
    if st.st_nlink > 1 {
        return Err(FsError::new(
            path,
            std::io::Error::other(format!(
                "~/.ssh/authorized_keys has {} hard links: refused (it may be another file)",
                st.st_nlink
            )),
        ));
    }
    let bytes = fsutil::at(path, fsutil::read_bounded(&mut f, AUTHORIZED_KEYS_LIMIT))?;
    String::from_utf8(bytes).map_err(|_| {
        FsError::new(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
        )
    })
}

/// Problems `check` reports: bad lines and refused files.
pub fn check(cfg: &SshCfg) -> Vec<Diag> {
    check_in(cfg, None)
}

/// [`check`], key directories under `volume` opened beneath it.
pub fn check_in(cfg: &SshCfg, volume: Option<&Path>) -> Vec<Diag> {
    let set = collect_in(cfg, volume);
    set.problems.into_iter().chain(set.refused).collect()
}

/// Whether the SSH step can do its work in this process: as root, or as
/// `ssh.user` itself (its own `authorized_keys`; sshd still needs root).
/// Otherwise the step, the key watch and sshd are skipped with one line,
/// and the key directories are not even read (README "SSH keys").
pub fn usable(cfg: &SshCfg) -> bool {
    let euid = Uid::effective();
    euid.is_root()
        || crate::users::user_by_name(&cfg.user)
            .ok()
            .flatten()
            .is_some_and(|u| u.uid == euid.as_raw())
}

/// Whether the launcher's sshd would run with these keys, root permitting:
/// `always`, or `auto` with a valid key and an sshd in the image.
pub fn sshd_wanted(cfg: &SshCfg, have_keys: bool) -> bool {
    match cfg.sshd {
        SshdMode::Never => false,
        SshdMode::Always => true,
        SshdMode::Auto => have_keys && sshd_available(),
    }
}

/// Read the key directories, logging every skipped line and refused file.
fn collect_logged(cfg: &Config) -> KeySet {
    let set = collect_in(&cfg.ssh, Some(&cfg.paths.volume));
    for d in &set.problems {
        log::warn!("ssh: {d} (line skipped)");
    }
    for d in &set.refused {
        log::error!("ssh: {d}");
    }
    set
}

/// The key directories, for messages.
fn key_dirs(cfg: &SshCfg) -> String {
    cfg.keys_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the SSH step stopped the start: the step (`ssh` or `sshd`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub step: &'static str,
    pub msg: String,
}

/// Step 2 of the prepare phase: the keys into the managed block, and the
/// sshd service when one runs (`Ok(Some)`). Host keys are made only then.
pub fn step(cfg: &Config) -> Result<Option<Service>, StepError> {
    if !usable(&cfg.ssh) {
        log::warn!("ssh: skipped, not running as root");
        return Ok(None);
    }
    let root = Uid::effective().is_root();
    let set = collect_logged(cfg);
    match sync(&cfg.ssh.user, cfg.ssh.home.as_deref(), &set.keys) {
        Ok(o) if o.count == 0 && !o.changed => {
            log::info!("ssh: no keys in {}", key_dirs(&cfg.ssh))
        }
        Ok(o) => log::info!("ssh: {o}"),
        // Not root, the user's own home: what can work does.
        Err(e) if !root => log::warn!("ssh: skipped: {e}"),
        Err(e) => {
            return Err(StepError {
                step: "ssh",
                msg: e.to_string(),
            })
        }
    }
    let have_keys = !set.keys.is_empty();
    if !root {
        if sshd_wanted(&cfg.ssh, have_keys) {
            log::warn!(
                "sshd: skipped, not running as root (sshd needs root to switch to the logged-in user)"
            );
        }
        return Ok(None);
    }
    sshd_service(cfg, have_keys).map_err(|msg| StepError { step: "sshd", msg })
}

/// The line that says sshd starts at launch, as when a key starts it
/// while running (supervisor::core::reload).
pub fn log_starting(cfg: &Config) {
    match cfg.ssh.sshd {
        SshdMode::Always => log::info!("sshd: starting (ssh.sshd: always)"),
        _ => log::info!("sshd: starting (a valid key is installed)"),
    }
}

/// Apply the key directories again while running (`ssh.watch`): only the
/// managed block changes. Returns what sshd should now be: with `sshd:
/// auto` it runs while there is a valid key (README "SSH keys").
pub fn resync(cfg: &Config) -> Option<Service> {
    if !usable(&cfg.ssh) {
        return None;
    }
    let set = collect_logged(cfg);
    match sync(&cfg.ssh.user, cfg.ssh.home.as_deref(), &set.keys) {
        Ok(o) if o.changed => log::info!("ssh: keys changed: {o}"),
        Ok(_) => {}
        Err(e) => log::error!("ssh: {e}"),
    }
    if !Uid::effective().is_root() {
        return None;
    }
    sshd_service(cfg, !set.keys.is_empty())
        .map_err(|e| log::error!("sshd: {e}"))
        .ok()
        .flatten()
}

/// Host keys: kept in `ssh.host_keys_dir` (in the volume, so that a new
/// container keeps its identity), generated once, when the launcher's sshd
/// is first prepared (never ahead of it: no sshd, no host keys), and used
/// by sshd from a private copy in the state dir (0600, root's), which
/// nobody writing the volume can swap under sshd.
///
/// The volume directory is created and opened without following links,
/// its mode set on its fd; keys are read from it beneath its fd
/// (non-blocking, bounded) and written into it atomically. When it cannot
/// be used (a planted link, a read-only volume), the keys live in the
/// state dir only, and the launcher says so; a key already made there
/// (sshd started earlier in this container) is used again.
pub fn host_keys(cfg: &Config) -> Result<Vec<PathBuf>, String> {
    let work = cfg.paths.state.join("ssh_host_keys");
    fsutil::ensure_dir(&work, 0o700, None).map_err(|e| e.to_string())?;
    let work_fd = DirFd::open(&work).map_err(|e| e.to_string())?;
    let volume_dir = &cfg.ssh.host_keys_dir;
    // Why the volume cannot keep them: said with the keys it could not keep.
    let mut not_kept: Option<String> = None;
    let persist = match fsutil::dir_for_write(volume_dir, Some(&cfg.paths.volume), 0o700) {
        Ok((d, _)) => {
            let mode = d.stat().map(|st| st.st_mode & 0o7777).unwrap_or(0);
            if mode != 0o700 {
                if let Err(e) = d.set_owner_mode(Some(0o700), None) {
                    log::warn!("sshd: {e}");
                }
            }
            Some(d)
        }
        Err(e) => {
            not_kept = Some(e.to_string());
            None
        }
    };
    let mut out = Vec::new();
    let mut generated = Vec::new();
    // ed25519 and ECDSA are made in milliseconds and every client of the
    // last ten years takes one; an RSA key (slow to make) is used when the
    // volume already has one.
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let name = format!("ssh_host_{kind}_key");
        let pub_name = format!("{name}.pub");
        let kept = persist.as_ref().and_then(|d| {
            match d.read(Path::new(&name), Links::Beneath, HOST_KEY_LIMIT) {
                Ok(b) => Some(b),
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    log::warn!("sshd: {e}: a new host key replaces it");
                    None
                }
            }
        });
        let wrote = |e: FsError| e.to_string();
        match kept {
            Some(private) => {
                work_fd
                    .write_atomic(OsStr::new(&name), &private, 0o600, None)
                    .map_err(wrote)?;
                if let Some(Ok(public)) = persist
                    .as_ref()
                    .map(|d| d.read(Path::new(&pub_name), Links::Beneath, HOST_KEY_LIMIT))
                {
                    work_fd
                        .write_atomic(OsStr::new(&pub_name), &public, 0o644, None)
                        .map_err(wrote)?;
                }
            }
            // An RSA key (slow to make) is used only when the volume
            // already has one.
            None if kind == "rsa" => continue,
            // Made earlier in this container, the volume unable to keep it.
            None if persist.is_none() && has_key_pair(&work_fd, &name, &pub_name) => {}
            None => {
                generate_host_key(&work_fd, kind, &name, &pub_name)?;
                if let Some(d) = &persist {
                    if let Err(e) = copy_key(&work_fd, d, &name, &pub_name) {
                        not_kept = Some(e.to_string());
                    }
                }
                generated.push(kind);
            }
        }
        out.push(work.join(&name));
    }
    if !generated.is_empty() {
        // One line for the keys made, after why the volume cannot keep them.
        let kept_in = match not_kept {
            Some(e) => {
                log::warn!(
                    "sshd: {e}; host keys are kept in {} only (they last as long as it)",
                    work.display()
                );
                &work
            }
            None => volume_dir,
        };
        log::info!(
            "sshd: generated host keys ({}) in {}",
            generated.join(", "),
            kept_in.display()
        );
    }
    Ok(out)
}

/// Whether the state dir holds a key pair `name` already.
fn has_key_pair(work: &DirFd, name: &str, pub_name: &str) -> bool {
    [name, pub_name].iter().all(|n| {
        work.read(Path::new(n), Links::Refuse, HOST_KEY_LIMIT)
            .is_ok()
    })
}

fn sshd_path() -> Result<PathBuf, which::Error> {
    which::which("sshd").or_else(|_| which::which("/usr/sbin/sshd"))
}

/// Whether this image has an sshd to run.
pub fn sshd_available() -> bool {
    sshd_path().is_ok()
}

/// Run ssh-keygen into the (private, trusted) state copy of the host keys.
fn generate_host_key(work: &DirFd, kind: &str, name: &str, pub_name: &str) -> Result<(), String> {
    let keygen = which::which("ssh-keygen").map_err(|e| format!("ssh-keygen: {e}"))?;
    for n in [name, pub_name] {
        work.remove(OsStr::new(n), false)
            .map_err(|e| e.to_string())?;
    }
    let status = std::process::Command::new(&keygen)
        .args(["-q", "-N", "", "-t", kind, "-f"])
        .arg(work.path().join(name))
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("ssh-keygen: {e}"))?;
    if !status.success() {
        return Err(format!("ssh-keygen -t {kind} failed ({status})"));
    }
    Ok(())
}

/// Keep a generated key pair in the volume directory.
fn copy_key(from: &DirFd, to: &DirFd, name: &str, pub_name: &str) -> Result<(), FsError> {
    for (n, mode) in [(name, 0o600), (pub_name, 0o644)] {
        let bytes = from.read(Path::new(n), Links::Refuse, HOST_KEY_LIMIT)?;
        to.write_atomic(OsStr::new(n), &bytes, mode, None)?;
    }
    Ok(())
}

/// The sshd service, when `ssh.sshd` asks for one: host keys persisted in
/// the volume (see [`host_keys`]), a config in the state dir that names them and then includes
/// the image's own `/etc/ssh/sshd_config` (sshd keeps the first value of a
/// keyword, so ours win only for host keys and the pid file).
pub fn sshd_service(cfg: &Config, have_keys: bool) -> Result<Option<Service>, String> {
    let sshd = sshd_path();
    let sshd = match (cfg.ssh.sshd, sshd) {
        (SshdMode::Never, _) => return Ok(None),
        (SshdMode::Auto, Err(_)) => return Ok(None),
        (SshdMode::Auto, Ok(_)) if !have_keys => return Ok(None),
        (SshdMode::Always, Err(e)) => return Err(format!("sshd: {e} (ssh.sshd is `always`)")),
        (_, Ok(p)) => p,
    };
    let keys = host_keys(cfg)?;
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
    // Its lines framed as every service's (`sshd ! Accepted publickey …`),
    // JSON records too with `log.format: json`, and kept for `ctl logs
    // sshd`: never bare lines among the launcher's.
    s.stdout = crate::config::model::Stream::Prefix;
    s.stderr = crate::config::model::Stream::Prefix;
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::scratch::Tmp;

    /// The keys found in `dirs` (for root; beneath `volume` when given).
    fn scan(dirs: Vec<PathBuf>, volume: Option<&Path>) -> KeySet {
        let cfg = SshCfg {
            keys_dirs: dirs,
            user: "root".into(),
            home: None,
            watch: false,
            sshd: SshdMode::Never,
            host_keys_dir: PathBuf::from("/nonexistent"),
        };
        collect_in(&cfg, volume)
    }

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
            (
                "garbage".into(),
                "not a public key line: expected [options] key-type base64 [comment]",
            ),
            ("this is not a key".into(), "not a public key line"),
            ("no-pty".into(), "options but no key"),
            ("no-pty ssh-foo AAAA".into(), "unknown key type `ssh-foo`"),
            (format!("ssh-{} AAAA", "x".repeat(10_000)), "…`"),
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
        let tmp = Tmp::new("ssh-home");
        let home = tmp.0.clone();
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
        // A home that does not exist yet is made (with keys to write only).
        let fresh = home.join("not-yet/home");
        assert!(!sync_into(&fresh, uid, gid, &[]).expect("none").changed);
        assert!(!fresh.exists());
        assert!(
            sync_into(&fresh, uid, gid, std::slice::from_ref(&k))
                .expect("made")
                .changed
        );
        assert!(fresh.join(".ssh/authorized_keys").is_file());
    }

    #[test]
    fn sync_never_goes_through_links_or_second_names() {
        let tmp = Tmp::new("ssh-links");
        let base = tmp.0.clone();
        let (home, outside) = (base.join("home"), base.join("outside"));
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::write(outside.join("secret"), "SECRET\n").expect("w");
        let k = key("ssh-ed25519", "k");
        let (uid, gid) = (Uid::effective(), Gid::effective());
        // ~/.ssh a link: refused, said so.
        std::os::unix::fs::symlink(&outside, home.join(".ssh")).expect("link");
        let e = sync_into(&home, uid, gid, std::slice::from_ref(&k)).expect_err("link");
        assert!(
            e.to_string().contains("~/.ssh is a symbolic link: refused"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1);
        // authorized_keys a link, then a second name of another file.
        std::fs::remove_file(home.join(".ssh")).expect("rm");
        std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
        let ak = home.join(".ssh/authorized_keys");
        std::os::unix::fs::symlink(outside.join("secret"), &ak).expect("link");
        let e = sync_into(&home, uid, gid, std::slice::from_ref(&k)).expect_err("link");
        assert!(
            e.to_string()
                .contains("~/.ssh/authorized_keys is a symbolic link: refused"),
            "{e}"
        );
        std::fs::remove_file(&ak).expect("rm");
        std::fs::hard_link(outside.join("secret"), &ak).expect("hardlink");
        let e = sync_into(&home, uid, gid, std::slice::from_ref(&k)).expect_err("hardlink");
        assert!(e.to_string().contains("has 2 hard links: refused"), "{e}");
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).expect("r"),
            "SECRET\n"
        );
        // Counts of what came and what left.
        std::fs::remove_file(&ak).expect("rm");
        let k2 = key("ssh-rsa", "k2");
        let o = sync_into(&home, uid, gid, &[k.clone(), k2.clone()]).expect("two");
        assert_eq!((o.added, o.removed, o.count), (2, 0, 2));
        assert!(o.to_string().starts_with("installed 2 key(s) in "), "{o}");
        let o = sync_into(&home, uid, gid, std::slice::from_ref(&k2)).expect("one");
        assert_eq!((o.added, o.removed), (0, 1));
        assert!(
            o.to_string()
                .starts_with("removed 1 key(s); now 1 key(s) in "),
            "{o}"
        );
        let o = sync_into(&home, uid, gid, std::slice::from_ref(&k2)).expect("same");
        assert!(
            o.to_string().starts_with("already in place: 1 key(s) in "),
            "{o}"
        );
    }

    #[test]
    fn rejected_lines_are_quoted_short_and_keys_counted_once() {
        assert_eq!(quote_line("this is not a key"), "\"this is not a key\"");
        let long = "é".repeat(1000);
        let q = quote_line(&long);
        assert!(
            q.ends_with("…\" (line truncated)") && q.len() < QUOTE_LIMIT + 30,
            "{q}"
        );
        assert_eq!(quote_line("a\u{1b}[31mred"), "\"a\\u{1b}[31mred\"");
        let tmp = Tmp::new("ssh-dedup");
        let d = tmp.0.clone();
        std::fs::create_dir_all(&d).expect("dir");
        let lines: String = (0..2000)
            .map(|i| format!("{}\n", key("ssh-ed25519", &format!("k{}", i % 500))))
            .collect();
        std::fs::write(d.join("a.pub"), &lines).expect("w");
        std::fs::write(d.join("b.pub"), &lines).expect("w");
        std::fs::write(d.join("big.pub"), vec![b'#'; PUB_LIMIT as usize + 1]).expect("w");
        let set = scan(vec![d.clone()], None);
        assert_eq!(set.keys.len(), 500);
        assert_eq!(set.refused.len(), 1, "{:?}", set.refused);
        assert!(set.refused[0].msg.contains("larger than 256 KiB"));
    }

    #[test]
    fn a_scan_reads_a_bounded_number_of_files_and_bytes() {
        let tmp = Tmp::new("ssh-budget");
        let d = tmp.0.clone();
        std::fs::create_dir_all(&d).expect("dir");
        let filler = vec![b'#'; 250 * 1024];
        for i in 0..40 {
            std::fs::write(d.join(format!("f{i:02}.pub")), &filler).expect("w");
        }
        for i in 0..MAX_KEY_FILES {
            std::fs::write(d.join(format!("z{i:04}")), "").expect("w");
        }
        let set = scan(vec![d.clone()], None);
        assert!(
            set.refused
                .iter()
                .any(|r| r.msg.contains("holds 1040 entries")),
            "{:?}",
            set.refused
        );
        let stopped: Vec<_> = set
            .refused
            .iter()
            .filter(|r| r.msg.contains("more than 8 MiB"))
            .collect();
        assert_eq!(stopped.len(), 1, "{:?}", set.refused);
        assert!(stopped[0].file.ends_with("f33.pub"), "{:?}", stopped[0]);
    }

    #[test]
    fn collect_refuses_private_keys_and_escaping_links() {
        let tmp = Tmp::new("ssh-keys");
        let d = tmp.0.clone();
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
        let set = scan(vec![d.clone()], None);
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.problems.len(), 1, "{:?}", set.problems);
        assert_eq!(set.problems[0].pos.line, 2);
        assert_eq!(set.refused.len(), 2, "{:?}", set.refused);
        assert!(set.refused.iter().any(|r| r.msg.contains("PRIVATE")));
        assert!(set
            .refused
            .iter()
            .any(|r| r.msg.contains("outside the key directory")));
    }

    /// A Kubernetes Secret volume: `NAME.pub -> ..data/NAME.pub`, `..data ->
    /// ..TIMESTAMP`, files 0400. Links that stay beneath the key directory
    /// are followed; one whose `..data` (or target) leads out is refused.
    #[test]
    fn the_kubelet_layout_is_read_beneath_the_key_dir() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = Tmp::new("ssh-k8s");
        let base = tmp.0.clone();
        let d = base.join("ssh");
        let ts = d.join("..2026_12_02_12_00_00.42");
        std::fs::create_dir_all(&ts).expect("dir");
        std::fs::write(ts.join("a.pub"), format!("{}\n", key("ssh-ed25519", "a"))).expect("w");
        std::fs::set_permissions(ts.join("a.pub"), std::fs::Permissions::from_mode(0o400))
            .expect("chmod");
        std::os::unix::fs::symlink("..2026_12_02_12_00_00.42", d.join("..data")).expect("ln");
        std::os::unix::fs::symlink("..data/a.pub", d.join("a.pub")).expect("ln");
        // A second directory of links out of the key dir, through `..data`.
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).expect("dir");
        std::fs::write(
            outside.join("b.pub"),
            format!("{}\n", key("ssh-ed25519", "b")),
        )
        .expect("w");
        let evil = base.join("evil");
        std::fs::create_dir_all(&evil).expect("dir");
        std::os::unix::fs::symlink("../outside", evil.join("..data")).expect("ln");
        std::os::unix::fs::symlink("..data/b.pub", evil.join("b.pub")).expect("ln");
        let set = scan(vec![d.clone(), evil.clone()], Some(&base));
        assert_eq!(set.keys.len(), 1, "{:?}", set);
        assert!(set.keys[0].ends_with(" a"), "{:?}", set.keys);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        // Both the escaping `..data` and the key reached through it.
        let refused: Vec<String> = set
            .refused
            .iter()
            .map(|r| r.file.display().to_string())
            .collect();
        assert_eq!(refused.len(), 2, "{:?}", set.refused);
        assert!(
            refused[0].ends_with("evil/..data") && refused[1].ends_with("evil/b.pub"),
            "{refused:?}"
        );
        assert!(set
            .refused
            .iter()
            .all(|r| r.msg.contains("outside the key directory")));
    }
}
