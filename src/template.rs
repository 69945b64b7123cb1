//! The minijinja set-up shared by the config, templates and pillars:
//! trailing newlines kept and no block trimming (so rendered line numbers are
//! the source's), and errors turned into `file:line` diagnostics.
//!
//! Every environment has a budget: the pillar override comes from the data
//! volume, and a template must be refused, never hang the launcher or
//! exhaust its memory.

use crate::error::{Diag, Pos};
use std::path::Path;

/// minijinja's fuel for one render: one unit per instruction run, and one
/// per 64 bytes of data the template creates or outputs. Half a million
/// allows as many instructions (a fraction of a second) or 32 MiB of
/// strings (a concatenation holds both operands and the result for a
/// moment: about 64 MiB at the peak); the configs, pillars and templates of
/// an image use a few thousand. Nested loops and string-repetition loops
/// run out of it and stop with an error.
pub const FUEL: u64 = 500_000;

/// How deep loops, blocks, macros (4 each) and includes (10 each) may nest
/// while rendering: below minijinja's own ceiling (500), enough for a
/// recursive macro 50 levels down.
pub const RECURSION_LIMIT: usize = 200;

pub fn environment(strict: bool) -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // minijinja escapes values by file extension (JSON for .yml, HTML for
    // .html); configs, pillars and rendered files are raw text.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    if strict {
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    }
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true);
    if let Ok(s) = syntax.build() {
        env.set_syntax(s);
    }
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env
}

/// The most a render may output (config, pillar, `template` step): what
/// is rendered is then parsed or written whole, so it is bounded, not
/// only the work that made it (a 50-byte `{{ "1," * 7800000 }}` stays
/// within the fuel and renders 15 MB).
pub const MAX_RENDERED: usize = 4 << 20;

/// Why a render failed: the template's error, or its output passing
/// [`MAX_RENDERED`] on output line `line` (rendered lines are the source's).
#[derive(Debug)]
pub enum Failure {
    Jinja(minijinja::Error),
    TooBig { line: usize },
}

impl Failure {
    /// A budget ran out (refused, never retried another way).
    pub fn is_budget(&self) -> bool {
        match self {
            Failure::Jinja(e) => is_budget(e),
            Failure::TooBig { .. } => true,
        }
    }

    pub fn diag(&self, file: &Path) -> Diag {
        match self {
            Failure::Jinja(e) => diag(file, e),
            Failure::TooBig { line } => Diag::new(
                file,
                Pos::new(*line, 0),
                format!(
                    "template error: rendering stopped (the output passed the limit of {} MiB)",
                    MAX_RENDERED >> 20
                ),
            ),
        }
    }
}

/// A writer that refuses to grow past [`MAX_RENDERED`].
struct Bounded {
    out: Vec<u8>,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len().saturating_add(buf.len()) > MAX_RENDERED {
            self.over = true;
            return Err(std::io::Error::other("rendered output over the limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Render `t` with `ctx`, its output bounded by [`MAX_RENDERED`].
pub fn render_bounded(
    t: &minijinja::Template<'_, '_>,
    ctx: impl Into<minijinja::Value>,
) -> Result<String, Failure> {
    let mut w = Bounded {
        out: Vec::new(),
        over: false,
    };
    let res = t.render_captured_to(ctx.into(), &mut w);
    if w.over {
        let line = 1 + w.out.iter().filter(|&&b| b == b'\n').count();
        return Err(Failure::TooBig { line });
    }
    res.map_err(Failure::Jinja)?;
    // Rendered from UTF-8 text and values: always UTF-8.
    String::from_utf8(w.out).map_err(|e| {
        Failure::Jinja(minijinja::Error::new(
            minijinja::ErrorKind::BadSerialization,
            e.to_string(),
        ))
    })
}

/// Whether `e` is a budget running out (fuel or recursion), rather than a
/// mistake in the template: such a template is refused, never retried
/// another way.
pub fn is_budget(e: &minijinja::Error) -> bool {
    match e.kind() {
        minijinja::ErrorKind::OutOfFuel => true,
        minijinja::ErrorKind::InvalidOperation => {
            e.detail().is_some_and(|d| d.contains("recursion limit"))
        }
        _ => false,
    }
}

/// A minijinja error as `file:line: template error: …`.
pub fn diag(file: &Path, e: &minijinja::Error) -> Diag {
    let mut msg = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        msg = format!("undefined variable ({msg})");
    } else if e.kind() == minijinja::ErrorKind::OutOfFuel {
        msg = format!(
            "rendering stopped (out of fuel: the template does too much work, limit {FUEL})"
        );
    } else if is_budget(e) {
        msg = format!("{msg} (loops, macros or includes nested too deep, limit {RECURSION_LIMIT})");
    }
    Diag::new(
        file,
        Pos::new(e.line().unwrap_or(0), 0),
        format!("template error: {msg}"),
    )
}

/// Render `text` (named after `file` in errors) with `ctx`.
pub fn render(
    file: &Path,
    text: &str,
    ctx: minijinja::Value,
    strict: bool,
) -> Result<String, Diag> {
    let env = environment(strict);
    let name = file.to_string_lossy();
    let t = env
        .template_from_named_str(&name, text)
        .map_err(|e| diag(file, &e))?;
    render_bounded(&t, ctx).map_err(|f| f.diag(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> Result<String, Diag> {
        render(Path::new("t.j2"), text, minijinja::context! {}, true)
    }

    #[test]
    fn budgets_refuse_runaway_templates() {
        // (template, line of the refusal, part of the message)
        let rows: &[(&str, usize, &str)] = &[
            (
                "a\n{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n",
                2,
                "out of fuel: the template does too much work, limit 500000",
            ),
            (
                "{% for a in range(100000) %}{% set s = 'x' * 99999999 %}{% endfor %}\n",
                1,
                "out of fuel",
            ),
            ("{{ 'x' * 1000000000 }}\n", 1, "out of fuel"),
            ("\n\n{{ 'x' * 90000000 }}\n", 3, "out of fuel"),
            (
                "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}\n",
                1,
                "out of fuel",
            ),
            (
                "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}\n",
                1,
                "nested too deep, limit 200",
            ),
        ];
        for (text, line, part) in rows {
            let d = r(text).expect_err(text);
            assert_eq!(d.pos.line, *line, "{text:?}: {d}");
            assert!(d.msg.contains(part), "{text:?}: {d}");
            assert!(d.to_string().starts_with("t.j2:"), "{d}");
        }
    }

    /// The pillar override is validated with its own environment (salt
    /// stubs, chainable undefined): the budgets hold there too, and running
    /// out of them is a refusal, not a reason to check the YAML without
    /// jinja.
    #[test]
    fn ordinary_templates_fit_the_budget() {
        let text = "{% for i in range(2000) %}{% for j in range(10) %}{{ i * j }},{% endfor %}\n{% endfor %}";
        let out = r(text).expect("within the budget");
        assert_eq!(out.lines().count(), 2000);
        let macros = "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ f(20) }}";
        assert!(r(macros)
            .expect("recursion within the limit")
            .ends_with("1920"));
    }
}
