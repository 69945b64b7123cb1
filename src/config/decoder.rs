//! The reader of the spanned YAML tree: typed scalars, mappings of known
//! keys, ids and owners, each error collected with its position (`file:line:col`)
//! instead of stopping at the first. `decode` and its helpers read through it.

use super::model::Owner;
use crate::error::{Diag, Pos};
use crate::units::{duration_from_secs, MAX_DURATION};
use crate::yaml::{Node, Scalar, Value};
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Decoder<'a> {
    pub file: &'a Path,
    pub errors: Vec<Diag>,
}

type Entries<'n> = Vec<(&'n str, &'n Node)>;

impl<'a> Decoder<'a> {
    pub fn new(file: &'a Path) -> Decoder<'a> {
        Decoder {
            file,
            errors: Vec::new(),
        }
    }

    pub fn err(&mut self, pos: Pos, msg: impl Into<String>) {
        self.errors.push(Diag::new(self.file, pos, msg));
    }

    /// A mapping whose keys must be in `allowed`; unknown and duplicate keys
    /// are reported, and the known entries returned in order.
    pub fn map<'n>(&mut self, n: &'n Node, what: &str, allowed: &[&str]) -> Option<Entries<'n>> {
        if n.is_null() {
            return Some(Vec::new());
        }
        let Some(entries) = n.as_map() else {
            self.err(
                n.pos,
                format!("{what}: expected a mapping, found {}", n.kind()),
            );
            return None;
        };
        let mut out: Entries<'n> = Vec::new();
        // A set: a mapping of many keys must not cost a scan per key.
        let mut seen: HashSet<&'n str> = HashSet::new();
        for (k, v) in entries {
            let Some(key) = k.text().filter(|_| k.as_map().is_none()) else {
                self.err(k.pos, format!("{what}: keys must be strings"));
                continue;
            };
            if !seen.insert(key) {
                self.err(k.pos, format!("{what}: duplicate key `{key}`"));
                continue;
            }
            if !allowed.is_empty() && !allowed.contains(&key) {
                self.err(k.pos, unknown_key(what, key, allowed));
                continue;
            }
            out.push((key, v));
        }
        Some(out)
    }

    /// Report `key` of mapping `n` as unknown: the last arm of every match
    /// over the keys of a section (whose table `allowed` is, so that a key
    /// in the table and not in the match is an error, never another key).
    pub fn unknown_key(&mut self, n: &Node, what: &str, key: &str, allowed: &[&str]) {
        self.err(key_pos(n, key), unknown_key(what, key, allowed));
    }

    /// Any scalar as text (`port: 8080` is fine where a string is wanted).
    pub fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match n.scalar() {
            Some(Scalar::Null) | None => {
                self.err(
                    n.pos,
                    format!("{what}: expected a string, found {}", n.kind()),
                );
                None
            }
            Some(_) => n.text().map(str::to_string),
        }
    }

    pub fn path(&mut self, n: &Node, what: &str) -> Option<PathBuf> {
        let s = self.string(n, what)?;
        if s.is_empty() {
            self.err(n.pos, format!("{what}: empty path"));
            return None;
        }
        Some(PathBuf::from(s))
    }

    pub fn bool(&mut self, n: &Node, what: &str) -> Option<bool> {
        match n.scalar() {
            Some(Scalar::Bool(b)) => Some(b),
            _ => {
                self.err(
                    n.pos,
                    format!("{what}: expected true or false, found {}", n.kind()),
                );
                None
            }
        }
    }

    pub fn int(&mut self, n: &Node, what: &str, min: i64) -> Option<i64> {
        match n.scalar() {
            Some(Scalar::Int(i)) if i >= min => Some(i),
            Some(Scalar::Int(i)) => {
                self.err(n.pos, format!("{what}: {i} is below the minimum, {min}"));
                None
            }
            _ => {
                self.err(
                    n.pos,
                    format!("{what}: expected an integer, found {}", n.kind()),
                );
                None
            }
        }
    }

    /// An integer in `min..=max`, narrowed to `T` once it is known to fit:
    /// a value out of range is an error, never truncated or clamped.
    pub fn int_in<T: TryFrom<i64>>(
        &mut self,
        n: &Node,
        what: &str,
        min: i64,
        max: i64,
    ) -> Option<T> {
        let i = self.int(n, what, min)?;
        match T::try_from(i) {
            Ok(v) if i <= max => Some(v),
            _ => {
                self.err(n.pos, format!("{what}: {i} is above the maximum, {max}"));
                None
            }
        }
    }

    /// `500ms`, `30s`, `2m`, `1h 30m`; a bare number is seconds.
    pub fn duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let too_long = |d: Duration| d > MAX_DURATION;
        match n.scalar() {
            Some(Scalar::Int(i))
                if u64::try_from(i).is_ok_and(|s| !too_long(Duration::from_secs(s))) =>
            {
                u64::try_from(i).ok().map(Duration::from_secs)
            }
            Some(Scalar::Float(f)) if duration_from_secs(f).is_some() => duration_from_secs(f),
            Some(Scalar::Int(_) | Scalar::Float(_)) => {
                self.err(
                    n.pos,
                    format!("{what}: a duration must be positive and at most 10 years"),
                );
                None
            }
            Some(Scalar::Str(s)) => match humantime::parse_duration(s.trim()) {
                Ok(d) if too_long(d) => {
                    self.err(n.pos, format!("{what}: `{s}` is longer than 10 years"));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(
                        n.pos,
                        format!("{what}: bad duration `{s}` ({e}); write e.g. 500ms, 30s, 2m"),
                    );
                    None
                }
            },
            _ => {
                self.err(
                    n.pos,
                    format!(
                        "{what}: expected a duration such as 30s, found {}",
                        n.kind()
                    ),
                );
                None
            }
        }
    }

    /// Sizes: `10MB`, `512k`, `1G`; K/M/G are powers of 1024, like the
    /// rotation sizes of logrotate; a bare number is bytes.
    pub fn size(&mut self, n: &Node, what: &str) -> Option<u64> {
        if let Some(Scalar::Int(i)) = n.scalar() {
            if let Ok(bytes) = u64::try_from(i) {
                return Some(bytes);
            }
        }
        let text = n.text().unwrap_or_default().trim().to_ascii_uppercase();
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        let unit = text.get(digits.len()..).unwrap_or("").trim();
        let mult: Option<u64> = match unit {
            "" | "B" => Some(1),
            "K" | "KB" | "KIB" => Some(1 << 10),
            "M" | "MB" | "MIB" => Some(1 << 20),
            "G" | "GB" | "GIB" => Some(1 << 30),
            _ => None,
        };
        match (digits.parse::<u64>(), mult) {
            (Ok(v), Some(m)) => Some(v.saturating_mul(m)),
            _ => {
                self.err(
                    n.pos,
                    format!(
                        "{what}: bad size `{}`; write e.g. 10MB, 512K, 1G",
                        n.text().unwrap_or("")
                    ),
                );
                None
            }
        }
    }

    pub fn signal(&mut self, n: &Node, what: &str) -> Option<Signal> {
        let text = n.text().unwrap_or_default();
        match crate::signals::parse_signal(text) {
            Some(s) if n.as_map().is_none() && n.as_seq().is_none() => Some(s),
            _ => {
                self.err(
                    n.pos,
                    format!("{what}: unknown signal `{text}`; write e.g. TERM, SIGINT or 15"),
                );
                None
            }
        }
    }

    /// A file mode: `"0640"` or 0640 (YAML 1.1 reads that as octal).
    pub fn mode(&mut self, n: &Node, what: &str) -> Option<u32> {
        let parsed = match (n.scalar(), n.text()) {
            (Some(Scalar::Int(i)), Some(t)) if !t.starts_with('0') => {
                // Written 640: the operator meant octal digits.
                u32::from_str_radix(&i.to_string(), 8).ok()
            }
            (Some(Scalar::Int(i)), _) => u32::try_from(i).ok(),
            (Some(Scalar::Str(s)), _) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
            _ => None,
        };
        match parsed {
            Some(m) if m <= 0o7777 => Some(m),
            _ => {
                self.err(
                    n.pos,
                    format!(
                        "{what}: bad file mode `{}`; write e.g. \"0640\"",
                        n.text().unwrap_or("")
                    ),
                );
                None
            }
        }
    }

    /// A list of strings; a single string is a list of one.
    pub fn strings(&mut self, n: &Node, what: &str) -> Option<Vec<String>> {
        match &n.value {
            Value::Seq(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.push(self.string(item, what)?);
                }
                Some(out)
            }
            _ if n.is_null() => Some(Vec::new()),
            _ => self.string(n, what).map(|s| vec![s]),
        }
    }

    /// A command: a list is the exact argv; a string is split like a shell
    /// would, without running one.
    pub fn argv(&mut self, n: &Node, what: &str) -> Option<Vec<String>> {
        let argv = match &n.value {
            Value::Seq(_) => self.strings(n, what)?,
            _ => {
                let s = self.string(n, what)?;
                match shell_words::split(&s) {
                    Ok(words) => words,
                    Err(e) => {
                        self.err(n.pos, format!("{what}: cannot split `{s}`: {e}"));
                        return None;
                    }
                }
            }
        };
        if argv.first().is_none_or(|a| a.is_empty()) {
            self.err(n.pos, format!("{what}: empty command"));
            return None;
        }
        Some(argv)
    }

    /// `user:group` or `user`; both must exist (names or numbers).
    pub fn owner(&mut self, n: &Node, what: &str) -> Option<Owner> {
        let s = self.string(n, what)?;
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (s.clone(), None),
        };
        let mut ok = user_exists(&user);
        if !ok {
            self.err(n.pos, format!("{what}: no such user `{user}`"));
        }
        if let Some(g) = &group {
            if !group_exists(g) {
                self.err(n.pos, format!("{what}: no such group `{g}`"));
                ok = false;
            }
        }
        ok.then_some(Owner { user, group })
    }
}

/// The message of a key a section does not accept.
fn unknown_key(what: &str, key: &str, allowed: &[&str]) -> String {
    format!(
        "{what}: unknown key `{key}` (expected one of: {})",
        allowed.join(", ")
    )
}

/// Where `key` is written in mapping `n`.
pub fn key_pos(n: &Node, key: &str) -> Pos {
    n.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.text() == Some(key)))
        .map(|(k, _)| k.pos)
        .unwrap_or(n.pos)
}

/// The largest uid or gid: ids are 32-bit, and `u32::MAX` is `(uid_t)-1`,
/// which `chown` and `setresuid` read as "leave unchanged".
pub const MAX_ID: i64 = 4_294_967_294;
/// A numeric id in range (0 to [`MAX_ID`]); `None` when `name` is no number.
fn numeric_id(name: &str) -> Option<bool> {
    let n = name.parse::<i128>().ok()?;
    Some((0..=i128::from(MAX_ID)).contains(&n))
}

/// A number, or a name in the container's /etc/passwd (crate::users).
pub fn user_exists(name: &str) -> bool {
    numeric_id(name).unwrap_or_else(|| matches!(crate::users::user_by_name(name), Ok(Some(_))))
}

/// A number, or a name in the container's /etc/group (crate::users).
pub fn group_exists(name: &str) -> bool {
    numeric_id(name).unwrap_or_else(|| matches!(crate::users::group_by_name(name), Ok(Some(_))))
}
