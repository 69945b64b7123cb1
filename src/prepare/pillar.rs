//! Step 1 of the prepare phase: the operator's pillar override.
//!
//! The image's `init.sls` is saved once in the state dir. A valid override
//! from the volume replaces it atomically; when the override goes away the
//! saved default comes back. An invalid override never touches the target.

use crate::config::model::Config;
use crate::error::Diag;
use crate::fsutil::{self, FsError};
use minijinja::value::{Object, Value};
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

#[derive(Debug)]
pub enum PillarError {
    /// The override is not valid: the target was left as it was.
    Invalid(Diag),
    Io(FsError),
}

impl fmt::Display for PillarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PillarError::Invalid(d) => write!(f, "{d}"),
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
            .and_then(|t| t.render(()))
        {
            Ok(out) => out,
            // Out of fuel or too deep: refused, not retried without jinja.
            Err(e) if crate::template::is_budget(&e) => {
                return Err(crate::template::diag(path, &e));
            }
            Err(e) => {
                // Salt-only syntax (a salt filter, an extension tag): check
                // the YAML around the templating instead.
                log::debug!("{}: rendered as salt would only: {e}", path.display());
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

/// Follow `src` through symlinks, each hop staying inside `volume`.
/// `Ok(None)`: there is no override.
pub fn resolve_in_volume(src: &Path, volume: &Path) -> Result<Option<PathBuf>, Diag> {
    let vol = std::fs::canonicalize(volume).unwrap_or_else(|_| volume.to_path_buf());
    let inside = |p: &Path| -> bool {
        // Canonicalize what exists of the path (the last hop may dangle).
        let parent = p.parent().and_then(|d| std::fs::canonicalize(d).ok());
        parent.is_some_and(|d| d.starts_with(&vol))
    };
    let mut cur = src.to_path_buf();
    for _ in 0..40 {
        let md = match std::fs::symlink_metadata(&cur) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Diag::file(&cur, format!("cannot read the override: {e}"))),
        };
        if !inside(&cur) {
            return Err(Diag::file(
                src,
                format!(
                    "refused: the override resolves to {}, outside the volume {}",
                    cur.display(),
                    vol.display()
                ),
            ));
        }
        if !md.file_type().is_symlink() {
            let real = std::fs::canonicalize(&cur).map_err(|e| Diag::file(&cur, e.to_string()))?;
            if !real.starts_with(&vol) {
                return Err(Diag::file(
                    src,
                    format!(
                        "refused: the override resolves to {}, outside the volume {}",
                        real.display(),
                        vol.display()
                    ),
                ));
            }
            if !md.is_file() {
                return Err(Diag::file(src, "the override is not a regular file"));
            }
            return Ok(Some(real));
        }
        let target = std::fs::read_link(&cur).map_err(|e| Diag::file(&cur, e.to_string()))?;
        cur = match cur.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    Err(Diag::file(
        src,
        "refused: too many levels of symbolic links",
    ))
}

fn saved_default(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("image-pillar.sls")
}

/// Check the override, writing nothing.
pub fn check(cfg: &Config) -> Vec<Diag> {
    match resolve_in_volume(&cfg.pillar.source, &cfg.paths.volume) {
        Ok(None) => Vec::new(),
        Ok(Some(real)) => match std::fs::read_to_string(&real) {
            Ok(text) => validate(&cfg.pillar.source, &text)
                .err()
                .into_iter()
                .collect(),
            Err(e) => vec![Diag::file(&cfg.pillar.source, format!("cannot read: {e}"))],
        },
        Err(d) => vec![d],
    }
}

/// Run the step.
pub fn apply(cfg: &Config) -> Result<Outcome, PillarError> {
    let target = &cfg.pillar.target;
    let saved = saved_default(cfg);
    let current = std::fs::read(target).ok();
    // First start: keep the image's own pillar, once.
    if let (Some(bytes), false) = (&current, saved.exists()) {
        fsutil::ensure_dir(&cfg.paths.state, 0o700, None)?;
        fsutil::write_atomic(&saved, bytes, 0o600, None)?;
    }
    let src =
        resolve_in_volume(&cfg.pillar.source, &cfg.paths.volume).map_err(PillarError::Invalid)?;
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
    match src {
        Some(real) => {
            let text = fsutil::at(&real, std::fs::read_to_string(&real))?;
            validate(&cfg.pillar.source, &text).map_err(PillarError::Invalid)?;
            if current.as_deref() == Some(text.as_bytes()) {
                return Ok(Outcome::Unchanged);
            }
            if let Some(dir) = target.parent() {
                fsutil::at(dir, std::fs::create_dir_all(dir))?;
            }
            fsutil::write_atomic(target, text.as_bytes(), mode, owner)?;
            Ok(Outcome::Installed(cfg.pillar.source.clone()))
        }
        None => match std::fs::read(&saved) {
            Ok(default) if current.as_deref() != Some(&default[..]) => {
                fsutil::write_atomic(target, &default, mode, owner)?;
                Ok(Outcome::Restored)
            }
            _ => Ok(Outcome::NoOverride),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let rows: &[(&str, usize, &str)] = &[
            ("a: 1\nb: [1, 2\n", 3, "YAML syntax error"),
            ("- a\n- b\n", 1, "must be a mapping"),
            ("just a string\n", 1, "must be a mapping"),
            (
                "{% set os = grains['os'] %}\na: 1\n  bad: indent\n",
                3,
                "YAML syntax error",
            ),
        ];
        for (text, line, part) in rows {
            let d = v(text).expect_err(text);
            assert_eq!(d.pos.line, *line, "{text:?}: {d}");
            assert!(d.msg.contains(part), "{text:?}: {d}");
            assert!(d.to_string().starts_with("pillar.sls:"), "{d}");
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
        let bomb = crate::yaml::tests::alias_bomb();
        let deep = format!("a:\n  {}x\n", "- ".repeat(100_000));
        let big = format!("a: 1\n#{}\n", "x".repeat(1 << 20));
        let rows: &[(&str, &str, usize, &str)] = &[
            (
                "nested loops",
                "a: 1\n{% for x in range(100000) %}{% for y in range(100000) %}{% endfor %}{% endfor %}\n",
                2,
                "out of fuel: the template does too much work",
            ),
            (
                "nested loops over salt",
                "{% for x in range(100000) %}{% for y in range(100000) %}{{ salt['x.y'](y) }}{% endfor %}{% endfor %}\n",
                1,
                "out of fuel",
            ),
            (
                "string repetition",
                "{% for x in range(100000) %}{% set s = 'x' * 99999999 %}{% endfor %}\na: 1\n",
                1,
                "out of fuel",
            ),
            ("alias bomb", &bomb, 5, "alias expansion exceeds 100000 nodes"),
            ("deep nesting", &deep, 2, "nested deeper than 256 levels"),
            ("too big", &big, 0, "over the limit of 1 MiB"),
        ];
        for (what, text, line, part) in rows {
            let d = validate(Path::new("pillar.sls"), text).expect_err(what);
            assert_eq!(d.pos.line, *line, "{what}: {d}");
            assert!(d.msg.contains(part), "{what}: {d}");
        }
    }
}
