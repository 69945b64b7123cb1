//! Env files, secrets and credentials (README "Env files and secrets"),
//! with the real binary as PID 1: the precedence of every source, Docker
//! (`/run/secrets`) and Kubernetes (`..data`) layouts, a rotated secret
//! applied at the next start, a private credentials directory owned by the
//! service's user; and a planted secret value looked for in every output
//! channel: the launcher's stdout and stderr, `check`, `render`,
//! `ctl status` (text and JSON), `ctl metrics`, the termination report and
//! the errors about bad inputs.

mod common;
use common::kubelet::kubelet_write;
use common::tree::Tree;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const PLANTED: &str = "PLANTED-s3cr3t-0f-the-db";
const ROTATED: &str = "ROTATED-s3cr3t-0f-the-db";
const ENV_SECRET: &str = "PLANTED-env-file-t0ken";
const K8S: &str = "PLANTED-k8s-passw0rd";
const DOCKER: &str = "PLANTED-docker-passw0rd";
const CRED: &str = "PLANTED-tls-key-b0dy";

fn assert_clean(channel: &str, text: &str) {
    for v in [PLANTED, ROTATED, ENV_SECRET, K8S, DOCKER, CRED] {
        assert!(!text.contains(v), "{channel} shows a secret value:\n{text}");
    }
}

/// The variables of an `env` dump (`KEY=value` lines, single-line values).
fn env_of(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn var(env: &[(String, String)], k: &str) -> Option<String> {
    env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.clone())
}

fn tree() -> Tree {
    let t = Tree::default_socket(
        "secrets",
        r#"termination_log: "{{ root }}/termination.log"
env_file: "{{ root }}/common.env"
services:
  app:
    cmd: ["/bin/sh", "-c", "env > {{ root }}/out/env.tmp && stat -c '%u %a' \"$CREDENTIALS_DIRECTORY\" \"$CREDENTIALS_DIRECTORY/tls.key\" > {{ root }}/out/cred-stat && cat \"$CREDENTIALS_DIRECTORY/tls.key\" > {{ root }}/out/cred && mv {{ root }}/out/env.tmp {{ root }}/out/env && exec sleep 1000"]
    uid: 65534
    gid: 65534
    env_file: ["{{ paths.volume }}/app.env", "second.env"]
    env: {FROM_ENV: env, OVER: env, OVER2: env}
    secrets:
      DB_PASSWORD: "{{ paths.volume }}/secrets/db"
      OVER2: "{{ paths.volume }}/secrets/db"
      K8S_PASSWORD: "{{ paths.volume }}/k8s/password"
      DOCKER_PASSWORD: /run/secrets/docker_pw
    credentials:
      tls.key: "{{ paths.volume }}/secrets/key"
"#,
    );
    let r = t.root();
    write(
        &r.join("common.env"),
        "# shared\nA=common\nOVER=common\nKEEP=common\n",
    );
    write(
        &t.volume().join("app.env"),
        &format!("export A=app\nB=first\nOVER=app\nTOKEN=\"{ENV_SECRET}\"\nQUOTED='$HOME lit'\n"),
    );
    write(
        &t.project().join(".salt/second.env"),
        "B=second\nMULTI=\"x\\ny\"\n",
    );
    write(&t.volume().join("secrets/db"), &format!("{PLANTED}\n"));
    write(&t.volume().join("secrets/key"), CRED);
    std::fs::create_dir_all(t.volume().join("k8s")).expect("k8s dir");
    kubelet_write(
        &t.volume().join("k8s"),
        &[("password", K8S.as_bytes(), 0o644)],
    )
    .expect("kubelet layout");
    let out = r.join("out");
    std::fs::create_dir_all(&out).expect("out");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    t
}

fn launch(t: &Tree, args: &[&str]) -> Launch {
    t.launch(args).before(&format!(
        "mkdir -p /run/secrets && printf '%s\\n' {DOCKER} > /run/secrets/docker_pw"
    ))
}

#[test]
fn every_source_reaches_the_service_and_no_value_any_output() {
    let t = tree();
    let out = t.root().join("out");
    let run = launch(&t, &[]).spawn();
    let env_file = out.join("env");
    assert!(
        wait_until(Duration::from_secs(10), || env_file.exists()),
        "app never started"
    );
    let env = env_of(&env_file);
    // Precedence, lowest first: launcher, top-level file, the service's
    // files in order, env, secrets.
    for (k, v) in [
        ("A", "app"),
        ("B", "second"),
        ("KEEP", "common"),
        ("OVER", "env"),
        ("OVER2", PLANTED),
        ("FROM_ENV", "env"),
        ("DB_PASSWORD", PLANTED),
        ("K8S_PASSWORD", K8S),
        ("DOCKER_PASSWORD", DOCKER),
        ("TOKEN", ENV_SECRET),
        ("QUOTED", "$HOME lit"),
        ("MULTI", "x"),
    ] {
        assert_eq!(var(&env, k).as_deref(), Some(v), "{k} in {env:?}");
    }
    // The credentials: a private copy, owned by the service's user.
    let cred_dir = var(&env, "CREDENTIALS_DIRECTORY").expect("CREDENTIALS_DIRECTORY");
    assert_eq!(cred_dir, "/run/credentials/app");
    assert_eq!(
        std::fs::read_to_string(out.join("cred")).expect("cred"),
        CRED
    );
    assert_eq!(
        std::fs::read_to_string(out.join("cred-stat")).expect("stat"),
        "65534 700\n65534 400\n"
    );

    // Every channel while it runs.
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["metrics"],
        &["health"],
    ] {
        let o = ctl(&run, args);
        assert_eq!(o.code, Some(0), "{args:?}: {}", o.all());
        assert_clean(&format!("ctl {args:?}"), &o.all());
    }
    for cmd in ["check", "render"] {
        let o = launch(&t, &[cmd]).not_pid1().run();
        assert_eq!(o.code, Some(0), "{cmd}: {}", o.all());
        assert_clean(cmd, &o.all());
    }

    // A rotated secret applies at the next start.
    write(&t.volume().join("secrets/db"), &format!("{ROTATED}\n"));
    std::fs::remove_file(&env_file).expect("rm env");
    let o = ctl(&run, &["restart", "app"]);
    o.assert_code(0);
    assert!(
        wait_until(Duration::from_secs(10), || env_file.exists()),
        "app never restarted"
    );
    assert_eq!(
        var(&env_of(&env_file), "DB_PASSWORD").as_deref(),
        Some(ROTATED)
    );

    let o = run.stop();
    o.assert_code(0);
    assert_clean("the launcher's stdout and stderr", &o.all());
    let report = std::fs::read_to_string(t.root().join("termination.log")).expect("report");
    assert!(report.contains("stopped on request"), "{report}");
    assert_clean("the termination report", &report);
}

#[test]
fn bad_inputs_are_named_by_path_and_line_never_quoted() {
    let t = tree();
    let vol = t.volume();
    // A bad line that holds a secret value, a FIFO, a link out of the
    // volume, a file too big.
    write(
        &vol.join("app.env"),
        &format!("A=1\nTOKEN = {ENV_SECRET}\n"),
    );
    std::fs::remove_file(vol.join("secrets/db")).expect("rm");
    nix_mkfifo(&vol.join("secrets/db"));
    let outside = t.root().join("outside-secret");
    write(&outside, &format!("{PLANTED}\n"));
    std::fs::remove_file(vol.join("secrets/key")).expect("rm");
    std::os::unix::fs::symlink(&outside, vol.join("secrets/key")).expect("link");

    let o = launch(&t, &["check"]).not_pid1().run();
    o.assert_code(78);
    let app_env = vol.join("app.env");
    for want in [
        format!("env_file {}:2: a space around `=`", app_env.display()),
        format!("secret DB_PASSWORD: {}", vol.join("secrets/db").display()),
        "FIFO".to_string(),
        format!("credential tls.key: {}", vol.join("secrets/key").display()),
        "outside".to_string(),
    ] {
        assert!(
            o.stderr.contains(&want),
            "check does not say {want}:\n{}",
            o.all()
        );
    }
    assert_clean("check on bad inputs", &o.all());

    // At run: each start of the service fails (retried under its backoff
    // until max_retry makes it FAILED), and the log says why, by path and
    // line.
    let o = launch(&t, &[]).run();
    o.assert_code(1);
    assert!(
        o.all()
            .contains(&format!("env_file {}:2", app_env.display())),
        "{}",
        o.all()
    );
    assert_clean("the log of failed starts", &o.all());
}

/// A file that some images leave where a secret should be.
fn nix_mkfifo(p: &std::path::Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .expect("mkfifo");
    assert!(st.success());
}

/// `check` on a file that is not there yet: a warning naming it, unless a
/// `template` step of the prepare phase writes it.
#[test]
fn check_warns_about_a_missing_file_unless_a_template_writes_it() {
    let t = Tree::default_socket(
        "secrets-missing",
        r#"reconfigure:
  steps:
    - template: {src: "{{ root }}/w.env.j2", dest: "{{ paths.volume }}/rendered.env"}
services:
  a:
    cmd: [sleep, "1000"]
    env_file: ["{{ paths.volume }}/rendered.env", "{{ paths.volume }}/absent.env"]
"#,
    );
    write(&t.root().join("w.env.j2"), "A=1\n");
    let o = t.launch(&["check"]).not_pid1().run();
    o.assert_code(0);
    let absent = format!(
        "warning: env_file {} does not exist (yet)",
        t.volume().join("absent.env").display()
    );
    o.assert_stderr(&absent);
    o.assert_no_stderr("rendered.env");
    o.assert_stdout("check: OK, 1 warning(s)");
}

#[test]
fn a_secret_mounted_late_is_retried_then_the_service_starts() {
    let t = Tree::default_socket(
        "secrets-late",
        r#"services:
  late:
    cmd: ["/bin/sh", "-c", "printf %s \"$DB_PASSWORD\" > {{ root }}/started; exec sleep 1000"]
    secrets: {DB_PASSWORD: "{{ paths.volume }}/secrets/db"}
    backoff: {initial: 100ms, max: 300ms}
    max_retry: -1
  other:
    cmd: [sleep, "1000"]
"#,
    );
    let started = t.root().join("started");
    let secret = t.volume().join("secrets/db");
    let run = t.launch(&[]).spawn();
    // Not FAILED: retried, the reason (file and variable, no value) in
    // the log and in ctl status, each try a failed start.
    let mut status = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            status = ctl(&run, &["--json", "status"]).all();
            status.contains("not started: secret DB_PASSWORD")
        }),
        "{status}"
    );
    let json = ctl(&run, &["--json", "status"]).all();
    assert!(json.contains("not started: secret DB_PASSWORD"), "{json}");
    assert!(json.contains(&secret.display().to_string()), "{json}");
    assert!(!json.contains("FAILED"), "{json}");
    assert!(!started.exists());
    // The Secret arrives: the next try starts the service.
    write(&secret, &format!("{PLANTED}\n"));
    // The shell creates the file before it writes to it: wait for the
    // whole value.
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            &started
        )
        .is_ok_and(|v| v == PLANTED)),
        "late never started: {:?}",
        std::fs::read_to_string(&started)
    );
    let json = ctl(&run, &["--json", "status"]).all();
    assert!(!json.contains("not started"), "{json}");
    let o = run.stop();
    o.assert_code(0);
    assert!(
        o.all().contains(&format!(
            "late: not started: secret DB_PASSWORD: {}",
            secret.display()
        )) && o.all().contains("retrying in"),
        "{}",
        o.all()
    );
    assert_clean("the log of retried starts", &o.all());
}

#[test]
fn credentials_are_shared_by_processes_and_helpers_and_swapped_whole() {
    // Two processes and a probe: each writes the inode of
    // $CREDENTIALS_DIRECTORY it got; the copy is made once per start of
    // the service, never per process or per probe run.
    let t = Tree::default_socket(
        "secrets-shared",
        r#"services:
  pair:
    cmd: ["/bin/sh", "-c", "stat -c %i \"$CREDENTIALS_DIRECTORY\" >> {{ root }}/out/procs; cat \"$CREDENTIALS_DIRECTORY/tls.key\" > {{ root }}/out/key.$$; exec sleep 1000"]
    numprocesses: 2
    credentials: {tls.key: "{{ paths.volume }}/secrets/key"}
    live:
      cmd: ["/bin/sh", "-c", "echo \"$CREDENTIALS_DIRECTORY $(stat -c %i \"$CREDENTIALS_DIRECTORY\") $(cat \"$CREDENTIALS_DIRECTORY/tls.key\")\" >> {{ root }}/out/probes"]
      period: 100ms
"#,
    );
    write(&t.volume().join("secrets/key"), CRED);
    let out = t.root().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let run = t.launch(&[]).spawn();
    let lines = |f: &str| file_lines(&out.join(f));
    assert!(
        wait_until(Duration::from_secs(10), || lines("probes").len() >= 3
            && lines("procs").len() == 2),
        "{:?} {:?}",
        lines("procs"),
        lines("probes")
    );
    let procs = lines("procs");
    assert_eq!(procs[0], procs[1], "one copy for both processes");
    for p in lines("probes").iter().take(3) {
        assert_eq!(
            p,
            &format!("/run/credentials/pair {} {CRED}", procs[0]),
            "a probe uses the service's own copy"
        );
    }
    // A restart of the service makes a new copy, swapped in whole.
    write(&t.volume().join("secrets/key"), "rotated-key");
    let o = ctl(&run, &["restart", "pair"]);
    o.assert_code(0);
    assert!(
        wait_until(Duration::from_secs(10), || lines("procs").len() == 4),
        "{:?}",
        lines("procs")
    );
    let procs = lines("procs");
    assert_eq!(procs[2], procs[3]);
    assert_ne!(procs[0], procs[2], "a fresh copy at the restart");
    assert!(
        wait_until(Duration::from_secs(10), || lines("probes")
            .last()
            .is_some_and(|l| l.ends_with(" rotated-key"))),
        "{:?}",
        lines("probes")
    );
    let o = run.stop();
    o.assert_code(0);
}

/// A `cmd` probe gets the env files and secrets its service started with:
/// read once per start of the service, not at every probe run (an edit
/// or a file gone while it runs changes nothing until the next start),
/// and never a value in the launcher's output.
#[test]
fn probes_use_the_env_files_read_at_the_start_of_their_service() {
    let t = Tree::default_socket(
        "secrets-probe-env",
        r#"services:
  web:
    cmd: ["/bin/sh", "-c", "echo \"$TOKEN $DB_PASSWORD\" >> {{ root }}/out/procs; exec sleep 1000"]
    env_file: ["{{ paths.volume }}/web.env"]
    secrets: {DB_PASSWORD: "{{ paths.volume }}/secrets/db"}
    live:
      cmd: ["/bin/sh", "-c", "echo \"$TOKEN $DB_PASSWORD\" >> {{ root }}/out/probes"]
      period: 100ms
"#,
    );
    write(
        &t.volume().join("web.env"),
        &format!("TOKEN={ENV_SECRET}\n"),
    );
    write(&t.volume().join("secrets/db"), PLANTED);
    let out = t.root().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let run = t.launch(&[]).spawn();
    let lines = |f: &str| file_lines(&out.join(f));
    let first = format!("{ENV_SECRET} {PLANTED}");
    assert!(
        wait_until(Duration::from_secs(10), || lines("probes").len() >= 2),
        "{:?}",
        lines("probes")
    );
    // Edited, then gone, while the service runs: its probes go on with
    // what it started with.
    write(&t.volume().join("web.env"), "TOKEN=edited\n");
    std::fs::remove_file(t.volume().join("secrets/db")).expect("rm");
    let seen = lines("probes").len();
    assert!(
        wait_until(Duration::from_secs(10), || lines("probes").len()
            >= seen + 3),
        "{:?}",
        lines("probes")
    );
    assert!(
        lines("probes").iter().all(|l| *l == first),
        "{:?}",
        lines("probes")
    );
    assert_eq!(
        service_json(&run, "web").map(|s| s["restarts"].clone()),
        Some(0.into())
    );
    // The next start reads them again, for the service and its probes.
    write(&t.volume().join("secrets/db"), ROTATED);
    ctl(&run, &["restart", "web"]).assert_code(0);
    let now = format!("edited {ROTATED}");
    assert!(
        wait_until(Duration::from_secs(10), || lines("probes").last()
            == Some(&now)),
        "{:?}",
        lines("probes")
    );
    assert_eq!(lines("procs"), [first, now]);
    assert_clean("ctl status web", &ctl(&run, &["status", "web"]).all());
    assert_clean(
        "ctl status web --json",
        &ctl(&run, &["--json", "status", "web"]).all(),
    );
    let o = run.stop();
    o.assert_code(0);
    assert_clean("the launcher's output", &o.all());
}
