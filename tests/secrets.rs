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
    assert_eq!(o.code, Some(0), "{}", o.all());
    assert!(
        wait_until(Duration::from_secs(10), || env_file.exists()),
        "app never restarted"
    );
    assert_eq!(
        var(&env_of(&env_file), "DB_PASSWORD").as_deref(),
        Some(ROTATED)
    );

    run.signal(15);
    let o = run.wait();
    assert_eq!(o.code, Some(0), "{}", o.all());
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
    assert_eq!(o.code, Some(78), "{}", o.all());
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

    // At run: the service cannot start (a failed start, as a missing
    // command is), and the log says why, by path and line.
    let o = launch(&t, &[]).run();
    assert_eq!(o.code, Some(1), "{}", o.all());
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
