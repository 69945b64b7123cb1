//! Reading circus INI files (README "circus compatibility"), so images whose salt states write
//! `/etc/circus/circusd.conf.d/*.ini` keep working unchanged.
//!
//! Semantics follow circus 0.12 (the version makina used): files are read
//! main file first, then includes (sorted here, for determinism); repeated
//! sections merge and a repeated key keeps its FIRST value, within and
//! across files. Options we do not implement are reported with `file:line`,
//! never dropped silently.

use crate::config::decode::{rlimit_resource, MAX_BACKUP_COUNT, MAX_NUMPROCESSES};
use crate::config::decoder::MAX_ID;
use crate::config::model::{CircusCfg, FileStream, OnReconfigure, Origin, Rlimit, Service, Stream};
use crate::error::{Diag, Pos};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct CircusLoad {
    pub services: Vec<Service>,
    /// Options and sections we do not support: warnings at `run`, errors at `check`.
    pub unsupported: Vec<Diag>,
    /// Malformed values and unreadable files.
    pub errors: Vec<Diag>,
}

/// One value and where it was written.
#[derive(Debug, Clone)]
struct Entry {
    value: String,
    file: PathBuf,
    line: usize,
}

/// The keys of one section, in first-seen order.
type Keys = Vec<(String, Entry)>;
/// An `[env]` / `[env:pattern,…]` section: its patterns and its keys.
type EnvSection = (Vec<String>, Keys);

/// All files merged: section name → keys in first-seen order.
#[derive(Default)]
struct Merged {
    sections: Vec<(String, Origin, Keys)>,
}

impl Merged {
    fn add(&mut self, section: &str, origin: Origin, key: Option<(&str, Entry)>) {
        let idx = match self.sections.iter().position(|(n, _, _)| n == section) {
            Some(i) => i,
            None => {
                self.sections
                    .push((section.to_string(), origin, Vec::new()));
                self.sections.len() - 1
            }
        };
        if let (Some((k, e)), Some((_, _, keys))) = (key, self.sections.get_mut(idx)) {
            // circus: "we don't want to override" — the first value stays.
            if !keys.iter().any(|(seen, _)| seen == k) {
                keys.push((k.to_string(), e));
            }
        }
    }
}

/// `[circus]` keys that only concern circusd itself: accepted, ignored.
const CIRCUSD_ONLY: &[&str] = &[
    "endpoint",
    "pubsub_endpoint",
    "stats_endpoint",
    "statsd",
    "statsd_close_outputs",
    "httpd",
    "httpd_host",
    "httpd_port",
    "httpd_close_outputs",
    "umask",
    "loglevel",
    "logoutput",
    "loggerconfig",
    "check_delay",
    "warmup_delay",
    "debug",
    "debug_gc",
    "stream_backend",
    "multicast_endpoint",
    "pidfile",
    "fqdn_prefix",
    "papa_endpoint",
    "endpoint_owner",
    "daemon",
    "use_papa",
];

/// Line numbers of keys and section headers, which the INI crate does not
/// keep: the first `key =` line after each `[section]` header.
fn positions(text: &str) -> (BTreeMap<String, usize>, BTreeMap<(String, String), usize>) {
    let (mut sections, mut keys) = (BTreeMap::new(), BTreeMap::new());
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t.starts_with(char::is_whitespace)
            || t.starts_with(';')
            || t.starts_with('#')
            || t.is_empty()
        {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_string();
            sections.entry(current.clone()).or_insert(i + 1);
        } else if let Some(k) = t.split(['=', ':']).next() {
            keys.entry((current.clone(), k.trim().to_string()))
                .or_insert(i + 1);
        }
    }
    (sections, keys)
}

fn read_file(path: &Path, merged: &mut Merged, out: &mut CircusLoad, seen: &mut HashSet<PathBuf>) {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if !seen.insert(canonical) {
        return; // an include loop, or the same file twice
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            out.errors
                .push(Diag::file(path, format!("cannot read circus config: {e}")));
            return;
        }
    };
    let opt = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        ..Default::default()
    };
    let parsed = match ini::Ini::load_from_str_opt(&text, opt) {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(Diag::new(
                path,
                Pos::new(e.line, e.col),
                format!("INI syntax error: {}", e.msg),
            ));
            return;
        }
    };
    let (sec_lines, key_lines) = positions(&text);
    let mut includes: Vec<PathBuf> = Vec::new();
    let dir = path.parent().unwrap_or(Path::new("."));
    for (section, props) in parsed.iter() {
        let Some(section) = section.map(str::trim) else {
            for (k, _) in props.iter() {
                let line = key_lines
                    .get(&(String::new(), k.to_string()))
                    .copied()
                    .unwrap_or(0);
                out.unsupported.push(Diag::new(
                    path,
                    Pos::new(line, 0),
                    format!("option `{k}` outside any section"),
                ));
            }
            continue;
        };
        let origin = Origin {
            file: path.to_path_buf(),
            pos: Pos::new(sec_lines.get(section).copied().unwrap_or(0), 0),
        };
        merged.add(section, origin.clone(), None);
        for (k, v) in props.iter() {
            let line = key_lines
                .get(&(section.to_string(), k.to_string()))
                .copied()
                .unwrap_or(0);
            let entry = Entry {
                value: v.trim().to_string(),
                file: path.to_path_buf(),
                line,
            };
            if section == "circus" && (k == "include" || k == "include_dir") {
                for item in v.split_whitespace() {
                    let base = if Path::new(item).is_absolute() {
                        PathBuf::from(item)
                    } else {
                        dir.join(item)
                    };
                    let pattern = if k == "include_dir" {
                        base.join("*.ini")
                    } else {
                        base
                    };
                    includes.extend(expand(&pattern.to_string_lossy()));
                }
                continue;
            }
            merged.add(section, origin.clone(), Some((k, entry)));
        }
    }
    for inc in includes {
        read_file(&inc, merged, out, seen);
    }
}

/// A glob's matches, sorted (circus used glob order; sorted is stable).
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = glob::glob(pattern)
        .map(|g| g.flatten().collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// `$(circus.env.NAME)`, any case for `circus.env`.
fn substitute(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("$(") {
        out.push_str(rest.get(..i).unwrap_or(""));
        let after = rest.get(i + 2..).unwrap_or("");
        let Some(end) = after.find(')') else {
            out.push_str(rest.get(i..).unwrap_or(""));
            return out;
        };
        let inner = after.get(..end).unwrap_or("");
        match inner
            .get(..11)
            .filter(|p| p.eq_ignore_ascii_case("circus.env."))
        {
            Some(_) => {
                let name = inner.get(11..).unwrap_or("");
                let v = env.get(name).or_else(|| {
                    env.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                });
                out.push_str(v.map(String::as_str).unwrap_or(""));
            }
            None => out.push_str(rest.get(i..i + 2 + end + 1).unwrap_or("")),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Read the circus files named by `cfg` into services.
pub fn load(cfg: &CircusCfg, env: &BTreeMap<String, String>) -> CircusLoad {
    let mut out = CircusLoad::default();
    let mut merged = Merged::default();
    let mut seen = HashSet::new();
    if let Some(main) = &cfg.config {
        read_file(main, &mut merged, &mut out, &mut seen);
    }
    for pattern in &cfg.include {
        for f in expand(pattern) {
            read_file(&f, &mut merged, &mut out, &mut seen);
        }
    }
    let env_sections: Vec<EnvSection> = merged
        .sections
        .iter()
        .filter_map(|(name, _, keys)| {
            if name == "env" {
                Some((vec!["*".to_string()], keys.clone()))
            } else {
                name.strip_prefix("env:").map(|pats| {
                    (
                        pats.split(',').map(|p| p.trim().to_string()).collect(),
                        keys.clone(),
                    )
                })
            }
        })
        .collect();
    for (name, origin, keys) in &merged.sections {
        if let Some(watcher) = name.strip_prefix("watcher:") {
            if let Some(s) =
                watcher_service(watcher.trim(), origin, keys, &env_sections, env, &mut out)
            {
                out.services.push(s);
            }
        } else if name == "circus" {
            for (k, e) in keys {
                if !CIRCUSD_ONLY.contains(&k.as_str()) {
                    out.unsupported.push(Diag::new(
                        &e.file,
                        Pos::new(e.line, 0),
                        format!("[circus] option `{k}` is not supported; ignored"),
                    ));
                }
            }
        } else if name != "env" && !name.starts_with("env:") {
            out.unsupported.push(Diag::new(&origin.file, origin.pos, format!("section [{name}] is not supported (only [circus], [watcher:…], [env] and [env:…]); ignored")));
        }
    }
    out
}

fn watcher_service(
    name: &str,
    origin: &Origin,
    keys: &[(String, Entry)],
    env_sections: &[EnvSection],
    env: &BTreeMap<String, String>,
    out: &mut CircusLoad,
) -> Option<Service> {
    let get = |k: &str| keys.iter().find(|(key, _)| key == k).map(|(_, e)| e);
    let val = |k: &str| get(k).map(|e| substitute(&e.value, env));
    let mut bad = |e: &Entry, msg: String| {
        out.errors.push(Diag::new(
            &e.file,
            Pos::new(e.line, 0),
            format!("[watcher:{name}] {msg}"),
        ))
    };
    let Some(cmd) = val("cmd") else {
        out.errors.push(Diag::new(
            &origin.file,
            origin.pos,
            format!("[watcher:{name}] needs a `cmd`"),
        ));
        return None;
    };
    // circus defaults where they differ from ours: copy_env false.
    let mut s = Service::new(name, Vec::new());
    s.origin = origin.clone();
    s.copy_env = false;
    let args = val("args").unwrap_or_default();
    let shell = get("shell")
        .and_then(|e| crate::units::parse_bool(&e.value))
        .unwrap_or(false);
    if shell {
        s.argv = vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("{cmd} {args}").trim().to_string(),
        ];
    } else {
        match shell_words::split(&format!("{cmd} {args}")) {
            Ok(words) if !words.is_empty() => s.argv = words,
            _ => {
                if let Some(e) = get("cmd") {
                    bad(e, format!("cannot split the command `{cmd} {args}`"));
                }
                return None;
            }
        }
    }
    let secs = |e: &Entry, v: &str, bad: &mut dyn FnMut(&Entry, String)| -> Option<Duration> {
        match v.trim().parse::<f64>() {
            Ok(f) if crate::units::duration_from_secs(f).is_some() => {
                crate::units::duration_from_secs(f)
            }
            _ => {
                bad(
                    e,
                    format!("`{v}` is not a number of seconds (0 to 10 years)"),
                );
                None
            }
        }
    };
    let mut copy_path = false;
    let mut variance = Duration::ZERO;
    for (k, e) in keys {
        let v = substitute(&e.value, env);
        let int = |bad: &mut dyn FnMut(&Entry, String)| -> Option<i64> {
            v.trim()
                .parse::<i64>()
                .map_err(|_| bad(e, format!("{k}: `{v}` is not an integer")))
                .ok()
        };
        // An integer in `min..=max`: out of range is an error, never
        // truncated or clamped.
        let ranged = |bad: &mut dyn FnMut(&Entry, String), min: i64, max: i64| -> Option<i64> {
            let i = int(bad)?;
            if (min..=max).contains(&i) {
                Some(i)
            } else {
                bad(e, format!("{k}: {i} is out of range ({min} to {max})"));
                None
            }
        };
        // A numeric uid/gid must be in range; anything else is a name.
        let id = |bad: &mut dyn FnMut(&Entry, String)| -> Option<Result<u32, String>> {
            let t = v.trim();
            if t.parse::<i128>().is_err() {
                return Some(Err(t.to_string()));
            }
            ranged(bad, 0, MAX_ID)
                .and_then(|i| u32::try_from(i).ok())
                .map(Ok)
        };
        let boolean = |bad: &mut dyn FnMut(&Entry, String)| -> Option<bool> {
            crate::units::parse_bool(&v).or_else(|| {
                bad(e, format!("{k}: `{v}` is not a boolean"));
                None
            })
        };
        match k.as_str() {
            "cmd" | "args" | "shell" => {}
            "numprocesses" => {
                s.numprocesses = ranged(&mut bad, 0, MAX_NUMPROCESSES)
                    .and_then(|i| u32::try_from(i).ok())
                    .filter(|&n| n >= 1)
                    .unwrap_or(1)
            }
            "working_dir" => s.working_dir = Some(PathBuf::from(v.trim())),
            "uid" => match id(&mut bad) {
                Some(Ok(n)) => s.uid = Some(n),
                Some(Err(name)) => s.user = Some(name),
                None => {}
            },
            "gid" => match id(&mut bad) {
                Some(Ok(n)) => s.gid = Some(n),
                Some(Err(name)) => match crate::users::group_by_name(&name) {
                    Ok(Some(g)) => s.gid = Some(g.gid),
                    _ => bad(e, format!("no such group `{name}`")),
                },
                None => {}
            },
            "copy_env" => s.copy_env = boolean(&mut bad).unwrap_or(false),
            "copy_path" => copy_path = boolean(&mut bad).unwrap_or(false),
            "stop_signal" => match crate::signals::parse_signal(&v) {
                Some(sig) => s.stop_signal = sig,
                None => bad(e, format!("unknown signal `{v}`")),
            },
            "graceful_timeout" => {
                s.graceful_timeout = secs(e, &v, &mut bad).unwrap_or(s.graceful_timeout)
            }
            "max_retry" => {
                // -1 is forever; anything else must fit the counter.
                s.max_retry = match ranged(&mut bad, -1, u32::MAX.into()) {
                    Some(-1) => None,
                    Some(i) => u32::try_from(i).ok(),
                    None => Some(5),
                }
            }
            "priority" => s.priority = int(&mut bad).unwrap_or(0),
            "respawn" => s.respawn = boolean(&mut bad).unwrap_or(true),
            "autostart" => s.autostart = boolean(&mut bad).unwrap_or(true),
            "warmup_delay" => s.warmup_delay = secs(e, &v, &mut bad).unwrap_or_default(),
            "max_age" => {
                s.max_age = secs(e, &v, &mut bad)
                    .filter(|d| !d.is_zero())
                    .map(|d| (d, Duration::ZERO))
            }
            "max_age_variance" => variance = secs(e, &v, &mut bad).unwrap_or_default(),
            // circus: on a reload, HUP the processes instead of restarting
            // them; makina's `hup_signal` picks the signal (haproxy: USR2).
            "send_hup" => {
                if boolean(&mut bad).unwrap_or(false) {
                    s.on_reconfigure = OnReconfigure::Reload;
                }
            }
            "hup_signal" => match crate::signals::parse_signal(&v) {
                Some(sig) => s.reload_signal = sig,
                None => bad(e, format!("unknown signal `{v}`")),
            },
            // Keys of makina's watcher data that circus itself ignores:
            // its file ordering (already in `priority` and the file name),
            // its log switch, and its `environment` mapping (variables
            // belong in [env:NAME], which makina writes from it).
            "conf_priority" | "defaultlog" | "environment" => {}
            key if key.starts_with("rlimit_") => match (
                rlimit_resource(key.trim_start_matches("rlimit_")),
                v.trim().parse::<u64>(),
            ) {
                (Some(resource), Ok(value)) => s.rlimits.push(Rlimit { resource, value }),
                (None, _) => out.unsupported.push(Diag::new(
                    &e.file,
                    Pos::new(e.line, 0),
                    format!("[watcher:{name}] unknown limit `{key}`; ignored"),
                )),
                (_, Err(_)) => bad(e, format!("{key}: `{v}` is not a number")),
            },
            key if key.starts_with("stdout_stream.") || key.starts_with("stderr_stream.") => {}
            other => {
                out.unsupported.push(Diag::new(
                    &e.file,
                    Pos::new(e.line, 0),
                    format!("[watcher:{name}] option `{other}` is not supported; ignored"),
                ));
            }
        }
    }
    if let Some((age, _)) = s.max_age {
        s.max_age = Some((age, variance));
    }
    s.stdout = stream(name, "stdout_stream", keys, env, out);
    s.stderr = stream(name, "stderr_stream", keys, env, out);
    // [env] then [env:pattern,…] sections whose patterns match the name.
    for (patterns, entries) in env_sections {
        let matches = patterns
            .iter()
            .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(name)));
        if matches {
            for (k, e) in entries {
                s.env
                    .entry(k.clone())
                    .or_insert_with(|| substitute(&e.value, env));
            }
        }
    }
    if copy_path && !s.copy_env {
        if let Some(path) = env.get("PATH") {
            s.env.entry("PATH".into()).or_insert_with(|| path.clone());
        }
    }
    Some(s)
}

fn stream(
    name: &str,
    prefix: &str,
    keys: &[(String, Entry)],
    env: &BTreeMap<String, String>,
    out: &mut CircusLoad,
) -> Stream {
    let get = |k: &str| {
        keys.iter()
            .find(|(key, _)| key == &format!("{prefix}.{k}"))
            .map(|(_, e)| e)
    };
    let Some(class) = get("class") else {
        // No stream configured: circus discarded the output, and makina's
        // `docker logs` showed nothing; we pass it through instead.
        return Stream::Inherit;
    };
    let class_name = class.value.rsplit('.').next().unwrap_or("").trim();
    let watched = match class_name {
        "StdoutStream" => return Stream::Inherit,
        "FileStream" => false,
        "WatchedFileStream" => true,
        other => {
            out.unsupported.push(Diag::new(&class.file, Pos::new(class.line, 0), format!("[watcher:{name}] {prefix}.class `{other}` is not supported; output passed through")));
            return Stream::Inherit;
        }
    };
    let Some(filename) = get("filename") else {
        out.errors.push(Diag::new(
            &class.file,
            Pos::new(class.line, 0),
            format!("[watcher:{name}] {prefix}.filename is required with {class_name}"),
        ));
        return Stream::Inherit;
    };
    let mut num = |k: &str, default: u64| {
        get(k).map(|e| {
            e.value.trim().parse::<u64>().unwrap_or_else(|_| {
                out.errors.push(Diag::new(
                    &e.file,
                    Pos::new(e.line, 0),
                    format!(
                        "[watcher:{name}] {prefix}.{k}: `{}` is not a number",
                        e.value
                    ),
                ));
                default
            })
        })
    };
    let max_bytes = num("max_bytes", 0).unwrap_or(0);
    let backup_count = num("backup_count", 0).unwrap_or(0);
    let backup_count = match u32::try_from(backup_count) {
        Ok(n) if i64::from(n) <= MAX_BACKUP_COUNT => n,
        _ => {
            if let Some(e) = get("backup_count") {
                out.errors.push(Diag::new(
                    &e.file,
                    Pos::new(e.line, 0),
                    format!("[watcher:{name}] {prefix}.backup_count: {backup_count} is out of range (0 to {MAX_BACKUP_COUNT})"),
                ));
            }
            0
        }
    };
    for (k, e) in keys {
        let known = [
            "class",
            "filename",
            "max_bytes",
            "backup_count",
            "time_format",
        ]
        .iter()
        .any(|s| k == &format!("{prefix}.{s}"));
        if k.starts_with(&format!("{prefix}.")) && !known {
            out.unsupported.push(Diag::new(
                &e.file,
                Pos::new(e.line, 0),
                format!("[watcher:{name}] option `{k}` is not supported; ignored"),
            ));
        }
    }
    Stream::File(FileStream {
        path: PathBuf::from(substitute(&filename.value, env)),
        max_bytes,
        backup_count,
        time_format: get("time_format").map(|e| e.value.clone()),
        watched,
    })
}

#[cfg(test)]
mod tests;
