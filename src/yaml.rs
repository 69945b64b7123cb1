//! The one YAML parsing function of the project.
//!
//! Every node keeps the position it was read at, so that validation can name
//! `file:line:col` for each problem it finds, and report all of them at once.
//! Anchors and aliases are resolved, `<<` merge keys are applied, and plain
//! scalars are typed the way PyYAML (and so salt) types them: `True`, `yes`
//! and `on` are booleans there, and pillars written for salt must mean the same
//! thing here.

use crate::error::{Diag, Pos};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;
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

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// Parse the first document of `text`. An empty document is a null node.
/// The error names `file:line:col`.
pub fn parse(text: &str, file: &Path) -> Result<Node, Diag> {
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut doc_seen = false;
    let err = |pos: Pos, msg: String| Diag::new(file, pos, msg);

    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(pair) => pair,
            Err(e) => {
                let m = e.marker();
                return Err(err(
                    Pos::new(m.line(), m.col() + 1),
                    format!("YAML syntax error: {}", e.info()),
                ));
            }
        };
        let pos = pos_of(&span);
        let done: Option<(Node, usize)> = match event {
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
                Some((
                    Node {
                        pos,
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain,
                        },
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => Some((n.clone(), 0)),
                None => return Err(err(pos, "YAML alias to an unknown anchor".into())),
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(pos, anchor, Vec::new()));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(pos, anchor, Vec::new(), None));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, anchor, items)) => Some((
                    Node {
                        pos: p,
                        value: Value::Seq(items),
                    },
                    anchor,
                )),
                _ => return Err(err(pos, "YAML structure error".into())),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, anchor, entries, _)) => Some((
                    Node {
                        pos: p,
                        value: Value::Map(apply_merge(entries)),
                    },
                    anchor,
                )),
                _ => return Err(err(pos, "YAML structure error".into())),
            },
            _ => None,
        };
        if let Some((node, anchor)) = done {
            if anchor != 0 {
                anchors.insert(anchor, node.clone());
            }
            match stack.last_mut() {
                Some(Frame::Seq(_, _, items)) => items.push(node),
                Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                    None => *pending = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                None => {
                    root = Some(node);
                }
            }
        }
    }
    Ok(root.unwrap_or_else(|| Node::null(Pos::new(1, 1))))
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
    for (k, v) in merged {
        if !own.iter().any(|(ok, _)| ok.text() == k.text()) {
            own.push((k, v));
        }
    }
    own
}

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.value, Value::Scalar { text, plain: true } if text == "<<")
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn to_json_types() {
        let n = p("a: [1, 'b', true, ~]\n");
        assert_eq!(n.to_json(), serde_json::json!({"a": [1, "b", true, null]}));
    }
}
