//! Step 1 of the prepare phase: the operator's pillar override.
//!
//! The image's `init.sls` is saved once in the state dir. A valid override
//! from the volume replaces it atomically; when the override goes away the
//! saved default comes back. An invalid override is never installed, and
//! never leaves an earlier override in place: the image default comes back
//! (README "Read-only and non-root containers").
//!
//! The override is resolved and read in one open beneath the volume's fd
//! (links followed only while they stay in the volume: Kubernetes `..data`
//! mounts), non-blocking, checked to be a regular file on the fd, and read
//! up to [`OVERRIDE_LIMIT`].

use crate::config::model::{Config, OnInvalid};
use crate::error::{Diag, Pos};
use crate::fsutil::{self, FsError, Refusal};
use minijinja::value::{Object, Value};
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The biggest override read: a pillar is a few KiB of YAML.
pub const OVERRIDE_LIMIT: u64 = 1 << 20;

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Installed(PathBuf),
    Restored,
    Unchanged,
    NoOverride,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Installed(p) => write!(f, "installed the override {}", p.display()),
            Outcome::Restored => write!(f, "override removed: the image default is back"),
            Outcome::Unchanged => write!(f, "override already in place"),
            Outcome::NoOverride => write!(f, "no override: the image default stays"),
        }
    }
}

/// What is installed after an invalid override was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// An earlier override was there: the saved image default replaced it.
    Restored,
    /// The image default was already the target.
    AlreadyDefault,
    /// The image has no pillar of its own: the earlier override was removed.
    RemovedOverride,
    /// The image has no pillar of its own, and none is installed.
    Nothing,
    /// No saved image default to restore (the state dir was lost): the
    /// target is left as it is.
    Unknown { saved: PathBuf, target: PathBuf },
    /// `on_invalid: last-good`: the last valid override, from this copy.
    LastGood(PathBuf),
    /// `on_invalid: last-good` without a copy: the image default was
    /// installed (or was already).
    NoLastGood(PathBuf, Box<Installed>),
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Installed::Restored => write!(f, "the image default is installed (restored)"),
            Installed::AlreadyDefault => {
                write!(f, "the image default is installed (it already was)")
            }
            Installed::RemovedOverride => write!(
                f,
                "the image has no pillar of its own: the earlier override was removed"
            ),
            Installed::Nothing => {
                write!(f, "the image has no pillar of its own: none is installed")
            }
            Installed::Unknown { saved, target } => write!(
                f,
                "the image default cannot be restored (no saved copy at {}): {} is left as it is",
                saved.display(),
                target.display()
            ),
            Installed::LastGood(copy) => write!(
                f,
                "the last valid override is installed (from {})",
                copy.display()
            ),
            Installed::NoLastGood(copy, installed) => write!(
                f,
                "no last valid override to start on ({} does not exist); {installed}",
                copy.display()
            ),
        }
    }
}

#[derive(Debug)]
pub enum PillarError {
    /// The override is not valid; what is installed instead.
    Invalid(Diag, Installed),
    Io(FsError),
}

impl fmt::Display for PillarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PillarError::Invalid(d, installed) => write!(f, "{d}; {installed}"),
            PillarError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<FsError> for PillarError {
    fn from(e: FsError) -> Self {
        PillarError::Io(e)
    }
}

/// Stands for salt's `salt`, `grains`, `pillar`, `opts`: any attribute,
/// item or call gives another stub, rendered as nothing. Salt fills these in
/// at run time; validation only needs the template to render.
#[derive(Debug)]
struct SaltStub;

impl Object for SaltStub {
    fn get_value(self: &Arc<Self>, _key: &Value) -> Option<Value> {
        Some(Value::from_object(SaltStub))
    }
    fn call(
        self: &Arc<Self>,
        _: &mut minijinja::State<'_, '_>,
        _: &[Value],
    ) -> Result<Value, minijinja::Error> {
        Ok(Value::from(""))
    }
    fn call_method(
        self: &Arc<Self>,
        _: &mut minijinja::State<'_, '_>,
        _: &str,
        _: &[Value],
    ) -> Result<Value, minijinja::Error> {
        Ok(Value::from(""))
    }
    fn is_true(self: &Arc<Self>) -> bool {
        false
    }
    fn render(self: &Arc<Self>, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

/// Salt-only tags, rewritten to something minijinja renders, on the same
/// line: imports bind a stub, includes vanish.
fn rewrite_salt_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest.get(start..).and_then(|r| r.find("%}")) else {
            break;
        };
        let (before, tag_and_after) = rest.split_at(start);
        out.push_str(before);
        let tag = tag_and_after.get(..len + 2).unwrap_or(tag_and_after);
        let inner = tag
            .trim_start_matches("{%")
            .trim_end_matches("%}")
            .trim_matches(|c| c == '-' || c == '+')
            .trim();
        let word = inner.split_whitespace().next().unwrap_or("");
        let newlines = "\n".repeat(tag.matches('\n').count());
        let replacement = match word {
            "import_yaml" | "import_json" | "import_text" | "import" | "load_yaml"
            | "load_json" | "load_text" => {
                let name = inner
                    .rsplit(" as ")
                    .next()
                    .filter(|_| inner.contains(" as "))
                    .unwrap_or("")
                    .trim();
                if name.is_empty() {
                    newlines
                } else {
                    format!("{{% set {name} = salt %}}{newlines}")
                }
            }
            "endload" | "include" => newlines,
            "from" => {
                let names = inner.split(" import ").nth(1).unwrap_or("");
                let sets: String = names
                    .split(',')
                    .map(|n| n.split(" as ").last().unwrap_or("").trim())
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("{{% set {n} = salt %}}"))
                    .collect();
                format!("{sets}{newlines}")
            }
            _ => tag.to_string(),
        };
        out.push_str(&replacement);
        rest = tag_and_after.get(len + 2..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Blank every jinja construct, keeping line numbers, for a last-resort
/// YAML check of a pillar that only salt can render.
fn blank_jinja(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|o| rest.find(o).map(|i| (i, *o)))
            .min();
        let Some((i, open)) = next else { break };
        let close = match open {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        out.push_str(rest.get(..i).unwrap_or(""));
        let after = rest.get(i..).unwrap_or("");
        let Some(end) = after.find(close) else { break };
        let construct = after.get(..end + 2).unwrap_or("");
        if open == "{{" {
            out.push_str("jinja");
        }
        out.push_str(&"\n".repeat(construct.matches('\n').count()));
        rest = after.get(end + 2..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// The largest pillar `validate` accepts (the override comes from the volume).
pub const MAX_PILLAR_BYTES: usize = 1 << 20;

/// Validate a pillar and return its data: render what minijinja can, then
/// parse as YAML; the top level must be a mapping (or empty). The template
/// and YAML budgets apply (crate::template, crate::yaml), and so does
/// [`MAX_PILLAR_BYTES`].
pub fn validate(path: &Path, text: &str) -> Result<serde_json::Value, Diag> {
    if text.len() > MAX_PILLAR_BYTES {
        return Err(Diag::file(
            path,
            format!(
                "the pillar is {} bytes, over the limit of {} MiB",
                text.len(),
                MAX_PILLAR_BYTES >> 20
            ),
        ));
    }
    // A `#!` renderer line: keep the line (as a comment) so numbering holds.
    let (renderer, body) = match text.strip_prefix("#!") {
        Some(rest) => {
            let first = rest.lines().next().unwrap_or("");
            (
                first.to_string(),
                format!("#{}", text.get(1..).unwrap_or("")),
            )
        }
        None => (String::from("jinja|yaml"), text.to_string()),
    };
    let uses_jinja = renderer.contains("jinja")
        && (body.contains("{{") || body.contains("{%") || body.contains("{#"));
    let yaml_text = if uses_jinja {
        let mut env = crate::template::environment(false);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for name in [
            "salt",
            "grains",
            "pillar",
            "opts",
            "__salt__",
            "__grains__",
            "__pillar__",
            "__opts__",
        ] {
            env.add_global(name, Value::from_object(SaltStub));
        }
        env.add_global("saltenv", "base");
        let rewritten = rewrite_salt_tags(&body);
        let name = path.to_string_lossy();
        match env
            .template_from_named_str(&name, &rewritten)
            .map_err(crate::template::Failure::Jinja)
            .and_then(|t| crate::template::render_bounded(&t, ()))
        {
            Ok(out) => out,
            // Out of fuel, too deep or too big: refused, not retried
            // without jinja.
            Err(f) if f.is_budget() => {
                return Err(f.diag(path));
            }
            Err(e) => {
                // Salt-only syntax (a salt filter, an extension tag): check
                // the YAML around the templating instead.
                log::debug!("{}: rendered as salt would only: {e:?}", path.display());
                blank_jinja(&body)
            }
        }
    } else {
        body
    };
    let doc = crate::yaml::parse(&yaml_text, path)?;
    if doc.is_null() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    if doc.as_map().is_none() {
        return Err(Diag::new(
            path,
            doc.pos,
            format!(
                "a pillar must be a mapping at the top level, found {}",
                doc.kind()
            ),
        ));
    }
    Ok(doc.to_json())
}

/// Why the override was not used, before anything is installed.
enum Refused {
    Invalid(Diag),
    Io(FsError),
}

/// The directory the override is resolved beneath: the volume when it lies
/// in it, else its own directory.
fn override_root(cfg: &Config) -> PathBuf {
    let src = &cfg.pillar.source;
    if fsutil::under(src, &cfg.paths.volume).is_some() {
        return cfg.paths.volume.clone();
    }
    src.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The override's text, resolved and read in one open (see the module
/// doc); `Ok(None)`: there is no override. Refusals (a link out of the
/// volume, a FIFO, too big) and text that is not UTF-8 make an invalid
/// override; other I/O errors are I/O errors.
fn read_override(cfg: &Config) -> Result<Option<String>, Refused> {
    let src = &cfg.pillar.source;
    let root = override_root(cfg);
    let bytes = match fsutil::read_file_in(src, Some(&root), OVERRIDE_LIMIT) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => {
            let msg = match e.refusal() {
                Some(Refusal::Outside(_)) => format!(
                    "refused: the override leads outside the volume {}",
                    root.display()
                ),
                Some(Refusal::Kind { found, .. }) => {
                    format!("the override is {found}, not a regular file: refused")
                }
                Some(r @ Refusal::TooBig(_)) => format!("the override {r}"),
                Some(r) => format!("the override {r}"),
                None if e.err.raw_os_error() == Some(nix::libc::ELOOP) => {
                    "refused: too many levels of symbolic links".to_string()
                }
                None if e.err.raw_os_error() == Some(nix::libc::ENOTDIR) => {
                    format!("cannot read the override: {}", e.err)
                }
                None => return Err(Refused::Io(e)),
            };
            return Err(Refused::Invalid(Diag::file(src, msg)));
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let before = bytes.get(..at).unwrap_or_default();
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1)
                .unwrap_or(0);
            let col = String::from_utf8_lossy(before.get(line_start..).unwrap_or_default())
                .chars()
                .count()
                + 1;
            let byte = bytes.get(at).copied().unwrap_or(0);
            Err(Refused::Invalid(Diag::new(
                src,
                Pos::new(line, col),
                format!("not valid UTF-8 (byte 0x{byte:02x}): a pillar is UTF-8 text"),
            )))
        }
    }
}

/// The override's text if there is one that can be read as the prepare
/// phase reads it (for the preflight, which only needs to know).
pub fn override_text(cfg: &Config) -> Option<String> {
    read_override(cfg).ok().flatten()
}

fn saved_default(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("image-pillar.sls")
}

/// Says that the image had no `init.sls` of its own on the first start.
fn saved_absent(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("image-pillar.absent")
}

/// Check the override, writing nothing.
pub fn check(cfg: &Config) -> Vec<Diag> {
    match read_override(cfg) {
        Ok(None) => Vec::new(),
        Ok(Some(text)) => validate(&cfg.pillar.source, &text)
            .err()
            .into_iter()
            .collect(),
        Err(Refused::Invalid(d)) => vec![d],
        Err(Refused::Io(e)) => vec![Diag::file(
            &cfg.pillar.source,
            format!("cannot read: {}", e.err),
        )],
    }
}

/// The copy of the last valid override installed (`on_invalid:
/// last-good` starts on it).
pub fn last_good(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("pillar-last-good.sls")
}

/// What the step is going to install, read and validated once, before
/// anything is written (a live reconfigure renders its templates against
/// it first: README "Live reconfigure").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A valid override: its text.
    Override(String),
    /// No override: the image default.
    Default,
    /// The override is invalid.
    Invalid(Diag),
}

/// Read and validate the override, writing nothing.
pub fn plan(cfg: &Config) -> Result<Plan, FsError> {
    match read_override(cfg) {
        Ok(None) => Ok(Plan::Default),
        Ok(Some(text)) => Ok(match validate(&cfg.pillar.source, &text) {
            Ok(_) => Plan::Override(text),
            Err(d) => Plan::Invalid(d),
        }),
        Err(Refused::Invalid(d)) => Ok(Plan::Invalid(d)),
        Err(Refused::Io(e)) => Err(e),
    }
}

/// The text the target holds once `plan` is installed (`None`: no file);
/// an invalid plan installs nothing live.
pub fn text_after(cfg: &Config, plan: &Plan) -> Option<String> {
    let current = || std::fs::read_to_string(&cfg.pillar.target).ok();
    match plan {
        Plan::Override(text) => Some(text.clone()),
        Plan::Invalid(_) => current(),
        Plan::Default => match std::fs::read_to_string(saved_default(cfg)) {
            Ok(t) => Some(t),
            Err(_) if saved_absent(cfg).exists() => None,
            Err(_) => current(),
        },
    }
}

/// Run the step.
pub fn apply(cfg: &Config) -> Result<Outcome, PillarError> {
    apply_plan(cfg, || plan(cfg))
}

/// Run the step with the plan `plan` makes (after the image default is
/// saved, on the first start).
pub fn apply_plan(
    cfg: &Config,
    plan: impl FnOnce() -> Result<Plan, FsError>,
) -> Result<Outcome, PillarError> {
    let target = &cfg.pillar.target;
    let saved = saved_default(cfg);
    let absent = saved_absent(cfg);
    // First start: keep the image's own pillar (or that it had none), once.
    if !saved.exists() && !absent.exists() {
        fsutil::ensure_dir(&cfg.paths.state, 0o700, None)?;
        match std::fs::read(target).ok() {
            Some(bytes) => fsutil::write_atomic(&saved, &bytes, 0o600, None)?,
            None => fsutil::write_atomic(&absent, b"", 0o600, None)?,
        }
    }
    install(cfg, plan()?)
}

/// Install what `plan` said: the override (its copy kept as the last good
/// one), or the image default; an invalid one is never installed — the
/// last good one is with `on_invalid: last-good`, else the image default.
pub fn install(cfg: &Config, plan: Plan) -> Result<Outcome, PillarError> {
    let target = &cfg.pillar.target;
    let current = std::fs::read(target).ok();
    // The target keeps its own mode and owner: never the source's.
    let (mode, owner) = match std::fs::metadata(target) {
        Ok(md) => (
            md.permissions().mode() & 0o7777,
            Some((
                nix::unistd::Uid::from_raw(md.uid()),
                nix::unistd::Gid::from_raw(md.gid()),
            )),
        ),
        Err(_) => (0o640, None),
    };
    match plan {
        Plan::Invalid(d) => {
            let installed = match cfg.pillar.on_invalid {
                OnInvalid::LastGood => {
                    match install_last_good(cfg, current.as_deref(), mode, owner)? {
                        Some(i) => i,
                        None => Installed::NoLastGood(
                            last_good(cfg),
                            Box::new(restore_default(cfg, current.as_deref(), mode, owner)?),
                        ),
                    }
                }
                _ => restore_default(cfg, current.as_deref(), mode, owner)?,
            };
            Err(PillarError::Invalid(d, installed))
        }
        Plan::Override(text) => {
            keep_last_good(cfg, &text);
            if current.as_deref() == Some(text.as_bytes()) {
                return Ok(Outcome::Unchanged);
            }
            if let Some(dir) = target.parent() {
                fsutil::at(dir, std::fs::create_dir_all(dir))?;
            }
            fsutil::write_atomic(target, text.as_bytes(), mode, owner)?;
            Ok(Outcome::Installed(cfg.pillar.source.clone()))
        }
        Plan::Default => Ok(
            match restore_default(cfg, current.as_deref(), mode, owner)? {
                Installed::Restored | Installed::RemovedOverride => Outcome::Restored,
                _ => Outcome::NoOverride,
            },
        ),
    }
}

/// Keep `text` as the last valid override (with `on_invalid: last-good`
/// only: nobody else reads it). A copy that cannot be written is said,
/// and the start goes on.
fn keep_last_good(cfg: &Config, text: &str) {
    if cfg.pillar.on_invalid != OnInvalid::LastGood {
        return;
    }
    let copy = last_good(cfg);
    if std::fs::read(&copy).ok().as_deref() == Some(text.as_bytes()) {
        return;
    }
    let kept = fsutil::ensure_dir(&cfg.paths.state, 0o700, None)
        .and_then(|()| fsutil::write_atomic(&copy, text.as_bytes(), 0o600, None));
    // Said once (a live reconfigure tries again at every change), with
    // what must be writable (`--read-only` without a tmpfs).
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = kept {
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log::warn!(
                "pillar: cannot keep the last valid override: {e}; {}",
                super::state_dir_hint(&cfg.paths.state)
            );
        }
    }
}

/// Install the last valid override's copy, when there is one still valid.
fn install_last_good(
    cfg: &Config,
    current: Option<&[u8]>,
    mode: u32,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<Option<Installed>, FsError> {
    let copy = last_good(cfg);
    let Ok(text) = std::fs::read_to_string(&copy) else {
        return Ok(None);
    };
    if validate(&copy, &text).is_err() {
        return Ok(None);
    }
    if current != Some(text.as_bytes()) {
        fsutil::write_atomic(&cfg.pillar.target, text.as_bytes(), mode, owner)?;
    }
    Ok(Some(Installed::LastGood(copy)))
}

/// Make the target the image default again: the saved copy, or no file
/// when the image had none.
fn restore_default(
    cfg: &Config,
    current: Option<&[u8]>,
    mode: u32,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<Installed, FsError> {
    let target = &cfg.pillar.target;
    let saved = saved_default(cfg);
    match std::fs::read(&saved) {
        Ok(default) if current == Some(&default[..]) => Ok(Installed::AlreadyDefault),
        Ok(default) => {
            fsutil::write_atomic(target, &default, mode, owner)?;
            Ok(Installed::Restored)
        }
        Err(_) if saved_absent(cfg).exists() => match current {
            Some(_) => {
                fsutil::at(target, std::fs::remove_file(target))?;
                Ok(Installed::RemovedOverride)
            }
            None => Ok(Installed::Nothing),
        },
        Err(_) => Ok(Installed::Unknown {
            saved,
            target: target.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::tests::{assert_refusals, budget_attacks};

    fn v(text: &str) -> Result<serde_json::Value, Diag> {
        validate(Path::new("pillar.sls"), text)
    }

    #[test]
    fn salt_flavoured_pillars_are_valid() {
        let rows = [
            "a: {{ salt['mc_utils.generate_password']() }}\n",
            "{% if grains['os'] == 'Debian' %}\nos: debian\n{% endif %}\nb: 1\n",
            "{% import_yaml 'defaults.yaml' as defaults %}\nx: {{ defaults.port }}\n",
            "{% from 'map.jinja' import settings with context %}\nx: {{ settings.name }}\n",
            "#!jinja|yaml\nx: {{ pillar.get('a:b', 'c') }}\n",
            "#!yaml\nx: '{{ not rendered }}'\n",
            "{% set p = salt['pillar.get']('makina-projects.x', {}) %}\nx: {{ p | yaml_encode }}\n",
            "x: {{ opts['id'] }}\ny: {{ salt.cmd.run('hostname') }}\n",
            "",
            "# only a comment\n",
        ];
        for text in rows {
            assert!(v(text).is_ok(), "{text:?}: {:?}", v(text));
        }
        assert_eq!(
            v("a:\n  b: 1\n").expect("valid"),
            serde_json::json!({"a": {"b": 1}})
        );
    }

    #[test]
    fn invalid_pillars_name_the_line() {
        let rows: &[(&str, &str, usize, &str)] = &[
            (
                "unclosed",
                "a: 1\nb: [1, 2\n",
                2,
                "unclosed '[' opened at line 2 col 4",
            ),
            ("a list", "- a\n- b\n", 1, "must be a mapping"),
            ("a string", "just a string\n", 1, "must be a mapping"),
            (
                "after a tag",
                "{% set os = grains['os'] %}\na: 1\n  bad: indent\n",
                3,
                "YAML syntax error",
            ),
        ];
        assert_refusals("pillar.sls", rows, v);
    }

    /// What `plan` sees, what a live update would leave (`text_after`) and
    /// what `install` does, by `on_invalid`, with and without a last good
    /// copy: an invalid override is never what the target holds.
    #[test]
    fn plans_and_the_last_good_copy() {
        use crate::fsutil::scratch::Tmp;
        let good = "a:\n  site: one\n";
        let bad = "a: [1, 2\n";
        let default = "a:\n  site: image\n";
        // (override, on_invalid, a copy first, target after, copy after, invalid)
        type Row<'a> = (
            Option<&'a str>,
            OnInvalid,
            bool,
            &'a str,
            Option<&'a str>,
            bool,
        );
        let rows: &[Row] = &[
            (Some(good), OnInvalid::Abort, false, good, None, false),
            (
                Some(good),
                OnInvalid::LastGood,
                false,
                good,
                Some(good),
                false,
            ),
            (None, OnInvalid::LastGood, true, default, Some(good), false),
            (Some(bad), OnInvalid::Abort, true, default, Some(good), true),
            (
                Some(bad),
                OnInvalid::KeepDefault,
                true,
                default,
                Some(good),
                true,
            ),
            (Some(bad), OnInvalid::LastGood, true, good, Some(good), true),
            (Some(bad), OnInvalid::LastGood, false, default, None, true),
        ];
        for (i, (over, policy, copy_first, after, copy_after, invalid)) in rows.iter().enumerate() {
            let t = Tmp::new("pillar-plan");
            let mut cfg = Config::plain(t.path().to_path_buf(), Some("p".into()));
            cfg.paths.state = t.join("state");
            cfg.pillar.on_invalid = *policy;
            t.write("target/init.sls", default);
            cfg.pillar.target = t.join("target/init.sls");
            cfg.pillar.source = t.join("volume/pillar.sls");
            cfg.paths.volume = t.join("volume");
            std::fs::create_dir_all(&cfg.paths.volume).expect("volume");
            if *copy_first {
                t.write("state/pillar-last-good.sls", good);
            }
            if let Some(o) = over {
                t.write("volume/pillar.sls", o);
            }
            let plan = plan(&cfg).expect("plan");
            assert_eq!(matches!(plan, Plan::Invalid(_)), *invalid, "row {i}");
            // A live update never installs an invalid override.
            let live = text_after(&cfg, &plan);
            assert_ne!(live.as_deref(), Some(bad), "row {i}");
            let r = apply(&cfg);
            assert_eq!(r.is_err(), *invalid, "row {i}: {r:?}");
            let target = std::fs::read_to_string(&cfg.pillar.target).ok();
            assert_eq!(target.as_deref(), Some(*after), "row {i}");
            let copy = std::fs::read_to_string(last_good(&cfg)).ok();
            assert_eq!(copy.as_deref(), *copy_after, "row {i}");
        }
    }

    #[test]
    fn salt_tags_are_rewritten_on_their_line() {
        let out = rewrite_salt_tags("{% import_yaml 'x' as y %}\n{% include 'z' %}\nk: v\n");
        assert_eq!(out, "{% set y = salt %}\n\nk: v\n");
        assert_eq!(
            blank_jinja("a: {{ x }}\n{% if y\n %}\nb: 2\n"),
            "a: jinja\n\n\nb: 2\n"
        );
    }

    #[test]
    fn pillar_validation_has_the_budgets() {
        let mut rows = budget_attacks("a: 1");
        rows.push((
            "nested loops over salt",
            "{% for x in range(100000) %}{% for y in range(100000) %}{{ salt['x.y'](y) }}{% endfor %}{% endfor %}\n".into(),
            1,
            "out of fuel",
        ));
        let big = format!("a: 1\n#{}\n", "x".repeat(1 << 20));
        rows.push(("too big", big, 0, "over the limit of 1 MiB"));
        assert_refusals("pillar.sls", &rows, v);
    }
}
