//! The bundled example: `scripts/demo.sh` (README's first command) runs the
//! launcher over a temporary copy of layout/ + example-project/, without
//! root-only steps. Here it runs in a private mount namespace (tmpfs /run,
//! /root), with the binary under test.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The demo site's page on `port`, once it shows a worker's heartbeat.
fn demo_page(port: u16) -> String {
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
    page
}

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
    let page = demo_page(port);
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
    out.assert_code(0);
    let all = out.all();
    for line in [
        "pillar: installed the override",
        "prepopulate: filled",
        "summary: web: stopped",
        "summary: worker: stopped",
        "worker | worker stopping after",
        // The scheduled cleanup ran once at the start.
        "cleanup | cleanup: ",
        "cleanup: run ended (exit 0)",
    ] {
        assert!(all.contains(line), "missing {line:?} in:\n{all}");
    }
    let tree = t.path().to_string_lossy().into_owned();
    assert!(pids_with_cmdline(&tree).is_empty(), "processes left behind");
}

/// README command 1 as any non-root user with a clone they own: the demo
/// runs to the page and stops on Ctrl-C (SIGINT) with exit 0. The binary is
/// given through MC_DEMO_BIN (building it is cargo's business).
#[test]
fn demo_runs_for_a_non_root_user() {
    let t = TempDir::new("demo-user");
    let clone = t.join("clone");
    std::fs::create_dir_all(clone.join("scripts")).expect("clone");
    for (from, to) in [
        (
            repo().join("scripts/demo.sh"),
            clone.join("scripts/demo.sh"),
        ),
        (repo().join("layout"), clone.join("layout")),
        (
            repo().join("example-project"),
            clone.join("example-project"),
        ),
        (bin(), t.join("bin/mc-launcher")),
    ] {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        let st = std::process::Command::new("cp")
            .arg("-R")
            .arg(&from)
            .arg(&to)
            .status()
            .expect("cp");
        assert!(st.success(), "cp {}", from.display());
    }
    for d in ["home", "tmp"] {
        std::fs::create_dir_all(t.join(d)).expect("mkdir");
    }
    chown_r("65534:65534", t.path());
    let port = free_port();
    let demo = clone.join("scripts/demo.sh").to_string_lossy().into_owned();
    let run = Launch::new(&[
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "bash",
        &demo,
    ])
    .program(std::path::Path::new("/usr/bin/setpriv"))
    .not_pid1()
    .env("HOME", &t.join("home").to_string_lossy())
    .env("TMPDIR", &t.join("tmp").to_string_lossy())
    .env("MC_DEMO_BIN", &t.join("bin/mc-launcher").to_string_lossy())
    .env("MC_DEMO_PORT", &port.to_string())
    .timeout(Duration::from_secs(60))
    .spawn();
    demo_page(port);
    // setpriv and bash exec'd their way to the launcher, running as nobody.
    let pid = run.child.id() as i32;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
        "{status}"
    );
    let tree = std::fs::read_dir(t.join("tmp"))
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("mc-launcher-demo."))
        .expect("the demo's tree");
    let keys = std::fs::read_to_string(tree.join("home/.ssh/authorized_keys")).expect("keys");
    assert!(keys.contains("demo@mc-launcher"), "{keys}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = run.wait();
    out.assert_code(0);
    for line in ["summary: web: stopped", "summary: worker: stopped"] {
        assert!(
            out.stderr.contains(line),
            "missing {line:?} in:\n{}",
            out.all()
        );
    }
    let tree = tree.to_string_lossy().into_owned();
    assert!(pids_with_cmdline(&tree).is_empty(), "processes left behind");
}

/// Without cargo on PATH (and without MC_DEMO_BIN), the demo says what to
/// install, and does nothing else; the same for python3.
#[test]
fn demo_says_what_is_missing() {
    let t = TempDir::new("demo-missing");
    let empty = t.join("empty-path");
    std::fs::create_dir_all(&empty).expect("dir");
    let demo = |bin: Option<&str>| {
        let mut c = std::process::Command::new("/bin/bash");
        c.arg(repo().join("scripts/demo.sh"))
            .env_clear()
            .env("PATH", &empty)
            .env("HOME", t.path())
            .env("TMPDIR", t.path());
        if let Some(b) = bin {
            c.env("MC_DEMO_BIN", b);
        }
        c.output().expect("demo.sh")
    };
    let out = demo(None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "scripts/demo.sh: cargo is not on your PATH: install Rust with rustup (https://rustup.rs) or set MC_DEMO_BIN to a built mc-launcher\n"
    );
    let b = bin().to_string_lossy().into_owned();
    let out = demo(Some(&b));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "scripts/demo.sh: python3 is not on your PATH: install Python 3 (the example's services are Python scripts)\n"
    );
    let out = demo(Some("/nonexistent/mc-launcher"));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("MC_DEMO_BIN=/nonexistent/mc-launcher is not an executable file"),
        "{out:?}"
    );
    // Nothing was made: the temp dir holds only the empty PATH dir.
    assert_eq!(std::fs::read_dir(t.path()).expect("ls").count(), 1);
}

/// The example's salt states are real: run through a real salt-call (the
/// test venv) after the native template step, 200_reconfigure.sls renders
/// the very same app.json (and worker.env) from the same pillar layering (salt finds the
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
    install_example(&srv);
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
    assert!(all.contains("reconfigure: salt-3 done"), "{all}");
    assert!(all.contains("Failed:    0"), "{all}");
    let app = srv.join("projects/example/data/configuration/app.json");
    let env = srv.join("projects/example/data/configuration/worker.env");
    for f in [&app, &env] {
        assert!(
            all.contains(&format!("File {} is in the correct state", f.display())),
            "salt rendered something else than the native template:\n{all}"
        );
    }
    let text = std::fs::read_to_string(&app).expect("app.json");
    assert!(text.contains("\"site_name\": \"Salted site\""), "{text}");
}
