//! The minijinja set-up shared by the config, templates and pillars:
//! trailing newlines kept and no block trimming (so rendered line numbers are
//! the source's), and errors turned into `file:line` diagnostics.
//!
//! Every environment has a budget: the pillar override comes from the data
//! volume, and a template must be refused, never hang the launcher or
//! exhaust its memory.

use crate::error::{Diag, Pos};
use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};

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
        // minijinja's own `tojson` writes an undefined value as `null`,
        // strict or not: `{{ data.port | tojson }}` over a pillar that
        // says `data: null` rendered `"port": null` and went on. Strict,
        // it is an undefined value like any other (the engine still
        // charges fuel for what the filter returns).
        env.add_filter(
            "tojson",
            |value: &Value,
             indent: Option<Value>,
             args: minijinja::value::Kwargs|
             -> Result<Value, minijinja::Error> {
                if value.is_undefined() {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::UndefinedError,
                        "undefined value passed to tojson",
                    ));
                }
                minijinja::filters::tojson(value, indent, args)
            },
        );
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
    TooBig {
        line: usize,
    },
    /// An undefined value, traced to the name the template looked up
    /// (`env.MC_PORT`, `pillar.makina-projects.example.data`) and the
    /// source line where the render stopped.
    Undefined {
        err: minijinja::Error,
        name: String,
        /// What the name holds when it is there but is no mapping
        /// (`none`, `a number`): the template looked into it.
        holds: Option<&'static str>,
        used: String,
    },
}

impl Failure {
    /// A budget ran out (refused, never retried another way).
    pub fn is_budget(&self) -> bool {
        match self {
            Failure::Jinja(e) => is_budget(e),
            Failure::TooBig { .. } => true,
            Failure::Undefined { .. } => false,
        }
    }

    pub fn diag(&self, file: &Path) -> Diag {
        match self {
            Failure::Jinja(e) => diag(file, e),
            Failure::Undefined {
                err,
                name,
                holds,
                used,
            } => {
                let what = match (name.strip_prefix("pillar."), holds) {
                    (Some(key), None) => format!("the pillar has no `{key}`"),
                    (Some(key), Some(h)) => {
                        format!("the pillar's `{key}` is {h}, not a mapping")
                    }
                    (None, None) => format!("undefined variable `{name}`"),
                    (None, Some(h)) => format!("`{name}` is {h}, not a mapping"),
                };
                Diag::new(
                    file,
                    Pos::new(err.line().unwrap_or(0), 0),
                    format!("template error: {what} (used in `{used}`)"),
                )
            }
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
    let ctx: Value = ctx.into();
    let res = t.render_captured_to(ctx.clone(), &mut w);
    if w.over {
        let line = 1 + w.out.iter().filter(|&&b| b == b'\n').count();
        return Err(Failure::TooBig { line });
    }
    match res {
        Err(e) if e.kind() == minijinja::ErrorKind::UndefinedError => {
            return Err(match trace_undefined(t, ctx, &e) {
                Some((name, holds, used)) => Failure::Undefined {
                    err: e,
                    name,
                    holds,
                    used,
                },
                None => Failure::Jinja(e),
            });
        }
        other => other.map_err(Failure::Jinja)?,
    };
    // Rendered from UTF-8 text and values: always UTF-8.
    String::from_utf8(w.out).map_err(|e| {
        Failure::Jinja(minijinja::Error::new(
            minijinja::ErrorKind::BadSerialization,
            e.to_string(),
        ))
    })
}

/// A map of the context that remembers every key looked up and not found,
/// by its path from the root (`env.MC_PORT`), nested maps wrapped in turn.
/// Only for a second render of a template that failed on an undefined
/// value, to name it: minijinja says where (the line), not what.
#[derive(Debug)]
struct Traced {
    value: Value,
    path: String,
    misses: Arc<Mutex<Vec<Look>>>,
}

/// A key the traced render looked up: missing, or there but holding a
/// value that is no mapping (what it holds, in words).
type Look = (String, Option<&'static str>);

/// A value that a template cannot look into, in words.
fn scalar_words(v: &Value) -> Option<&'static str> {
    use minijinja::value::ValueKind;
    match v.kind() {
        ValueKind::None => Some("none (null)"),
        ValueKind::Bool => Some("a boolean"),
        ValueKind::Number => Some("a number"),
        ValueKind::String => Some("a string"),
        ValueKind::Seq => Some("a list"),
        _ => None,
    }
}

impl Traced {
    fn wrap(value: Value, path: String, misses: &Arc<Mutex<Vec<Look>>>) -> Value {
        if value.kind() != minijinja::value::ValueKind::Map {
            return value;
        }
        Value::from_object(Traced {
            value,
            path,
            misses: misses.clone(),
        })
    }
}

impl Object for Traced {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str().map_or_else(|| key.to_string(), str::to_string);
        let path = if self.path.is_empty() {
            name
        } else {
            format!("{}.{name}", self.path)
        };
        match self.value.get_item(key) {
            Ok(v) if !v.is_undefined() => {
                if let (Some(words), Ok(mut m)) = (scalar_words(&v), self.misses.lock()) {
                    m.push((path.clone(), Some(words)));
                }
                Some(Traced::wrap(v, path, &self.misses))
            }
            _ => {
                if let Ok(mut m) = self.misses.lock() {
                    m.push((path, None));
                }
                None
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.value.try_iter() {
            Ok(keys) => Enumerator::Iter(Box::new(keys.collect::<Vec<_>>().into_iter())),
            Err(_) => Enumerator::Empty,
        }
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut minijinja::State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        self.value.call_method(state, method, args)
    }
}

/// The functions every environment has: looked up in the context first,
/// so missed there, and not what is undefined.
const BUILTINS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "lipsum",
    "cycler",
    "joiner",
    "debug",
    "self",
    "caller",
    "varargs",
    "kwargs",
];

/// Which name made `t` stop on `err` (an undefined value), and the source
/// line it stopped on: the template is rendered again over a [`Traced`]
/// context, and the last key it missed is the name (preferring one that
/// the stopping line mentions). `None` when the second render does not
/// stop the same way.
fn trace_undefined(
    t: &minijinja::Template<'_, '_>,
    ctx: Value,
    err: &minijinja::Error,
) -> Option<(String, Option<&'static str>, String)> {
    let misses = Arc::new(Mutex::new(Vec::new()));
    let traced = Traced::wrap(ctx, String::new(), &misses);
    let mut sink = Bounded {
        out: Vec::new(),
        over: false,
    };
    let again = t.render_captured_to(traced, &mut sink).err()?;
    if again.kind() != err.kind() || again.line() != err.line() {
        return None;
    }
    let line = err.line()?;
    let used = t.source().lines().nth(line.checked_sub(1)?)?.trim();
    let misses = misses.lock().ok()?;
    let real = |m: &&Look| m.0.contains('.') || !BUILTINS.contains(&m.0.as_str());
    let mentioned = |m: &&Look| {
        let last = m.0.rsplit('.').next().unwrap_or_default();
        !last.is_empty() && used.contains(last)
    };
    let missing = |m: &&Look| m.1.is_none();
    // A key missing on the line; else a value on the line the template
    // looked into though it is no mapping (`data: null`); else the last
    // key missing anywhere.
    let (name, holds) = misses
        .iter()
        .rev()
        .filter(real)
        .filter(missing)
        .find(mentioned)
        .or_else(|| misses.iter().rev().filter(|m| !missing(m)).find(mentioned))
        .or_else(|| misses.iter().rev().filter(missing).find(real))?;
    let mut used: String = used.chars().take(120).collect();
    if used.len() < t.source().lines().nth(line - 1)?.trim().len() {
        used.push('…');
    }
    Some((name.clone(), *holds, used))
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

/// Render `text` as [`render`] does, and on an undefined value go on:
/// the `{{ … }}` of the line it stopped on are blanked and the text is
/// rendered again, until it renders or stops on something else (a syntax
/// error, a block tag, a budget). Every error met, and the text rendered
/// (with the blanked lines, whose numbers are given) when it came to that:
/// what `check` needs to go on to the errors after a template error.
pub fn render_all(
    file: &Path,
    text: &str,
    ctx: minijinja::Value,
    strict: bool,
) -> (Vec<Diag>, Option<(String, Vec<usize>)>) {
    let mut errors: Vec<Diag> = Vec::new();
    let mut blanked = Vec::new();
    let mut cur = text.to_string();
    // At most a few dozen: each round blanks one more line.
    for _ in 0..64 {
        let env = environment(strict);
        let name = file.to_string_lossy();
        let t = match env.template_from_named_str(&name, &cur) {
            Ok(t) => t,
            Err(e) => {
                errors.push(diag(file, &e));
                return (errors, None);
            }
        };
        let failure = match render_bounded(&t, ctx.clone()) {
            Ok(out) => return (errors, Some((out, blanked))),
            Err(f) => f,
        };
        let undefined = match &failure {
            Failure::Undefined { err, .. } => err.line(),
            Failure::Jinja(e) if e.kind() == minijinja::ErrorKind::UndefinedError => e.line(),
            _ => None,
        };
        errors.push(failure.diag(file));
        let Some(line) = undefined else {
            return (errors, None);
        };
        match blank_expressions(&cur, line) {
            Some(next) => {
                cur = next;
                blanked.push(line);
            }
            None => return (errors, None),
        }
    }
    (errors, None)
}

/// `text` with the `{{ … }}` of line `line` (1-based) removed; `None`
/// when that line has none.
fn blank_expressions(text: &str, line: usize) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 != line {
            out.push_str(l);
            continue;
        }
        let mut rest = l;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest.get(start..).and_then(|r| r.find("}}")) else {
                break;
            };
            out.push_str(rest.get(..start).unwrap_or_default());
            rest = rest.get(start + len + 2..).unwrap_or_default();
            changed = true;
        }
        out.push_str(rest);
    }
    changed.then_some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn r(text: &str) -> Result<String, Diag> {
        render(Path::new("t.j2"), text, minijinja::context! {}, true)
    }

    /// Every row `(what, text, line, part)`: `refuse` refuses `text` with a
    /// diagnostic on `file` (its last components) at `line`, whose message
    /// holds `part`.
    pub(crate) fn assert_refusals<S: AsRef<str>, T: std::fmt::Debug>(
        file: &str,
        rows: &[(&str, S, usize, &str)],
        refuse: impl Fn(&str) -> Result<T, Diag>,
    ) {
        for (what, text, line, part) in rows {
            let d = refuse(text.as_ref()).expect_err(what);
            assert_eq!(d.pos.line, *line, "{what}: {d}");
            assert!(d.msg.contains(part), "{what}: {d}");
            assert!(d.file.ends_with(file), "{what}: {d}");
        }
    }

    /// What the renderer refuses as too much work, as rows for
    /// `assert_refusals`; `valid` is a line the file may hold.
    fn fuel_attacks(valid: &str) -> Vec<(&'static str, String, usize, &'static str)> {
        let loops =
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        let repeat = "{% for a in range(100000) %}{% set s = 'x' * 99999999 %}{% endfor %}";
        vec![
            (
                "nested loops",
                format!("{valid}\n{loops}\n"),
                2,
                "out of fuel: the template does too much work, limit 500000",
            ),
            (
                "string repetition",
                format!("{repeat}\n{valid}\n"),
                1,
                "out of fuel",
            ),
        ]
    }

    /// What a file rendered then parsed as YAML (the config, a pillar)
    /// must refuse on a budget: the renderer's and the parser's.
    pub(crate) fn budget_attacks(valid: &str) -> Vec<(&'static str, String, usize, &'static str)> {
        let mut rows = fuel_attacks(valid);
        rows.push((
            "alias bomb",
            crate::yaml::tests::alias_bomb(),
            5,
            "alias expansion exceeds 100000 nodes",
        ));
        rows.push((
            "deep nesting",
            format!("x:\n  {}y\n", "- ".repeat(100_000)),
            2,
            "nested deeper than 256 levels",
        ));
        rows
    }

    #[test]
    fn budgets_refuse_runaway_templates() {
        let more: &[(&str, &str, usize, &str)] = &[
            ("a long string", "{{ 'x' * 1000000000 }}\n", 1, "out of fuel"),
            ("on line 3", "\n\n{{ 'x' * 90000000 }}\n", 3, "out of fuel"),
            (
                "doubling",
                "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}\n",
                1,
                "out of fuel",
            ),
            (
                "recursion",
                "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}\n",
                1,
                "nested too deep, limit 200",
            ),
        ];
        let mut rows = fuel_attacks("a");
        rows.extend(more.iter().map(|&(w, t, l, p)| (w, t.to_string(), l, p)));
        assert_refusals("t.j2", &rows, r);
    }

    /// An undefined value is named, with the line that uses it.
    #[test]
    fn undefined_values_are_named_where_they_are_used() {
        let ctx = minijinja::context! {
            env => minijinja::context! { HOME => "/root" },
            project => "example",
            pillar => minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
                "makina-projects.example": {"data": {"port": 8080}},
                "other": {"x": 1},
                "nulled": {"data": null},
                "numbered": {"data": 5},
            }))),
        };
        // (template, line, message)
        let rows: &[(&str, usize, &str)] = &[
            (
                "a: 1\nport: {{ env.MC_PORT }}\n",
                2,
                "template error: undefined variable `env.MC_PORT` (used in `port: {{ env.MC_PORT }}`)",
            ),
            (
                "{{ nope }}\n",
                1,
                "template error: undefined variable `nope` (used in `{{ nope }}`)",
            ),
            (
                "{{ nope.missing }}\n",
                1,
                "template error: undefined variable `nope` (used in `{{ nope.missing }}`)",
            ),
            (
                "{%- set data = pillar['makina-projects.' ~ project]['data'] -%}\n{{ data.site_name }}\n",
                2,
                "template error: the pillar has no `makina-projects.example.data.site_name` (used in `{{ data.site_name }}`)",
            ),
            (
                "{%- set data = pillar['makina-projects.' ~ project]['datta'] -%}\n{{ env.HOME | default(1) }}\n{{ data.port }}\n",
                3,
                "template error: the pillar has no `makina-projects.example.datta` (used in `{{ data.port }}`)",
            ),
            (
                "{{ pillar.other.x }}{% for k in pillar.other %}{{ k }}{% endfor %}{{ pillar.other | length }}\n{{ pillar.other.z }}\n",
                2,
                "the pillar has no `other.z`",
            ),
            // There, but no mapping: the pillar override said `data: null`.
            (
                "{%- set data = pillar.nulled.data -%}\nWORKER_INTERVAL={{ data.worker_interval }}\n",
                2,
                "template error: the pillar's `nulled.data` is none (null), not a mapping (used in `WORKER_INTERVAL={{ data.worker_interval }}`)",
            ),
            (
                "{{ pillar.nulled.data.site_name | tojson }}\n",
                1,
                "the pillar's `nulled.data` is none (null), not a mapping",
            ),
            (
                "{{ pillar.other.missing | tojson }}\n",
                1,
                "the pillar has no `other.missing`",
            ),
            (
                "{{ pillar.numbered.data.port }}\n",
                1,
                "the pillar's `numbered.data` is a number, not a mapping",
            ),
            (
                "{% for i in range(2) %}{{ i }}{% endfor %}{{ missing_after_range }}\n",
                1,
                "undefined variable `missing_after_range`",
            ),
        ];
        for (text, line, msg) in rows {
            let d = render(Path::new("t.j2"), text, ctx.clone(), true).expect_err(text);
            assert_eq!(d.pos.line, *line, "{text:?}: {d}");
            assert!(d.msg.contains(msg), "{text:?}:\n{}\nwant {msg}", d.msg);
        }
        // What is there still serializes, a null included, and `default`
        // still fills in for what is not.
        let ok = "{{ pillar.other | tojson }} {{ pillar.nulled.data | tojson }} {{ pillar.nope | default(1) | tojson }}\n";
        assert_eq!(
            render(Path::new("t.j2"), ok, ctx.clone(), true)
                .as_deref()
                .ok(),
            Some("{\"x\": 1} null 1\n")
        );
    }

    #[test]
    fn render_all_goes_on_past_undefined_values() {
        let ctx = minijinja::context! { env => minijinja::context! { A => "a" } };
        // (template, error lines, rendered or not)
        let rows: &[(&str, &[usize], Option<&str>)] = &[
            ("x: {{ env.A }}\n", &[], Some("x: a\n")),
            (
                "x: {{ env.B }}\ny: {{ env.A }}\nz: {{ nope }} {{ env.A }}\n",
                &[1, 3],
                Some("x: \ny: a\nz:  \n"),
            ),
            ("{% if nope.x %}\n{% endif %}\n{{ env.C }}\n", &[1], None),
            ("{{ env.C }}\n{% if %}\n", &[2], None),
        ];
        for (text, lines, rendered) in rows {
            let (errs, out) = render_all(Path::new("t.j2"), text, ctx.clone(), true);
            let got: Vec<usize> = errs.iter().map(|d| d.pos.line).collect();
            assert_eq!(&got, lines, "{text:?}: {errs:?}");
            assert_eq!(out.as_ref().map(|(t, _)| t.as_str()), *rendered, "{text:?}");
            if let Some((_, blanked)) = out {
                assert_eq!(&blanked, lines, "{text:?}");
            }
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
