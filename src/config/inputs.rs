//! Decoding the keys of README "Env files and secrets", "Profiles" and
//! "Liveness of a given-up service": `env_file` (top level and per
//! service), `secrets`, `credentials`, `profiles`, `liveness`; and the
//! profile filter applied to a loaded config.

use super::decoder::Decoder;
use super::model::*;
use crate::error::Diag;
use crate::yaml::Node;
use std::path::{Path, PathBuf};

/// `env_file: path | [path, …]`; a relative path is taken from the config
/// file's directory.
pub fn env_files(d: &mut Decoder, n: &Node, what: &str) -> Vec<PathBuf> {
    let base = d.file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let list = d.strings(n, what).unwrap_or_default();
    let mut out = Vec::new();
    for p in list {
        if p.is_empty() {
            d.err(n.pos, format!("{what}: empty path"));
            continue;
        }
        out.push(base.join(p));
    }
    out
}

/// `secrets: {VAR: path}` (`names_var`: VAR must be a variable name) or
/// `credentials: {NAME: path}` (a plain file name).
pub fn path_map(d: &mut Decoder, n: &Node, what: &str, names_var: bool) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (k, v) in d.map(n, what, &[]).unwrap_or_default() {
        let ok = if names_var {
            crate::proc::envfile::valid_name(k)
        } else {
            !k.starts_with('.')
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
        };
        if !ok {
            let rule = if names_var {
                "a variable name: letters, digits and _, not starting with a digit"
            } else {
                "a file name: letters, digits and _ . @ -, not starting with ."
            };
            d.err(v.pos, format!("{what}: `{k}` is not {rule}"));
            continue;
        }
        let Some(p) = d.path(v, &format!("{what}.{k}")) else {
            continue;
        };
        if !p.is_absolute() {
            d.err(
                v.pos,
                format!("{what}.{k}: must be an absolute path (e.g. /run/secrets/{k})"),
            );
            continue;
        }
        out.push((k.to_string(), p));
    }
    out
}

/// `profiles: [name, …]`.
pub fn profiles(d: &mut Decoder, n: &Node, what: &str) -> Vec<String> {
    let list = d.strings(n, what).unwrap_or_default();
    for p in &list {
        if !valid_profile(p) {
            d.err(
                n.pos,
                format!("{what}: `{p}` is not a profile name (letters, digits, _ . -)"),
            );
        }
    }
    list
}

/// A profile name as Docker Compose accepts it.
pub fn valid_profile(p: &str) -> bool {
    let mut b = p.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// `liveness: fail | ignore`: whether a FAILED service is ignored by
/// `ctl health --live`.
pub fn liveness(d: &mut Decoder, n: &Node, what: &str) -> bool {
    match n.text() {
        Some("ignore") => true,
        Some("fail") => false,
        _ => {
            d.err(n.pos, format!("{what}: expected fail or ignore"));
            false
        }
    }
}

/// Whether `s` starts with the `active` profiles (a service without
/// profiles always does).
pub fn enabled(s: &Service, active: &[String]) -> bool {
    s.profiles.is_empty() || s.profiles.iter().any(|p| active.contains(p))
}

/// Apply the active profiles: a service none of whose profiles is active
/// does not start by itself (it can still be started by `ctl start`). A
/// service that would start but waits (`after`) for one that will not is
/// an error naming both.
pub fn apply_profiles(cfg: &mut Config, active: &[String]) -> Vec<Diag> {
    let mut errors = Vec::new();
    for p in active {
        if !valid_profile(p) {
            errors.push(Diag::file(
                Path::new("--profile"),
                format!("`{p}` is not a profile name (letters, digits, _ . -)"),
            ));
        }
    }
    let off: Vec<String> = cfg
        .services
        .iter()
        .filter(|s| !enabled(s, active))
        .map(|s| s.name.clone())
        .collect();
    for s in &cfg.services {
        if !enabled(s, active) {
            continue;
        }
        for dep in s.after.iter().filter(|a| off.contains(a)) {
            let theirs = cfg
                .services
                .iter()
                .find(|o| &o.name == dep)
                .map(|o| o.profiles.join(", "))
                .unwrap_or_default();
            errors.push(Diag::new(
                &s.origin.file,
                s.origin.pos,
                format!(
                    "service {} runs after {dep}, which the active profiles ({}) do not start (its profiles: {theirs}): activate one of them (--profile, MC_PROFILES) or give {} the same profiles",
                    s.name,
                    if active.is_empty() { "none".to_string() } else { active.join(", ") },
                    s.name
                ),
            ));
        }
    }
    for s in cfg.services.iter_mut() {
        if off.contains(&s.name) {
            s.autostart = false;
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, profiles: &[&str], after: &[&str]) -> Service {
        let mut s = Service::new(name, vec!["true".into()]);
        s.profiles = profiles.iter().map(|p| p.to_string()).collect();
        s.after = after.iter().map(|a| a.to_string()).collect();
        s
    }

    #[test]
    fn profile_table() {
        // (active profiles, services that start, errors naming both ends)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (&[], &["web"], &[]),
            (&["debug"], &["web", "debug", "tools"], &[]),
            (&["tools"], &["web", "tools"], &[]),
            (&["x"], &["web", "app"], &[("app", "debug")]),
            (&["x", "debug"], &["web", "debug", "tools", "app"], &[]),
        ];
        for (active, started, errors) in cases {
            let mut cfg = Config::plain("/srv".into(), None);
            cfg.services = vec![
                svc("web", &[], &[]),
                svc("debug", &["debug"], &[]),
                svc("tools", &["tools", "debug"], &[]),
                svc("app", &["x"], &["debug"]),
            ];
            let active: Vec<String> = active.iter().map(|p| p.to_string()).collect();
            let errs = apply_profiles(&mut cfg, &active);
            let on: Vec<&str> = cfg
                .services
                .iter()
                .filter(|s| s.autostart)
                .map(|s| s.name.as_str())
                .collect();
            assert_eq!(on, *started, "{active:?}");
            assert_eq!(errs.len(), errors.len(), "{active:?}: {errs:?}");
            for (svc, dep) in errors.iter() {
                assert!(
                    errs.iter()
                        .any(|e| e.msg.contains(&format!("service {svc} runs after {dep}"))),
                    "{active:?}: {errs:?}"
                );
            }
        }
        let mut cfg = Config::plain("/srv".into(), None);
        assert_eq!(apply_profiles(&mut cfg, &["bad name".into()]).len(), 1);
    }
}
