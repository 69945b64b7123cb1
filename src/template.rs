//! The minijinja set-up shared by the config, templates and pillars:
//! trailing newlines kept and no block trimming (so rendered line numbers are
//! the source's), and errors turned into `file:line` diagnostics.

use crate::error::{Diag, Pos};
use std::path::Path;

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
    env
}

/// A minijinja error as `file:line: template error: …`.
pub fn diag(file: &Path, e: &minijinja::Error) -> Diag {
    let mut msg = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        msg = format!("undefined variable ({msg})");
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
    env.template_from_named_str(&name, text)
        .and_then(|t| t.render(ctx))
        .map_err(|e| diag(file, &e))
}
