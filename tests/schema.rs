//! `schema/mc-launcher.schema.json` (README "Configuration reference")
//! stays equal to the decoder: the schema's sections and keys are the
//! decoder's tables (`config::decode::REFERENCE`, the very tables it rejects
//! unknown keys with), both ways; and every mc-launcher.yml of the
//! repository (the example images') is valid under it, rendered as the
//! launcher renders it, and names it on its first line for editors.
//!
//! The schema is checked by a small validator below that knows exactly the
//! keywords the schema uses and refuses any other (no JSON Schema crate:
//! the schema is ours, and so is the vocabulary it needs).

use mc_launcher::config::decode::{REFERENCE, RLIMITS};
use mc_launcher::config::model::{CgroupSize, Paths, CHECK_KINDS, PROBE_KINDS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SCHEMA: &str = "schema/mc-launcher.schema.json";
/// The line every mc-launcher.yml starts with, but for the relative path.
const LANGUAGE_SERVER: &str = "# yaml-language-server: $schema=";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    let text = std::fs::read_to_string(repo().join(SCHEMA)).expect(SCHEMA);
    serde_json::from_str(&text).expect("the schema is JSON")
}

/// `{"$ref": "#/definitions/x"}` as the definition it names.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/definitions/").expect("a local $ref");
            root.pointer(&format!("/definitions/{name}"))
                .unwrap_or_else(|| panic!("no definition {name}"))
        }
        None => node,
    }
}

/// Every mapping the schema describes with `properties`, by its path in
/// the decoder's notation (`services.NAME.ready`, `prepopulate[]`), and its
/// keys.
fn sections(root: &Value, node: &Value, path: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
    let node = resolve(root, node);
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        let keys: BTreeSet<String> = props.keys().cloned().collect();
        let before = out.insert(path.to_string(), keys);
        assert!(before.is_none(), "{path}: described twice");
        for (k, v) in props {
            sections(root, v, &join(k), out);
        }
    }
    if let Some(v) = node.get("additionalProperties").filter(|v| v.is_object()) {
        sections(root, v, &join("NAME"), out);
    }
    if let Some(v) = node.get("items") {
        sections(root, v, &format!("{path}[]"), out);
    }
    for alt in ["anyOf", "oneOf"] {
        for v in node
            .get(alt)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            sections(root, v, path, out);
        }
    }
}

/// Sections the schema describes at two places that the decoder's
/// reference names once (the same table decodes both).
const SAME_AS: &[(&str, &str)] = &[
    ("services.NAME.stderr", "services.NAME.stdout"),
    ("services.NAME.log_rate_limit", "log.rate_limit"),
];

#[test]
fn the_schema_has_exactly_the_decoders_sections_and_keys() {
    let root = schema();
    let mut found = BTreeMap::new();
    sections(&root, &root, "", &mut found);
    for (alias, same) in SAME_AS {
        let keys = found
            .remove(*alias)
            .unwrap_or_else(|| panic!("{alias} missing"));
        assert_eq!(Some(&keys), found.get(*same), "{alias} is {same}");
    }
    let decoder: BTreeMap<String, BTreeSet<String>> = REFERENCE
        .iter()
        .map(|(s, keys)| (s.to_string(), keys.iter().map(|k| k.to_string()).collect()))
        .collect();
    let mut problems = Vec::new();
    for (section, keys) in &decoder {
        match found.get(section) {
            None => problems.push(format!("section `{section}` is not in the schema")),
            Some(schema_keys) => {
                for k in keys.difference(schema_keys) {
                    problems.push(format!(
                        "{section}: `{k}` is accepted but not in the schema"
                    ));
                }
                for k in schema_keys.difference(keys) {
                    problems.push(format!("{section}: `{k}` is in the schema but refused"));
                }
            }
        }
    }
    for section in found.keys().filter(|s| !decoder.contains_key(*s)) {
        problems.push(format!("section `{section}` of the schema is not decoded"));
    }
    assert!(problems.is_empty(), "{SCHEMA}:\n{}", problems.join("\n"));
}

/// The lists of names that are not keys of a section: the limits, and the
/// check kinds of which `ready:` and `live:` need exactly one.
#[test]
fn the_schema_has_the_decoders_names() {
    let root = schema();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    };
    let limits = root
        .pointer("/definitions/service/properties/rlimits/propertyNames/enum")
        .expect("rlimits names");
    assert_eq!(strings(limits), RLIMITS);
    for (def, kinds) in [("ready", &CHECK_KINDS[..]), ("live", &PROBE_KINDS[..])] {
        let one_of = root
            .pointer(&format!("/definitions/{def}/oneOf"))
            .and_then(Value::as_array)
            .expect("oneOf");
        let required: Vec<String> = one_of
            .iter()
            .flat_map(|r| strings(&r["required"]))
            .collect();
        assert_eq!(required, kinds, "{def}");
    }
}

// ----- a validator of the schema's vocabulary --------------------------------

/// The keywords the schema may use: the validator checks each (or, for the
/// annotations, has nothing to check).
const KEYWORDS: &[&str] = &[
    "$schema",
    "title",
    "description",
    "definitions",
    "$ref",
    "type",
    "enum",
    "properties",
    "additionalProperties",
    "required",
    "propertyNames",
    "items",
    "minItems",
    "minimum",
    "maximum",
    "anyOf",
    "oneOf",
];

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// The errors of `v` (at `at`) under `node`.
fn validate(root: &Value, node: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let node = resolve(root, node);
    let obj = node.as_object().expect("a schema is an object");
    for k in obj.keys() {
        assert!(KEYWORDS.contains(&k.as_str()), "keyword {k} is not checked");
    }
    if let Some(t) = obj.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts
                .iter()
                .any(|t| type_matches(t.as_str().expect("type"), v)),
            _ => panic!("bad type {t}"),
        };
        if !ok {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(vals) = obj.get("enum").and_then(Value::as_array) {
        if !vals.contains(v) {
            errors.push(format!(
                "{at}: {v} is not one of {}",
                Value::from(vals.clone())
            ));
        }
    }
    if let Some(n) = v.as_f64() {
        if obj
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errors.push(format!("{at}: {n} is below the minimum"));
        }
        if obj
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errors.push(format!("{at}: {n} is above the maximum"));
        }
    }
    if let Some(map) = v.as_object() {
        let props = obj.get("properties").and_then(Value::as_object);
        for (k, item) in map {
            let here = format!("{at}.{k}");
            if let Some(names) = obj.get("propertyNames") {
                validate(root, names, &json!(k), &here, errors);
            }
            match (
                props.and_then(|p| p.get(k)),
                obj.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(root, s, item, &here, errors),
                (None, Some(Value::Bool(false))) => errors.push(format!("{here}: unknown key")),
                (None, Some(s)) if s.is_object() => validate(root, s, item, &here, errors),
                (None, _) => {}
            }
        }
        for r in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().expect("a key");
            if !map.contains_key(r) {
                errors.push(format!("{at}: `{r}` is required"));
            }
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(s) = obj.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(root, s, item, &format!("{at}[{i}]"), errors);
            }
        }
        if obj
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (items.len() as u64) < m)
        {
            errors.push(format!("{at}: too few items"));
        }
    }
    let passing = |alts: &Vec<Value>| {
        alts.iter()
            .filter(|s| {
                let mut e = Vec::new();
                validate(root, s, v, at, &mut e);
                e.is_empty()
            })
            .count()
    };
    if let Some(alts) = obj.get("anyOf").and_then(Value::as_array) {
        if passing(alts) == 0 {
            errors.push(format!("{at}: {v} matches none of its forms"));
        }
    }
    if let Some(alts) = obj.get("oneOf").and_then(Value::as_array) {
        let n = passing(alts);
        if n != 1 {
            errors.push(format!("{at}: matches {n} of its exclusive forms, not one"));
        }
    }
}

fn errors_of(doc: &Value) -> Vec<String> {
    let root = schema();
    let mut errors = Vec::new();
    validate(&root, &root, doc, "config", &mut errors);
    errors
}

/// The validator refuses what the decoder refuses (it can fail).
#[test]
fn the_validator_finds_errors() {
    let ok = json!({"services": {"web": {"cmd": ["x"], "ready": {"tcp": "h:1", "timeout": "5s"}}}});
    assert_eq!(errors_of(&ok), Vec::<String>::new());
    assert_eq!(errors_of(&Value::Null), Vec::<String>::new());
    // (document, part of an error)
    let rows: &[(Value, &str)] = &[
        (json!({"bogus": 1}), "config.bogus: unknown key"),
        (
            json!({"services": {"web": {"cmd": "x", "colour": 1}}}),
            "web.colour: unknown key",
        ),
        (
            json!({"services": {"web": {"shell": true}}}),
            "`cmd` is required",
        ),
        (
            json!({"services": {"web": {"cmd": "x", "respawn": "maybe"}}}),
            "is not of type",
        ),
        (
            json!({"services": {"web": {"cmd": "x", "numprocesses": 0}}}),
            "below the minimum",
        ),
        (
            json!({"services": {"web": {"cmd": "x", "ready": {"tcp": "h:1", "file": "/x"}}}}),
            "matches 2 of its exclusive forms",
        ),
        (
            json!({"services": {"web": {"cmd": "x", "live": {"notify": true}}}}),
            "live.notify: unknown key",
        ),
        (
            json!({"services": {"web": {"cmd": "x", "stdout": "loud"}}}),
            "matches none",
        ),
        (
            json!({"services": {"web": {"cmd": "x", "rlimits": {"files": 1}}}}),
            "is not one of",
        ),
        (
            json!({"reconfigure": {"steps": [{"timeout": "1s"}]}}),
            "matches 0 of",
        ),
        (json!({"log": {"format": "xml"}}), "is not one of"),
    ];
    for (doc, part) in rows {
        let errors = errors_of(doc);
        assert!(
            errors.iter().any(|e| e.contains(part)),
            "{doc}: want `{part}`, got {errors:?}"
        );
    }
}

// ----- the repository's configs ----------------------------------------------

/// Every mc-launcher.yml of the repository (not build output).
fn configs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() && !["target", ".git"].contains(&name.as_str()) {
            configs(&p, out);
        } else if name == "mc-launcher.yml" {
            out.push(p);
        }
    }
}

/// The variables the example configs read, with a value as their users
/// (the demo, the Kubernetes manifests, an operator) set them.
const EXAMPLE_ENV: &[(&str, &str)] = &[
    ("MC_EXAMPLE_STATE", "/run/example-state"),
    (
        "MC_EXAMPLE_PILLAR_SOURCE",
        "/srv/projects/example/data/pillar/pillar.sls",
    ),
    ("MC_EXAMPLE_SSH_USER", "app"),
    ("MC_EXAMPLE_SSH_HOME", "/home/app"),
    ("MC_EXAMPLE_SSHD", "never"),
    ("MC_EXAMPLE_RECONFIGURE_WATCH", "true"),
    ("MC_EXAMPLE_SALT", "/etc/salt"),
    ("MC_EXAMPLE_DRAIN", "5s"),
    ("MC_EXAMPLE_HTTP_LISTEN", ":9300"),
    ("REGISTRY_GC_SCHEDULE", "0 4 * * *"),
];

/// `file` rendered as the launcher renders it (project `example` under
/// /srv), with `env` as the environment, as JSON.
fn rendered(file: &Path, text: &str, env: &BTreeMap<&str, &str>) -> Value {
    let root = Path::new("/srv");
    let paths = Paths::defaults(root, "example");
    let base = mc_launcher::config::model::template_context(
        root,
        "example",
        &paths,
        CgroupSize {
            cpus: 2,
            memory_max: None,
        },
    );
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ctx = minijinja::context! { env => env, ..base };
    let text = mc_launcher::template::render(file, text, ctx, true)
        .unwrap_or_else(|d| panic!("{}: {}", file.display(), d.msg));
    let doc = mc_launcher::yaml::parse(&text, file)
        .unwrap_or_else(|d| panic!("{}: {}", file.display(), d.msg));
    doc.to_json()
}

#[test]
fn every_config_of_the_repository_is_valid_and_names_the_schema() {
    let mut files = Vec::new();
    configs(&repo(), &mut files);
    files.sort();
    let examples: Vec<&Path> = files
        .iter()
        .map(|f| f.strip_prefix(repo()).expect("in repo"))
        .collect();
    for want in [
        "example-project/.salt/mc-launcher.yml",
        "example-registry/.salt/mc-launcher.yml",
    ] {
        assert!(
            examples.contains(&Path::new(want)),
            "{want} not found in {examples:?}"
        );
    }
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let first = text.lines().next().unwrap_or_default();
        let rel = first.strip_prefix(LANGUAGE_SERVER).unwrap_or_else(|| {
            panic!(
                "{}: the first line is not `{LANGUAGE_SERVER}…`",
                file.display()
            )
        });
        let dir = file.parent().expect("a directory");
        assert_eq!(
            dir.join(rel).canonicalize().ok(),
            repo().join(SCHEMA).canonicalize().ok(),
            "{}: `{rel}` is not {SCHEMA}",
            file.display()
        );
        // Every variable the file reads is set in the second rendering.
        for (i, _) in text.match_indices("env.") {
            let before = text[..i].chars().next_back().unwrap_or(' ');
            if before.is_ascii_alphanumeric() || "._".contains(before) {
                continue; // worker.env.j2
            }
            let name: String = text[i + 4..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                EXAMPLE_ENV.iter().any(|(n, _)| *n == name),
                "{}: env.{name}: add it to EXAMPLE_ENV",
                file.display()
            );
        }
        let envs = [
            ("no variable set", BTreeMap::new()),
            ("EXAMPLE_ENV", EXAMPLE_ENV.iter().copied().collect()),
        ];
        for (label, env) in envs {
            let doc = rendered(file, &text, &env);
            assert!(doc.is_object(), "{}: {doc}", file.display());
            for e in errors_of(&doc) {
                problems.push(format!("{} ({label}): {e}", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
