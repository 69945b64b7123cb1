//! example-project/kubernetes/: the manifests are valid against the real
//! Kubernetes API schemas (offline, with the `kubernetes-validate` package
//! of the tools venv that scripts/setup-test-env.sh makes), they keep the
//! launcher's contract (probes, grace period and shutdown deadline, tmpfs
//! volumes of a read-only root, no subPath), and the example's launcher
//! really reads the ConfigMap and the Secret where the StatefulSet mounts
//! them, written by a reproduction of the kubelet's atomic writer
//! (tests/common/kubelet.rs, tested here too).

mod common;

use common::kubelet::{http_get_probe, kubelet_write, ProbeResult};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Kubernetes versions whose API schemas the manifests must satisfy: an
/// older release still common in clusters, and the newest the pinned
/// kubernetes-validate ships (scripts/setup-test-env.sh pins the package).
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// A hang guard for the launcher runs, not a performance bound.
const HANG_GUARD: Duration = Duration::from_secs(600);

fn k8s_dir() -> PathBuf {
    repo().join("example-project/kubernetes")
}

/// The tools venv: `MC_TOOLS_VENV`, with the setup script's default.
fn tools_venv() -> PathBuf {
    std::env::var_os("MC_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/mc-launcher-test/tools-venv".into())
}

fn validator() -> PathBuf {
    let exe = tools_venv().join("bin/kubernetes-validate");
    assert!(
        exe.exists(),
        "{} is missing: run scripts/setup-test-env.sh",
        exe.display()
    );
    exe
}

/// What the validator said about some files.
struct Verdict {
    ok: bool,
    output: String,
}

/// Run `kubernetes-validate --strict` on `files` for every version, and
/// judge its output strictly: the tool exits 0 with only a warning for a
/// kind it has no schema for (a misspelled `kind` would pass) and says
/// nothing at all about an empty file, so every file must have a `passed`
/// line per version and no line may be anything but INFO.
fn validate(files: &[PathBuf]) -> Verdict {
    let mut c = Command::new(validator());
    c.arg("--strict");
    for v in KUBERNETES_VERSIONS {
        c.args(["-k", v]);
    }
    let out = c.args(files).output().expect("run kubernetes-validate");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ok = out.status.success();
    if output.lines().any(|l| !l.starts_with("INFO ")) {
        ok = false;
    }
    for f in files {
        for v in KUBERNETES_VERSIONS {
            let minor = v.rsplit_once('.').map_or(*v, |(mm, _)| mm);
            let passed = output.lines().any(|l| {
                l.starts_with(&format!("INFO {} passed for resource ", f.display()))
                    && l.ends_with(&format!(" against version {minor}"))
            });
            ok &= passed;
        }
    }
    Verdict { ok, output }
}

/// One manifest (one YAML document), as JSON.
fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        !text.contains("\n---"),
        "{}: one object per file",
        path.display()
    );
    mc_launcher::yaml::parse(&text, path)
        .unwrap_or_else(|d| panic!("{d}"))
        .to_json()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The manifests of a kustomization directory, by file name, as its
/// `resources` list names them.
fn resources(dir: &Path) -> Vec<PathBuf> {
    let k = load(&dir.join("kustomization.yaml"));
    strs(&k["resources"]).iter().map(|r| dir.join(r)).collect()
}

fn base_manifests() -> Vec<PathBuf> {
    resources(&k8s_dir().join("base"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn base_objects() -> Vec<Value> {
    base_manifests().iter().map(|p| load(p)).collect()
}

/// Apply one RFC 6902 operation (add, remove, replace, test): what
/// kustomize does with a JSON patch.
fn json_patch_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("an operation without a path")?;
    let value = op.get("value").cloned();
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("{path}: not a JSON pointer"))?;
    let last = last.replace("~1", "/").replace("~0", "~");
    match op["op"].as_str() {
        Some("test") => match doc.pointer(path) {
            Some(found) if Some(found) == value.as_ref() => Ok(()),
            found => Err(format!("test {path}: found {found:?}, wanted {value:?}")),
        },
        Some("replace") => {
            let slot = doc
                .pointer_mut(path)
                .ok_or_else(|| format!("replace {path}: no such path"))?;
            *slot = value.ok_or("replace without a value")?;
            Ok(())
        }
        Some(kind @ ("add" | "remove")) => {
            let target = doc
                .pointer_mut(parent)
                .ok_or_else(|| format!("{kind} {path}: no parent"))?;
            match (target, kind) {
                (Value::Array(a), "remove") => {
                    let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
                    if i >= a.len() {
                        return Err(format!("remove {path}: out of range"));
                    }
                    a.remove(i);
                    Ok(())
                }
                (Value::Array(a), _) => {
                    let v = value.ok_or("add without a value")?;
                    if last == "-" {
                        a.push(v);
                    } else {
                        let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
                        if i > a.len() {
                            return Err(format!("add {path}: out of range"));
                        }
                        a.insert(i, v);
                    }
                    Ok(())
                }
                (Value::Object(m), "remove") => m
                    .remove(&last)
                    .map(|_| ())
                    .ok_or_else(|| format!("remove {path}: no such key")),
                (Value::Object(m), _) => {
                    m.insert(last, value.ok_or("add without a value")?);
                    Ok(())
                }
                _ => Err(format!("{kind} {path}: parent is not a container")),
            }
        }
        other => Err(format!("unsupported operation {other:?}")),
    }
}

/// Render an overlay as `kubectl kustomize` would: its base's objects with
/// the JSON patches applied. Only what the overlays here use is supported;
/// anything else fails the test rather than rendering something else.
fn render_overlay(dir: &Path) -> Vec<Value> {
    let k = load(&dir.join("kustomization.yaml"));
    for key in k.as_object().expect("kustomization").keys() {
        assert!(
            ["apiVersion", "kind", "resources", "patches"].contains(&key.as_str()),
            "{}: `{key}` is not rendered by this test",
            dir.display()
        );
    }
    let mut objects = Vec::new();
    for r in strs(&k["resources"]) {
        let base = dir.join(&r);
        assert!(base.join("kustomization.yaml").exists(), "{r}: not a base");
        objects.extend(resources(&base).iter().map(|p| load(p)));
    }
    for patch in k["patches"].as_array().cloned().unwrap_or_default() {
        let (kind, name) = (&patch["target"]["kind"], &patch["target"]["name"]);
        let text = patch["patch"].as_str().expect("an inline JSON patch");
        let ops = mc_launcher::yaml::parse(text, &dir.join("kustomization.yaml"))
            .unwrap_or_else(|d| panic!("{d}"))
            .to_json();
        let ops = ops.as_array().expect("a JSON patch is a list").clone();
        let mut matched = 0;
        for o in objects.iter_mut() {
            if o["kind"] == *kind && o["metadata"]["name"] == *name {
                matched += 1;
                for op in &ops {
                    json_patch_op(o, op).unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
                }
            }
        }
        assert_eq!(matched, 1, "patch target {kind} {name}");
    }
    objects
}

/// Write objects as JSON files (valid YAML) for the validator.
fn write_objects(dir: &Path, tag: &str, objects: &[Value]) -> Vec<PathBuf> {
    objects
        .iter()
        .map(|o| {
            let kind = o["kind"].as_str().unwrap_or("x").to_lowercase();
            let name = o["metadata"]["name"].as_str().unwrap_or("x");
            let p = dir.join(format!("{tag}-{kind}-{name}.json"));
            std::fs::write(&p, serde_json::to_string_pretty(o).expect("json")).expect("write");
            p
        })
        .collect()
}

fn pod_spec(sts: &Value) -> &Value {
    &sts["spec"]["template"]["spec"]
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_of(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| {
                    let value = v["value"].as_str().expect("env values are plain strings");
                    (v["name"].as_str().unwrap_or("").to_string(), value.into())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// volume name -> mount path in `c`.
fn mounts_of(c: &Value) -> BTreeMap<String, String> {
    c["volumeMounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let name = m["name"].as_str().unwrap_or("").to_string();
                    (name, m["mountPath"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pod volume whose `field` (configMap, secret, emptyDir) matches.
/// The container port named `name`.
fn named_port(c: &Value, name: &str) -> u64 {
    c["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port named {name}"))
}

fn volume_with<'a>(pod: &'a Value, field: &str) -> Vec<&'a Value> {
    pod["volumes"]
        .as_array()
        .map(|vs| vs.iter().filter(|v| v.get(field).is_some()).collect())
        .unwrap_or_default()
}

/// The pod's first volume of `field` (`configMap` or `secret`) and the
/// ConfigMap or Secret among `objects` that it mounts.
fn mounted<'a>(objects: &'a [Value], pod: &'a Value, field: &str) -> (&'a Value, &'a Value) {
    let volume = volume_with(pod, field)[0];
    let (kind, name) = match field {
        "configMap" => ("ConfigMap", &volume["configMap"]["name"]),
        _ => ("Secret", &volume["secret"]["secretName"]),
    };
    (volume, find(objects, kind, name.as_str().expect("name")))
}

fn duration(text: &str) -> Duration {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Duration::from_secs(text.parse().expect("seconds"));
    }
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

// ---------------------------------------------------------------------------
// Schema validation

#[test]
fn every_manifest_is_valid_against_the_kubernetes_api_schemas() {
    let files = base_manifests();
    assert!(files.len() >= 5, "{files:?}");
    let v = validate(&files);
    assert!(v.ok, "invalid manifests:\n{}", v.output);
}

#[test]
fn the_non_root_overlay_renders_to_valid_manifests() {
    let t = TempDir::new("k8s-overlay");
    let objects = render_overlay(&k8s_dir().join("non-root"));
    let files = write_objects(t.path(), "non-root", &objects);
    let v = validate(&files);
    assert!(v.ok, "invalid rendered overlay:\n{}", v.output);

    let sts = find(&objects, "StatefulSet", "example");
    let pod = pod_spec(sts);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    let c = container(pod, "example");
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(c["securityContext"]["capabilities"].get("add").is_none());
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    for svc in ["example", "example-headless"] {
        let ports = &find(&objects, "Service", svc)["spec"]["ports"];
        assert!(
            !ports.to_string().contains("\"ssh\""),
            "{svc} still has ssh: {ports}"
        );
    }
    assert!(
        !c["ports"].to_string().contains("\"ssh\""),
        "{}",
        c["ports"]
    );
    // A non-root launcher cannot take a root-owned emptyDir as its 0700
    // state dir: none is mounted there, it falls back to /run/mc-launcher.
    let mounts = mounts_of(c);
    assert!(
        !mounts.values().any(|m| m == "/var/lib/mc-launcher"),
        "{mounts:?}"
    );
    assert!(mounts.values().any(|m| m == "/run"), "{mounts:?}");
    let claims = sts["spec"]["volumeClaimTemplates"].as_array();
    let volumes: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .chain(claims)
        .flatten()
        .filter_map(|v| v["name"].as_str().or(v["metadata"]["name"].as_str()))
        .collect();
    let mounted: BTreeSet<&str> = mounts.keys().map(String::as_str).collect();
    assert_eq!(volumes, mounted, "every volume mounted, none missing");
}

/// The JSON patch applier the overlay test relies on refuses what kustomize
/// refuses: a failed `test` (an index that moved), a missing path.
#[test]
fn json_patches_apply_as_rfc_6902_says() {
    let mut doc = json!({"a": [{"name": "x"}, {"name": "ssh"}], "b": {"c~d/e": 1}});
    json_patch_op(
        &mut doc,
        &json!({"op": "test", "path": "/a/1/name", "value": "ssh"}),
    )
    .expect("test");
    json_patch_op(&mut doc, &json!({"op": "remove", "path": "/a/1"})).expect("remove");
    json_patch_op(&mut doc, &json!({"op": "add", "path": "/a/-", "value": 3})).expect("add");
    json_patch_op(
        &mut doc,
        &json!({"op": "replace", "path": "/b/c~0d~1e", "value": 2}),
    )
    .expect("escaped");
    assert_eq!(doc, json!({"a": [{"name": "x"}, 3], "b": {"c~d/e": 2}}));
    for bad in [
        json!({"op": "test", "path": "/a/0/name", "value": "ssh"}),
        json!({"op": "remove", "path": "/a/5"}),
        json!({"op": "replace", "path": "/nope", "value": 1}),
        json!({"op": "move", "from": "/a", "path": "/z"}),
    ] {
        assert!(json_patch_op(&mut doc, &bad).is_err(), "{bad} applied");
    }
}

/// A check that cannot fail is no check: a misspelled field must be
/// refused, and so must a kind the validator has no schema for (which the
/// tool itself only warns about).
#[test]
fn the_validator_refuses_a_misspelled_field_and_an_unknown_kind() {
    let t = TempDir::new("k8s-negative");
    let text =
        std::fs::read_to_string(k8s_dir().join("base/statefulset.yaml")).expect("statefulset");

    let field = "terminationGracePeriodSeconds:";
    assert!(text.contains(field));
    let typo = t.join("typo.yaml");
    write(&typo, &text.replace(field, "terminationGracePeriodSecond:"));
    let v = validate(std::slice::from_ref(&typo));
    assert!(!v.ok, "a misspelled field passed:\n{}", v.output);
    assert!(
        v.output.contains("ERROR ")
            && v.output
                .contains("'terminationGracePeriodSecond' was unexpected"),
        "{}",
        v.output
    );

    let wrong_type = t.join("wrong-type.yaml");
    write(&wrong_type, &text.replace("replicas: 1", "replicas: one"));
    let v = validate(std::slice::from_ref(&wrong_type));
    assert!(!v.ok, "a string replica count passed:\n{}", v.output);

    let kind = t.join("kind.yaml");
    write(
        &kind,
        &text.replace("kind: StatefulSet", "kind: StatefulSett"),
    );
    let v = validate(std::slice::from_ref(&kind));
    assert!(!v.ok, "an unknown kind passed:\n{}", v.output);
    assert!(v.output.contains("WARN "), "{}", v.output);

    let empty = t.join("empty.yaml");
    write(&empty, "# nothing but a comment\n");
    let v = validate(std::slice::from_ref(&empty));
    assert!(!v.ok, "an empty file passed:\n{}", v.output);

    // And the unchanged file passes the same way, so the refusals above
    // are about the edits.
    let same = t.join("same.yaml");
    write(&same, &text);
    let v = validate(std::slice::from_ref(&same));
    assert!(v.ok, "{}", v.output);
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let base = k8s_dir().join("base");
    let listed: BTreeSet<PathBuf> = base_manifests().into_iter().collect();
    let on_disk: BTreeSet<PathBuf> = std::fs::read_dir(&base)
        .expect("base")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    assert_eq!(listed, on_disk);
    // The directory holds the base and its overlays, nothing loose.
    assert_eq!(entries(&k8s_dir()), names(&["base", "non-root"]));
}

// ---------------------------------------------------------------------------
// The launcher's contract, as the StatefulSet must keep it

#[test]
fn the_statefulset_keeps_the_launcher_contract() {
    let objects = base_objects();
    let sts = find(&objects, "StatefulSet", "example");
    let pod = pod_spec(sts);
    let c = container(pod, "example");
    let env = env_of(c);

    // The launcher's whole stop ends a little before the kubelet's SIGKILL.
    let grace = Duration::from_secs(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
    );
    let deadline = duration(env.get("MC_SHUTDOWN_TIMEOUT").expect("MC_SHUTDOWN_TIMEOUT"));
    assert!(
        deadline < grace && grace - deadline >= Duration::from_secs(2),
        "MC_SHUTDOWN_TIMEOUT {deadline:?} must end a little before the grace {grace:?}"
    );
    assert_eq!(grace, Duration::from_secs(30));
    assert_eq!(deadline, Duration::from_secs(25));

    // A ConfigMap update is applied live (README "Live reconfigure").
    assert_eq!(
        env.get("MC_EXAMPLE_RECONFIGURE_WATCH").map(String::as_str),
        Some("true")
    );

    // Probes: httpGet of the launcher's own endpoints, on its named port,
    // which is where MC_EXAMPLE_HTTP_LISTEN (http.listen) has it listen on
    // every address (the kubelet asks on the pod's IP).
    let probe = |p: &str| {
        let g = &c[p]["httpGet"];
        assert!(c[p].get("exec").is_none(), "{p}: no process per probe");
        (
            g["path"].as_str().unwrap_or("").to_string(),
            g["port"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(probe("livenessProbe"), ("/livez".into(), "health".into()));
    assert_eq!(probe("readinessProbe"), ("/readyz".into(), "health".into()));
    assert_eq!(probe("startupProbe"), ("/livez".into(), "health".into()));
    assert_eq!(
        env.get("MC_EXAMPLE_HTTP_LISTEN").map(String::as_str),
        Some(format!(":{}", named_port(c, "health")).as_str())
    );

    // The termination report.
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");

    // The local image, never pulled.
    for ct in pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten()
    {
        assert_eq!(ct["image"], "mc-launcher/example:latest");
        assert_eq!(ct["imagePullPolicy"], "Never");
        assert_eq!(ct["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(ct["securityContext"]["allowPrivilegeEscalation"], false);
        for m in ct["volumeMounts"].as_array().into_iter().flatten() {
            assert!(m.get("subPath").is_none(), "subPath never updates: {m}");
            assert!(m.get("subPathExpr").is_none(), "{m}");
        }
    }

    // A read-only root: every place the launcher writes outside the
    // volume is a tmpfs emptyDir.
    let mounts = mounts_of(c);
    let tmpfs: BTreeMap<&str, &str> = volume_with(pod, "emptyDir")
        .into_iter()
        .filter(|v| v["emptyDir"]["medium"] == "Memory")
        .filter_map(|v| {
            let name = v["name"].as_str()?;
            Some((mounts.get(name)?.as_str(), name))
        })
        .collect();
    for dir in [
        "/run",
        "/var/lib/mc-launcher",
        "/tmp",
        "/root/.ssh",
        "/srv/projects/example/pillar",
    ] {
        assert!(tmpfs.contains_key(dir), "{dir} is not a tmpfs: {tmpfs:?}");
    }
    // The pillar tmpfs is seeded with the image's default before the start.
    let seed = &pod["initContainers"][0];
    let seed_mount = mounts_of(seed)
        .get(tmpfs["/srv/projects/example/pillar"])
        .cloned()
        .expect("the init container mounts the pillar tmpfs");
    let cmd = strs(&seed["command"]);
    assert_eq!(
        cmd.get(2..).map(<[String]>::to_vec),
        Some(vec![
            "/srv/projects/example/pillar/.".to_string(),
            format!("{seed_mount}/")
        ]),
        "{cmd:?}"
    );

    // The data volume is the claim template; the ConfigMap and the Secret
    // are mounted inside it (the launcher follows their `..data` links only
    // inside the volume), read-only.
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a claim template");
    let data = &mounts[claim];
    assert_eq!(data, "/srv/projects/example/data");
    for field in ["configMap", "secret"] {
        let v = volume_with(pod, field);
        assert_eq!(v.len(), 1, "{field}");
        let name = v[0]["name"].as_str().expect("name");
        let at = &mounts[name];
        assert!(at.starts_with(&format!("{data}/")), "{field} at {at}");
        assert_ne!(
            at,
            &format!("{data}/configuration"),
            "configuration/ is written by the launcher: a read-only mount there breaks app.json"
        );
        let m = c["volumeMounts"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .expect("mount");
        assert_eq!(m["readOnly"], true, "{m}");
    }
    let secret_at = &mounts[volume_with(pod, "secret")[0]["name"]
        .as_str()
        .expect("name")];
    assert_eq!(secret_at, &format!("{data}/ssh"), "ssh.keys_dirs' default");

    // The override's path names the ConfigMap's key in its mount.
    let (cm_volume, cm) = mounted(&objects, pod, "configMap");
    let cm_at = &mounts[cm_volume["name"].as_str().expect("name")];
    let source = env
        .get("MC_EXAMPLE_PILLAR_SOURCE")
        .expect("MC_EXAMPLE_PILLAR_SOURCE");
    let key = source
        .strip_prefix(&format!("{cm_at}/"))
        .unwrap_or_else(|| panic!("{source} is not in the ConfigMap mount {cm_at}"));
    assert!(cm["data"].get(key).is_some(), "the ConfigMap has no {key}");
    let (_, secret) = mounted(&objects, pod, "secret");
    let keys = secret["stringData"].as_object().expect("stringData");
    assert!(
        !keys.is_empty() && keys.keys().all(|k| k.ends_with(".pub")),
        "{keys:?}"
    );

    // The Services select the pod, on its named ports.
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    for svc in ["example", "example-headless"] {
        let s = find(&objects, "Service", svc);
        for (k, v) in s["spec"]["selector"].as_object().expect("selector") {
            assert_eq!(&labels[k], v, "{svc} selects {k}");
        }
        let ports: Vec<(u64, String)> = s["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().unwrap_or(0),
                    p["targetPort"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(ports, [(8080, "http".into()), (22, "ssh".into())], "{svc}");
    }
    let named: Vec<(String, u64)> = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["containerPort"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("http".into(), 8080),
            ("ssh".into(), 22),
            ("health".into(), 9300)
        ]
    );
    assert_eq!(sts["spec"]["serviceName"], "example-headless");
    assert_eq!(
        find(&objects, "Service", "example-headless")["spec"]["clusterIP"],
        "None"
    );
}

// ---------------------------------------------------------------------------
// The kubelet's atomic writer

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The set of `list`, to compare with `entries`.
fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn link(p: &Path) -> PathBuf {
    std::fs::read_link(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// `..YYYY_MM_DD_HH_MM_SS.N`: the date part, or None.
fn stamp_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("..")?;
    let (stamp, n) = rest.split_once('.')?;
    let fields: Vec<&str> = stamp.split('_').collect();
    let widths = [4, 2, 2, 2, 2, 2];
    let ok = fields.len() == 6
        && fields
            .iter()
            .zip(widths)
            .all(|(f, w)| f.len() == w && f.bytes().all(|b| b.is_ascii_digit()))
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && n.parse::<u32>().is_ok();
    ok.then_some(stamp)
}

fn utc_date() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y_%m_%d_%H_%M_%S"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn kubelet_writer_leaves_what_the_kubelet_leaves() {
    let t = TempDir::new("kubelet");
    let dir = t.join("configmap");
    std::fs::create_dir(&dir).expect("mount point");

    // A write of `payload`: the directory ..data then names, and its name.
    let update = |payload: &[(&str, &[u8], u32)], what: &str| {
        kubelet_write(&dir, payload).expect(what);
        let data = link(&dir.join("..data"));
        let name = data.to_string_lossy().into_owned();
        (data, name)
    };
    let before = utc_date();
    let (first, first_name) = update(
        &[
            ("pillar.sls", b"a: 1\n", 0o644),
            ("extra.txt", b"gone soon\n", 0o644),
            ("operator.pub", b"key\n", 0o400),
        ],
        "first write",
    );
    let after = utc_date();
    let stamp = stamp_of(&first_name).unwrap_or_else(|| panic!("{first_name}"));
    // The name carries the UTC time of the write, to the second.
    assert!(
        before.as_str() <= stamp && stamp <= after.as_str(),
        "{before} <= {stamp} <= {after}"
    );
    assert_eq!(first.components().count(), 1, "..data -> a bare name");
    assert_eq!(mode(&dir.join(&first)), 0o755);
    assert_eq!(mode(&dir.join(&first).join("pillar.sls")), 0o644);
    assert_eq!(mode(&dir.join(&first).join("operator.pub")), 0o400);
    assert_eq!(
        entries(&dir),
        names(&[
            "..data",
            &first_name,
            "extra.txt",
            "operator.pub",
            "pillar.sls"
        ])
    );

    // A reader that opened the file before the update.
    let user_path = dir.join("pillar.sls");
    let link_inode = std::fs::symlink_metadata(&user_path).expect("lstat").ino();
    let file_inode = std::fs::metadata(&user_path).expect("stat").ino();
    let mut held = std::fs::File::open(&user_path).expect("open");

    // Second update: pillar.sls changes, extra.txt leaves, new.txt arrives.
    let (second, second_name) = update(
        &[
            ("pillar.sls", b"a: 2\n", 0o644),
            ("operator.pub", b"key\n", 0o400),
            ("new.txt", b"new\n", 0o600),
        ],
        "second write",
    );
    assert!(stamp_of(&second_name).is_some(), "{second_name}");
    assert_ne!(second, first);
    // Exactly the kubelet's layout: the new directory, ..data, one link per
    // name; the old directory, the removed name and ..data_tmp are gone.
    assert_eq!(
        entries(&dir),
        names(&[
            "..data",
            &second_name,
            "new.txt",
            "operator.pub",
            "pillar.sls"
        ])
    );
    assert!(!dir.join(&first).exists());
    for name in ["pillar.sls", "operator.pub", "new.txt"] {
        assert_eq!(link(&dir.join(name)), Path::new("..data").join(name));
    }
    assert_eq!(
        entries(&dir.join(&second)),
        names(&["new.txt", "operator.pub", "pillar.sls"])
    );
    assert_eq!(mode(&dir.join(&second).join("new.txt")), 0o600);

    // Opening by the user path gives the new content, through ..data.
    assert_eq!(std::fs::read(&user_path).expect("read"), b"a: 2\n");
    assert_eq!(
        std::fs::canonicalize(&user_path).expect("resolve"),
        std::fs::canonicalize(&dir)
            .expect("dir")
            .join(&second)
            .join("pillar.sls")
    );
    // The visible link is the very same inode: only ..data moved. The file
    // behind it is a new one, and the reader that kept the old one open
    // still reads the old content (why a watcher must re-open the path).
    assert_eq!(
        std::fs::symlink_metadata(&user_path).expect("lstat").ino(),
        link_inode
    );
    assert_ne!(
        std::fs::metadata(&user_path).expect("stat").ino(),
        file_inode
    );
    let mut old = String::new();
    std::io::Read::read_to_string(&mut held, &mut old).expect("read held");
    assert_eq!(old, "a: 1\n");
}

#[test]
fn kubelet_writer_skips_an_unchanged_payload_and_empties_a_deleted_one() {
    let t = TempDir::new("kubelet-same");
    let dir = t.join("v");
    std::fs::create_dir(&dir).expect("dir");
    let payload: &[(&str, &[u8], u32)] = &[("pillar.sls", b"a: 1\n", 0o644)];
    kubelet_write(&dir, payload).expect("write");
    let first = link(&dir.join("..data"));
    kubelet_write(&dir, payload).expect("same again");
    assert_eq!(link(&dir.join("..data")), first, "no new directory");
    assert!(dir.join(&first).is_dir());

    // What a deleted `optional: true` ConfigMap becomes: an empty payload.
    kubelet_write(&dir, &[]).expect("empty");
    let empty = link(&dir.join("..data"));
    assert_ne!(empty, first);
    assert_eq!(
        entries(&dir),
        ["..data".to_string(), empty.to_string_lossy().into_owned()]
            .into_iter()
            .collect()
    );
    assert!(entries(&dir.join(&empty)).is_empty());

    // Paths the kubelet refuses.
    for bad in ["", "/abs", "../up", "a/../b", "..hidden", "..data"] {
        assert!(
            kubelet_write(&dir, &[(bad, b"x", 0o644)]).is_err(),
            "{bad:?} accepted"
        );
    }
    // Nested items: the top-level name links into ..data.
    kubelet_write(&dir, &[("conf/app.yml", b"x: 1\n", 0o644)]).expect("nested");
    assert_eq!(link(&dir.join("conf")), Path::new("..data/conf"));
    assert_eq!(
        std::fs::read(dir.join("conf/app.yml")).expect("read"),
        b"x: 1\n"
    );
}

// ---------------------------------------------------------------------------
// The example's launcher, on the StatefulSet's layout

/// A syntactically valid ed25519 public key line (random key bytes).
fn ed25519_line(seed: u8, comment: &str) -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend((0..32u8).map(|i| i.wrapping_mul(7).wrapping_add(seed)));
    format!(
        "ssh-ed25519 {} {comment}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// Where a path of the pod lands in the test's tree.
fn in_tree(srv: &Path, pod_path: &str) -> PathBuf {
    srv.join(
        pod_path
            .strip_prefix("/srv/")
            .unwrap_or_else(|| panic!("{pod_path} is not under /srv")),
    )
}

fn prepare(srv: &Path, state: &Path, env: &BTreeMap<String, String>) -> Output {
    let mut l = Launch::new(&["--root", &srv.to_string_lossy(), "prepare"])
        .not_pid1()
        // The image's `root` and its sshd are the container's; here the
        // keys go to a private /root tmpfs and no sshd is set up.
        .env("MC_EXAMPLE_STATE", &state.to_string_lossy())
        .env("MC_EXAMPLE_SSHD", "never")
        .after("cat /root/.ssh/authorized_keys")
        .timeout(HANG_GUARD);
    for (k, v) in env {
        let v = if v.starts_with("/srv/") {
            in_tree(srv, v).to_string_lossy().into_owned()
        } else {
            v.clone()
        };
        l = l.env(k, &v);
    }
    l.run()
}

fn site_name(app_json: &Path) -> String {
    let text = std::fs::read_to_string(app_json).expect("app.json");
    let v: Value = serde_json::from_str(&text).expect("app.json is JSON");
    v["site_name"].as_str().expect("site_name").to_string()
}

/// The example's mc-launcher.yml with the StatefulSet's environment reads
/// the pillar from the ConfigMap's mount and the keys from the Secret's,
/// both laid out by the kubelet's writer; an update (here picked up by the
/// next start) installs the new pillar; a deleted ConfigMap brings back
/// the image default. Live, without a restart, once `reconfigure.watch`
/// is on.
#[test]
fn the_example_launcher_reads_the_statefulset_layout() {
    let t = TempDir::new("k8s-prepare");
    let srv = t.join("srv");
    install_example(&srv);
    let state = t.join("state");
    let image_default =
        std::fs::read_to_string(srv.join("projects/example/pillar/init.sls")).expect("init.sls");

    let objects = base_objects();
    let sts = find(&objects, "StatefulSet", "example");
    let pod = pod_spec(sts);
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a claim template");
    let c = container(pod, "example");
    let env = env_of(c);
    let mounts = mounts_of(c);
    let (cm_volume, cm) = mounted(&objects, pod, "configMap");
    let (secret_volume, secret) = mounted(&objects, pod, "secret");
    let cm_mode = cm_volume["configMap"]["defaultMode"]
        .as_u64()
        .unwrap_or(0o644) as u32;
    let secret_mode = secret_volume["secret"]["defaultMode"]
        .as_u64()
        .unwrap_or(0o644) as u32;
    let volume = in_tree(&srv, &mounts[claim]);
    assert_eq!(volume, srv.join("projects/example/data"));

    // The mount points, fresh as the runtime makes them (the image's ssh/
    // README is hidden by the Secret's mount).
    let cm_dir = in_tree(&srv, &mounts[cm_volume["name"].as_str().expect("name")]);
    let ssh_dir = in_tree(&srv, &mounts[secret_volume["name"].as_str().expect("name")]);
    let _ = std::fs::remove_dir_all(&ssh_dir);
    std::fs::create_dir_all(&ssh_dir).expect("ssh mount point");
    std::fs::create_dir_all(&cm_dir).expect("configmap mount point");

    let pillar = cm["data"]["pillar.sls"]
        .as_str()
        .expect("pillar.sls")
        .to_string();
    let wanted_site = mc_launcher::yaml::parse(&pillar, Path::new("pillar.sls"))
        .expect("the ConfigMap's pillar is YAML")
        .to_json()["makina-projects.example"]["data"]["site_name"]
        .as_str()
        .expect("site_name")
        .to_string();
    kubelet_write(&cm_dir, &[("pillar.sls", pillar.as_bytes(), cm_mode)]).expect("configmap");
    let keys: Vec<(String, String)> = secret["stringData"]
        .as_object()
        .expect("stringData")
        .iter()
        .map(|(k, v)| (k.clone(), format!("{}\n", v.as_str().expect("key line"))))
        .collect();
    let payload: Vec<(&str, &[u8], u32)> = keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes(), secret_mode))
        .collect();
    kubelet_write(&ssh_dir, &payload).expect("secret");

    let app_json = volume.join("configuration/app.json");
    let init = srv.join("projects/example/pillar/init.sls");

    let out = prepare(&srv, &state, &env);
    let all = out.all();
    assert_eq!(out.code, Some(0), "{all}");
    assert!(all.contains("pillar: installed the override"), "{all}");
    assert_eq!(std::fs::read_to_string(&init).expect("init.sls"), pillar);
    assert_eq!(site_name(&app_json), wanted_site);
    for (_, line) in &keys {
        assert!(
            out.stdout.contains(line.trim()),
            "key not installed:\n{all}"
        );
    }

    // The kubelet syncs an edited ConfigMap and a new set of keys.
    let edited = pillar.replace(&wanted_site, "Edited in the ConfigMap");
    assert_ne!(edited, pillar);
    kubelet_write(&cm_dir, &[("pillar.sls", edited.as_bytes(), cm_mode)]).expect("update");
    let second = ed25519_line(3, "second@example");
    kubelet_write(
        &ssh_dir,
        &[("second.pub", format!("{second}\n").as_bytes(), secret_mode)],
    )
    .expect("keys update");
    let out = prepare(&srv, &state, &env);
    let all = out.all();
    assert_eq!(out.code, Some(0), "{all}");
    assert_eq!(std::fs::read_to_string(&init).expect("init.sls"), edited);
    assert_eq!(site_name(&app_json), "Edited in the ConfigMap");
    assert!(out.stdout.contains(&second), "{all}");
    for (_, line) in &keys {
        assert!(
            !out.stdout.contains(line.trim()),
            "revoked key kept:\n{all}"
        );
    }

    // The ConfigMap deleted (it is optional): the image default is back.
    kubelet_write(&cm_dir, &[]).expect("deleted");
    let out = prepare(&srv, &state, &env);
    let all = out.all();
    assert_eq!(out.code, Some(0), "{all}");
    assert!(all.contains("the image default is back"), "{all}");
    assert_eq!(
        std::fs::read_to_string(&init).expect("init.sls"),
        image_default
    );
    assert_eq!(site_name(&app_json), "An example makina project");
}

/// The kubelet's httpGet probes, replayed against the example's launcher
/// run as PID 1 with the StatefulSet's environment: the startup probe
/// passes once the launcher is up, readiness once web is ready, liveness
/// all along; from the first moment of a stop (the drain) readiness fails
/// with the launcher's reason. The probe's address is the pod's: here a
/// free port on 127.0.0.1 in place of the manifest's `:9300`.
#[test]
fn the_httpget_probes_follow_the_example_launcher() {
    let t = TempDir::new("k8s-probes");
    let srv = t.join("srv");
    let st = Command::new(repo().join("layout/install"))
        .arg(&srv)
        .arg("example")
        .arg(repo().join("example-project"))
        .status()
        .expect("layout/install");
    assert!(st.success());
    let objects = base_objects();
    let sts = find(&objects, "StatefulSet", "example");
    let pod = pod_spec(sts);
    let c = container(pod, "example");
    let mut env = env_of(c);
    let mounts = mounts_of(c);
    let (cm_volume, cm) = mounted(&objects, pod, "configMap");
    let cm_dir = in_tree(&srv, &mounts[cm_volume["name"].as_str().expect("name")]);
    std::fs::create_dir_all(&cm_dir).expect("configmap mount point");
    // web on a free port of its own (the pod's 8080 may be taken here).
    let web_port = free_port();
    let pillar = format!(
        "{}    host: 127.0.0.1\n    port: {web_port}\n",
        cm["data"]["pillar.sls"].as_str().expect("pillar.sls")
    );
    kubelet_write(&cm_dir, &[("pillar.sls", pillar.as_bytes(), 0o644)]).expect("configmap");

    let health_port = free_port();
    assert_eq!(
        env.get("MC_EXAMPLE_HTTP_LISTEN").map(String::as_str),
        Some(format!(":{}", named_port(c, "health")).as_str())
    );
    env.insert(
        "MC_EXAMPLE_HTTP_LISTEN".into(),
        format!("127.0.0.1:{health_port}"),
    );
    env.insert("MC_EXAMPLE_DRAIN".into(), "1s".into());
    let state = t.join("state");
    let mut l = Launch::new(&["--root", &srv.to_string_lossy()])
        .env("MC_EXAMPLE_STATE", &state.to_string_lossy())
        .env("MC_EXAMPLE_SSHD", "never")
        .timeout(HANG_GUARD);
    for (k, v) in &env {
        let v = if v.starts_with("/srv/") {
            in_tree(&srv, v).to_string_lossy().into_owned()
        } else {
            v.clone()
        };
        l = l.env(k, &v);
    }
    let run = l.spawn();
    let addr = format!("127.0.0.1:{health_port}");
    let probe = |name: &str| {
        let p = &c[name];
        let timeout = Duration::from_secs(p["timeoutSeconds"].as_u64().unwrap_or(1));
        let path = p["httpGet"]["path"].as_str().expect("httpGet.path");
        http_get_probe(&addr, path, timeout)
    };
    // The kubelet asks the startup probe until it passes (every
    // periodSeconds; here as fast as it answers), then the others.
    let mut last = ProbeResult::Failure(String::new());
    let started = wait_until(Duration::from_secs(60), || {
        last = probe("startupProbe");
        matches!(last, ProbeResult::Success(_))
    });
    assert!(started, "the startup probe never passed: {last:?}");
    assert_eq!(last, ProbeResult::Success("alive\n".into()));
    let ready = wait_until(Duration::from_secs(60), || {
        last = probe("readinessProbe");
        matches!(last, ProbeResult::Success(_))
    });
    assert!(ready, "never ready: {last:?}");
    assert_eq!(last, ProbeResult::Success("healthy\n".into()));
    assert!(
        http_get(&format!("127.0.0.1:{web_port}"), "/").is_some(),
        "web serves"
    );
    assert_eq!(
        probe("livenessProbe"),
        ProbeResult::Success("alive\n".into())
    );
    // The stop: not ready at once (the drain keeps web serving), alive.
    run.signal(15);
    let draining = wait_until(Duration::from_secs(10), || {
        last = probe("readinessProbe");
        matches!(last, ProbeResult::Failure(_))
    });
    assert!(draining, "still ready while stopping: {last:?}");
    assert_eq!(
        last,
        ProbeResult::Failure("HTTP probe failed with statuscode: 503: stopping\n".into())
    );
    assert_eq!(
        probe("livenessProbe"),
        ProbeResult::Success("alive\n".into())
    );
    let o = run.wait();
    o.assert_code(0);
}
