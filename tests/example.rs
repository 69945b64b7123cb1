//! The bundled example: `scripts/demo.sh` (README's first command) runs the
//! launcher over a temporary copy of layout/ + example-project/, without
//! root-only steps. Here it runs in a private mount namespace (tmpfs /run,
//! /root), with the binary under test.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn demo_runs_the_whole_life_of_a_container() {
    let t = TempDir::new("demo");
    let port = free_port();
    let run = Launch::new(&[])
        .program(&repo().join("scripts/demo.sh"))
        .not_pid1()
        .env("MC_DEMO_BIN", &bin().to_string_lossy())
        .env("MC_DEMO_DIR", &t.path().to_string_lossy())
        .env("MC_DEMO_PORT", &port.to_string())
        .timeout(Duration::from_secs(60))
        .spawn();
    let addr = format!("127.0.0.1:{port}");
    let mut page = String::new();
    let up = wait_until(Duration::from_secs(30), || {
        page = http_get(&addr, "/").unwrap_or_default();
        page.contains("heartbeat 1 of worker")
    });
    assert!(up, "the page never showed a heartbeat: {page:?}");
    // The override's value, not the image default's.
    assert!(
        page.contains("<h1>Demo site, configured from the data volume</h1>"),
        "{page}"
    );
    // PILLAR.sample's value for what the override leaves out.
    assert!(
        page.contains("Hello from the image&#x27;s default pillar"),
        "{page}"
    );
    // The prepopulated default data.
    assert!(page.contains("copied into the data volume"), "{page}");

    let keys = t.join("home/.ssh/authorized_keys");
    let text = std::fs::read_to_string(&keys).expect("authorized_keys");
    let public = std::fs::read_to_string(t.join("demo_key.pub")).expect("demo key");
    assert!(text.contains(public.trim()), "{text}");
    let mode = std::fs::metadata(&keys).expect("keys").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let status = std::process::Command::new(bin())
        .args(["--root", &t.join("srv").to_string_lossy(), "ctl", "status"])
        .env("MC_EXAMPLE_STATE", t.join("state"))
        .output()
        .expect("ctl");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(table.contains("web") && table.contains("worker"), "{table}");

    run.signal(nix::libc::SIGINT);
    let out = run.wait();
    assert_eq!(out.code, Some(0), "{}", out.all());
    let all = out.all();
    for line in [
        "pillar: installed the override",
        "prepopulate: filled",
        "summary: web: stopped",
        "summary: worker: stopped",
        "worker | worker stopping after",
    ] {
        assert!(all.contains(line), "missing {line:?} in:\n{all}");
    }
    let tree = t.path().to_string_lossy().into_owned();
    assert!(pids_with_cmdline(&tree).is_empty(), "processes left behind");
}

/// The example's salt states are real: run through a real salt-call (the
/// test venv) after the native template step, 200_reconfigure.sls renders
/// the very same app.json from the same pillar layering (salt finds the
/// file already in its state).
#[test]
fn example_salt_states_agree_with_the_native_template() {
    let venv = std::env::var("MC_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| "/var/cache/mc-launcher-test/salt-venv".into());
    assert!(
        venv.join("bin/salt-call").exists(),
        "run scripts/setup-test-env.sh"
    );
    let t = TempDir::new("example-salt");
    let srv = t.join("srv");
    let st = std::process::Command::new(repo().join("layout/install"))
        .arg(&srv)
        .arg("example")
        .arg(repo().join("example-project"))
        .status()
        .expect("layout/install");
    assert!(st.success());
    let r = t.path().display().to_string();
    write(
        &t.join("etc/salt/minion"),
        &format!(
            "id: example-minion\nfile_client: local\nroot_dir: {r}\nfile_roots:\n  base:\n    - {r}/srv/salt\npillar_roots:\n  base:\n    - {r}/srv/pillar\ncachedir: {r}/var/cache/salt\npki_dir: {r}/etc/salt/pki\nsock_dir: {r}/var/run/salt\nlog_file: {r}/var/log/salt/minion\nuser: root\n"
        ),
    );
    write(
        &srv.join("projects/example/data/configuration/pillar.sls"),
        "makina-projects.example:\n  data:\n    site_name: Salted site\n",
    );
    let path = format!("{}/bin:/usr/sbin:/usr/bin:/sbin:/bin", venv.display());
    let out = Launch::new(&["--root", &srv.to_string_lossy(), "prepare"])
        .not_pid1()
        .env("PATH", &path)
        .env("MC_EXAMPLE_SALT", &t.join("etc/salt").to_string_lossy())
        .env("MC_EXAMPLE_STATE", &t.join("state").to_string_lossy())
        .env("MC_EXAMPLE_SSH_HOME", &t.join("home").to_string_lossy())
        .env("MC_EXAMPLE_SSHD", "never")
        .timeout(Duration::from_secs(180))
        .run();
    let all = out.all();
    assert_eq!(out.code, Some(0), "{all}");
    assert!(all.contains("reconfigure: salt-2 done"), "{all}");
    assert!(all.contains("Failed:    0"), "{all}");
    let app = srv.join("projects/example/data/configuration/app.json");
    assert!(
        all.contains(&format!("File {} is in the correct state", app.display())),
        "salt rendered something else than the native template:\n{all}"
    );
    let text = std::fs::read_to_string(&app).expect("app.json");
    assert!(text.contains("\"site_name\": \"Salted site\""), "{text}");
}
