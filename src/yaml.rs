//! The one YAML parsing function of the project.
//!
//! Every node keeps the position it was read at, so that validation can name
//! `file:line:col` for each problem it finds, and report all of them at once.
//! Anchors and aliases are resolved, `<<` merge keys are applied, and plain
//! scalars are typed the way PyYAML (and so salt) types them: `True`, `yes`
//! and `on` are booleans there, and pillars written for salt must mean the same
//! thing here.
//!
//! Inputs are not trusted (the pillar override comes from the data volume):
//! nesting depth and the copies made by anchors and aliases have budgets,
//! checked while the tree is built, so that no document exhausts the stack
//! or memory; going over is a `file:line:col` error like any other.

use crate::error::{Diag, Pos};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written; `plain` is false for quoted and block scalars,
    /// which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// What a scalar means once typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Node {
    pub fn null(pos: Pos) -> Node {
        Node {
            pos,
            value: Value::Scalar {
                text: String::new(),
                plain: true,
            },
        }
    }

    /// The scalar's text, whatever its type (`None` for collections).
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.scalar(), Some(Scalar::Null))
    }

    /// The typed scalar (YAML 1.1 rules for plain scalars), `None` for collections.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.value {
            Value::Scalar { text, plain: false } => Some(Scalar::Str(text)),
            Value::Scalar { text, plain: true } => Some(type_plain(text)),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.text() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short name for the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.scalar() {
            None if self.as_seq().is_some() => "a list",
            None => "a mapping",
            Some(Scalar::Null) => "null",
            Some(Scalar::Bool(_)) => "a boolean",
            Some(Scalar::Int(_)) => "an integer",
            Some(Scalar::Float(_)) => "a number",
            Some(Scalar::Str(_)) => "a string",
        }
    }

    /// Plain data for templates and JSON: typed scalars, string keys.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match k.scalar() {
                        Some(Scalar::Str(s)) => s.to_string(),
                        Some(Scalar::Null) => "None".to_string(),
                        _ => k.text().unwrap_or_default().to_string(),
                    };
                    map.insert(key, v.to_json());
                }
                J::Object(map)
            }
            Value::Scalar { .. } => match self.scalar() {
                Some(Scalar::Null) | None => J::Null,
                Some(Scalar::Bool(b)) => J::Bool(b),
                Some(Scalar::Int(i)) => J::from(i),
                Some(Scalar::Float(f)) => serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .unwrap_or(J::Null),
                Some(Scalar::Str(s)) => J::String(s.to_string()),
            },
        }
    }
}

fn type_plain(text: &str) -> Scalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Scalar::Bool(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Scalar::Bool(false)
        }
        _ => {}
    }
    let clean = text.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let int = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        // YAML 1.1 octal, as PyYAML reads `0640`.
        i64::from_str_radix(digits, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Scalar::Int(if neg { -i } else { i });
    }
    let looks_numeric = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.contains('.');
    if looks_numeric {
        if let Ok(f) = clean.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    match digits {
        ".inf" | ".Inf" | ".INF" => Scalar::Float(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        ".nan" | ".NaN" | ".NAN" => Scalar::Float(f64::NAN),
        _ => Scalar::Str(text),
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

/// Collections nested deeper than this are refused: every walk over a tree
/// (dropping it, `to_json`, templates) recurses once per level, and salt
/// pillars stay far below (a few tens of levels). Aliases count: an alias
/// of a deep collection inside another deep one is refused as well.
pub const MAX_DEPTH: usize = 256;

/// How many nodes anchors and aliases may copy in one document. Each alias
/// is a copy of the anchored tree, and each anchor keeps a copy for the
/// aliases to come (both count): without a bound, nine nested levels of
/// nine aliases ("billion laughs") turn 500 bytes into 10⁹ nodes. A fixed
/// budget, not a multiple of the text's size, so that the memory it allows
/// (about 10 MiB) does not grow with the input; real configs and pillars
/// copy a few hundred nodes.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// How many nodes (scalars and collections) the text of one document may
/// hold, alias copies aside: the rendered text a parse gets is bounded
/// (`template::MAX_RENDERED`), but every node costs far more memory than
/// its two bytes of text (`[1,1,1,…]`). Real configs and pillars hold a
/// few thousand.
pub const MAX_NODES: usize = 100_000;

/// How many bytes of scalar text anchors and aliases may copy in one
/// document: the node budget alone lets one alias of a long string be
/// repeated until memory runs out.
pub const MAX_ALIAS_BYTES: usize = 16 << 20;

/// What a finished node costs to copy, and how deep it nests.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
    /// Collections nested in the node, itself included (0 for a scalar).
    height: usize,
}

impl Size {
    fn scalar(text: &str) -> Size {
        Size {
            nodes: 1,
            bytes: text.len(),
            height: 0,
        }
    }

    /// Account for a child of a collection.
    fn add_child(&mut self, child: Size) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.height = self.height.max(child.height.saturating_add(1));
    }
}

/// Copies made so far for anchors and aliases.
#[derive(Default)]
struct Copies {
    nodes: usize,
    bytes: usize,
}

impl Copies {
    /// Pay for copying a node of `size`, before copying it.
    fn charge(&mut self, size: Size) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(size.nodes);
        self.bytes = self.bytes.saturating_add(size.bytes);
        if self.nodes > MAX_ALIAS_NODES {
            return Err(format!(
                "YAML: alias expansion exceeds {MAX_ALIAS_NODES} nodes (an alias bomb?)"
            ));
        }
        if self.bytes > MAX_ALIAS_BYTES {
            return Err(format!(
                "YAML: alias expansion exceeds {} MiB of text (an alias bomb?)",
                MAX_ALIAS_BYTES >> 20
            ));
        }
        Ok(())
    }
}

fn too_deep() -> String {
    format!("YAML: collections nested deeper than {MAX_DEPTH} levels")
}

enum Body {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

/// A collection being read.
struct Frame {
    pos: Pos,
    anchor: usize,
    size: Size,
    body: Body,
}

impl Frame {
    fn new(pos: Pos, anchor: usize, body: Body) -> Frame {
        Frame {
            pos,
            anchor,
            size: Size {
                nodes: 1,
                bytes: 0,
                height: 1,
            },
            body,
        }
    }
}

/// Parse the first document of `text`. An empty document is a null node.
/// The error names `file:line:col`. Nesting deeper than [`MAX_DEPTH`] and
/// anchors and aliases copying more than [`MAX_ALIAS_NODES`] nodes (or
/// [`MAX_ALIAS_BYTES`] bytes), and more than [`MAX_NODES`] nodes in the
/// text are refused, checked before anything is
/// copied or nested further: no input exhausts memory or the stack.
pub fn parse(text: &str, file: &Path) -> Result<Node, Diag> {
    let mut anchors: HashMap<usize, (Node, Size)> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut copies = Copies::default();
    let mut root: Option<Node> = None;
    let mut doc_seen = false;
    let mut nodes = 0usize;
    let err = |pos: Pos, msg: String| Diag::new(file, pos, msg);

    // saphyr-parser keeps its own state on the heap (100,000 nested block
    // sequences parse in linear time, without recursion) and refuses flow
    // nesting past 255 levels; what overflowed the stack was the tree
    // built here, so the depth limit is checked below, and reading stops
    // at the first collection past it.
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(pair) => pair,
            Err(e) => {
                let m = e.marker();
                let mut at = Pos::new(m.line(), m.col() + 1);
                let mut msg = format!("YAML syntax error: {}", e.info());
                if e.info().contains("recursion limit") {
                    msg.push_str(" (collections nested too deep)");
                } else if let Some((open, p)) = open_flow(text, &stack) {
                    // Where the collection opened is what the reader
                    // looks for, not the end of the file.
                    let tail = text.chars().skip(m.index()).collect::<String>();
                    if ends_here(&tail) {
                        msg = format!(
                            "YAML syntax error: unclosed '{open}' opened at line {} col {}, still open at the end of the file ({})",
                            p.line,
                            p.col,
                            e.info()
                        );
                        at = p;
                    } else {
                        msg.push_str(&format!(
                            " (in the '{open}' opened at line {} col {})",
                            p.line, p.col
                        ));
                    }
                }
                return Err(err(at, msg));
            }
        };
        let pos = pos_of(&span);
        if matches!(
            event,
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
        ) {
            nodes += 1;
            if nodes > MAX_NODES {
                return Err(err(
                    pos,
                    format!("YAML: more than {MAX_NODES} nodes in the document"),
                ));
            }
        }
        let done: Option<(Node, Size, usize)> = match event {
            Event::DocumentStart(_) => {
                if doc_seen {
                    break; // only the first document counts
                }
                doc_seen = true;
                None
            }
            Event::StreamEnd => break,
            Event::DocumentEnd => None,
            Event::Scalar(text, style, anchor, tag) => {
                let plain = matches!(style, ScalarStyle::Plain)
                    && tag.as_ref().is_none_or(|t| t.suffix != "str");
                let size = Size::scalar(&text);
                Some((
                    Node {
                        pos,
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain,
                        },
                    },
                    size,
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((n, size)) => {
                    if stack.len().saturating_add(size.height) > MAX_DEPTH {
                        return Err(err(pos, format!("{} (through an alias)", too_deep())));
                    }
                    copies.charge(*size).map_err(|m| err(pos, m))?;
                    Some((n.clone(), *size, 0))
                }
                None => return Err(err(pos, "YAML alias to an unknown anchor".into())),
            },
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                return Err(err(pos, too_deep()));
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::new(pos, anchor, Body::Seq(Vec::new())));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::new(pos, anchor, Body::Map(Vec::new(), None)));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame {
                    pos: p,
                    anchor,
                    size,
                    body: Body::Seq(items),
                }) => Some((
                    Node {
                        pos: p,
                        value: Value::Seq(items),
                    },
                    size,
                    anchor,
                )),
                _ => return Err(err(pos, "YAML structure error".into())),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame {
                    pos: p,
                    anchor,
                    size,
                    body: Body::Map(entries, _),
                }) => Some((
                    Node {
                        pos: p,
                        value: Value::Map(apply_merge(entries)),
                    },
                    size,
                    anchor,
                )),
                _ => return Err(err(pos, "YAML structure error".into())),
            },
            _ => None,
        };
        if let Some((node, size, anchor)) = done {
            if anchor != 0 {
                // The anchor keeps a copy for the aliases to come.
                copies.charge(size).map_err(|m| err(node.pos, m))?;
                anchors.insert(anchor, (node.clone(), size));
            }
            match stack.last_mut() {
                Some(frame) => {
                    frame.size.add_child(size);
                    match &mut frame.body {
                        Body::Seq(items) => items.push(node),
                        Body::Map(entries, pending) => match pending.take() {
                            None => *pending = Some(node),
                            Some(key) => entries.push((key, node)),
                        },
                    }
                }
                None => {
                    root = Some(node);
                }
            }
        }
    }
    Ok(root.unwrap_or_else(|| Node::null(Pos::new(1, 1))))
}

/// The innermost collection open in `stack` when it is a flow one (`{`
/// or `[`, read from `text` where it started): its bracket and position.
fn open_flow(text: &str, stack: &[Frame]) -> Option<(char, Pos)> {
    let p = stack.last()?.pos;
    let c = text
        .lines()
        .nth(p.line.checked_sub(1)?)?
        .chars()
        .nth(p.col.checked_sub(1)?)?;
    matches!(c, '{' | '[').then_some((c, p))
}

/// Nothing but blank lines and comments is left in `tail`.
fn ends_here(tail: &str) -> bool {
    tail.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Apply YAML merge keys: `<<: *base` (or a list of them) adds the entries of
/// the merged mappings that the mapping does not set itself.
fn apply_merge(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return entries;
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (k, v) in entries {
        if is_merge_key(&k) {
            match v.value {
                Value::Map(m) => merged.extend(m),
                Value::Seq(items) => {
                    for item in items {
                        if let Value::Map(m) = item.value {
                            merged.extend(m);
                        }
                    }
                }
                _ => own.push((k, v)),
            }
        } else {
            own.push((k, v));
        }
    }
    // A set, not a scan of `own` per merged key: a mapping merged into
    // another, both of many keys, would be quadratic.
    let mut seen: HashSet<Option<String>> = own
        .iter()
        .map(|(k, _)| k.text().map(str::to_string))
        .collect();
    for (k, v) in merged {
        if seen.insert(k.text().map(str::to_string)) {
            own.push((k, v));
        }
    }
    own
}

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.value, Value::Scalar { text, plain: true } if text == "<<")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn p(s: &str) -> Node {
        parse(s, Path::new("t.yml")).expect("valid yaml")
    }

    #[test]
    fn positions_are_one_based() {
        let n = p("a: 1\nb:\n  c: x\n");
        let b = n.get("b").and_then(|b| b.get("c")).expect("b.c");
        assert_eq!(b.pos, Pos::new(3, 6));
        assert_eq!(n.get("a").map(|a| a.pos), Some(Pos::new(1, 4)));
    }

    #[test]
    fn typing_follows_pyyaml() {
        let cases: &[(&str, Scalar)] = &[
            ("x: True", Scalar::Bool(true)),
            ("x: yes", Scalar::Bool(true)),
            ("x: off", Scalar::Bool(false)),
            ("x: ~", Scalar::Null),
            ("x:", Scalar::Null),
            ("x: 42", Scalar::Int(42)),
            ("x: -7", Scalar::Int(-7)),
            ("x: 0640", Scalar::Int(0o640)),
            ("x: 0x1f", Scalar::Int(31)),
            ("x: 1.5", Scalar::Float(1.5)),
            ("x: '42'", Scalar::Str("42")),
            ("x: \"yes\"", Scalar::Str("yes")),
            ("x: !!str 12", Scalar::Str("12")),
            ("x: 127.0.0.1:80", Scalar::Str("127.0.0.1:80")),
            ("x: 1.2.3", Scalar::Str("1.2.3")),
            ("x: 30s", Scalar::Str("30s")),
        ];
        for (src, want) in cases {
            let n = p(src);
            let got = n.get("x").and_then(Node::scalar);
            assert_eq!(got.as_ref(), Some(want), "{src}");
        }
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: 1\nb: [1, 2\n", Path::new("f.yml")).expect_err("invalid");
        assert_eq!(e.file, Path::new("f.yml"));
        assert!(e.pos.line >= 2, "{e}");
        assert!(e.msg.contains("YAML syntax error"), "{e}");
    }

    /// A flow collection left open at the end of the file is reported
    /// where it opened, not at the last line; an error inside one that
    /// is still open names where it opened.
    #[test]
    fn an_unclosed_flow_collection_is_named_where_it_opened() {
        let rows: &[(&str, (usize, usize), &str)] = &[
            (
                "a: 1\nb:\n  c: {x: 1, y: 2\n\n# end\n",
                (3, 6),
                "YAML syntax error: unclosed '{' opened at line 3 col 6, still open at the end of the file (while parsing a flow mapping, did not find expected ',' or '}')",
            ),
            (
                "a: 1\nb: [1, 2\n",
                (2, 4),
                "YAML syntax error: unclosed '[' opened at line 2 col 4, still open at the end of the file (while parsing a flow sequence, expected ',' or ']')",
            ),
            (
                "a: [1, {b: 2\n",
                (1, 8),
                "unclosed '{' opened at line 1 col 8, still open at the end of the file",
            ),
            (
                "a: {x: [1, 2]\nb: 3\nc: 4\n",
                (2, 1),
                "YAML syntax error: invalid indentation in flow construct (in the '{' opened at line 1 col 4)",
            ),
            // Not in a flow collection: as the parser says.
            ("a: '\nb\n", (1, 4), "YAML syntax error: invalid indentation in quoted scalar"),
        ];
        for (text, (line, col), msg) in rows {
            let e = parse(text, Path::new("f.yml")).expect_err(text);
            assert_eq!((e.pos.line, e.pos.col), (*line, *col), "{text:?}: {e}");
            assert!(
                e.msg.starts_with(msg) || e.msg.contains(msg),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn aliases_and_merge_keys() {
        let n = p("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n");
        let c = n.get("c").expect("c");
        assert_eq!(c.get("x").and_then(Node::scalar), Some(Scalar::Int(1)));
        assert_eq!(c.get("y").and_then(Node::scalar), Some(Scalar::Int(3)));
    }

    #[test]
    fn empty_document_is_null() {
        assert!(p("").is_null());
        assert!(p("# only a comment\n").is_null());
    }

    /// The classic "billion laughs": nine levels of nine aliases, 10⁹
    /// scalars from about 500 bytes.
    pub(crate) fn alias_bomb() -> String {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        let mut text = String::from("a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
        for pair in names.windows(2) {
            let (prev, name) = (pair[0], pair[1]);
            let refs = vec![format!("*{prev}"); 9].join(", ");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn budgets_refuse_bombs_with_a_position() {
        let long = "x".repeat(1 << 20);
        let many_long = format!("s: &s \"{long}\"\nl: [{}]\n", vec!["*s"; 20].join(", "));
        let deep_block = format!("{}x\n", "- ".repeat(100_000));
        let deep_flow = format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let deep_map = format!("{}x\n", "? ".repeat(100_000));
        let deep_alias = format!(
            "a: &a {}{}\nb: {}*a{}\n",
            "[".repeat(200),
            "]".repeat(200),
            "[".repeat(100),
            "]".repeat(100)
        );
        // (document, line of the refusal, part of the message)
        let rows: &[(&str, &str, usize, &str)] = &[
            (
                "alias bomb",
                &alias_bomb(),
                5,
                "alias expansion exceeds 100000 nodes",
            ),
            (
                "long alias",
                &many_long,
                2,
                "alias expansion exceeds 16 MiB of text",
            ),
            (
                "100,000 block levels",
                &deep_block,
                1,
                "nested deeper than 256 levels",
            ),
            (
                "100,000 `? ` levels",
                &deep_map,
                1,
                "nested deeper than 256 levels",
            ),
            ("100,000 flow levels", &deep_flow, 1, "nested too deep"),
            (
                "deep through an alias",
                &deep_alias,
                2,
                "256 levels (through an alias)",
            ),
        ];
        for (what, text, line, part) in rows {
            let e = parse(text, Path::new("bomb.yml")).expect_err(what);
            assert_eq!(e.pos.line, *line, "{what}: {e}");
            assert!(e.pos.col > 0, "{what}: {e}");
            assert!(e.msg.contains(part), "{what}: {e}");
            assert!(e.to_string().starts_with("bomb.yml:"), "{what}: {e}");
        }
    }

    #[test]
    fn documents_within_the_budgets_are_accepted() {
        // Many aliases of a small anchor, and merge keys, as configs use them.
        let mut text = String::from("defaults: &d {user: app, respawn: true, env: {A: 1, B: 2}}\n");
        for i in 0..2000 {
            text.push_str(&format!(
                "s{i}:\n  <<: *d\n  cmd: [run, \"{i}\"]\n  env: *d\n"
            ));
        }
        let n = p(&text);
        let last = n.get("s1999").expect("s1999");
        assert_eq!(last.get("user").and_then(Node::text), Some("app"));
        assert_eq!(
            last.get("env")
                .and_then(|e| e.get("respawn"))
                .and_then(Node::scalar),
            Some(Scalar::Bool(true))
        );
        // Exactly the depth limit, in block and flow style.
        let block = format!("{}x\n", "- ".repeat(MAX_DEPTH));
        let mut depth = 0;
        let mut cur = p(&block);
        while let Some([inner]) = cur.as_seq() {
            depth += 1;
            cur = inner.clone();
        }
        assert_eq!(depth, MAX_DEPTH);
        let flow = format!("{}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(p(&flow).as_seq().is_some());
        // A big merge (the anchor's copy and the alias: 80,000 nodes) is
        // within the budget, and linear, not quadratic.
        let keys: String = (0..20_000).map(|i| format!("k{i}: {i}, ")).collect();
        let own: String = (0..29_000).map(|i| format!("  o{i}: {i}\n")).collect();
        let merged = p(&format!("a: &a {{{keys}}}\nb:\n  <<: *a\n{own}"));
        assert_eq!(
            merged.get("b").and_then(Node::as_map).map(<[_]>::len),
            Some(49_000)
        );
    }

    #[test]
    fn the_node_budget_counts_the_text() {
        let within = format!("[{}1]\n", "1,".repeat(MAX_NODES - 2));
        assert_eq!(p(&within).as_seq().map(<[_]>::len), Some(MAX_NODES - 1));
        let over = format!("a:\n  - [{}1]\n", "1,".repeat(MAX_NODES));
        let e = parse(&over, Path::new("big.yml")).expect_err("too many nodes");
        assert_eq!(e.pos.line, 2, "{e}");
        assert!(e.msg.contains("more than 100000 nodes"), "{e}");
    }

    #[test]
    fn to_json_types() {
        let n = p("a: [1, 'b', true, ~]\n");
        assert_eq!(n.to_json(), serde_json::json!({"a": [1, "b", true, null]}));
    }
}
