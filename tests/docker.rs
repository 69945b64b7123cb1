//! The example project as a real image on the local Docker engine
//! (scripts/docker-image.sh builds it from local files: a debootstrap
//! rootfs imported as the base, cached by tag, then
//! example-project/Dockerfile with the binary under test), README.rst's
//! read-only and non-root recipes run as written, and the migration of an
//! original-style image.
//!
//! Nothing is left behind: every container is removed with its anonymous
//! volumes (`docker rm -f -v`, checked), every named volume by its guard,
//! the images built under this run's test tags when the test binary exits
//! (then a last check fails the run if a container or volume of this run
//! is still there).
//!
//! Images hold the release artifact, the static binary
//! (scripts/build-static.sh, or `MC_STATIC_BIN`), and one test runs it
//! alone in an image with no libc at all.

mod common;
use common::docker::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const VOLUME_DIR: &str = "/srv/projects/example/data";

fn timed_stop(c: &Container) -> Duration {
    let t = Instant::now();
    must(&["stop", &c.name]);
    t.elapsed()
}

fn assert_summaries(logs: &str, services: &[&str]) {
    for s in services {
        assert!(
            logs.contains(&format!("summary: {s}: stopped")),
            "no summary for {s}:\n{logs}"
        );
    }
}

/// The image's own default pillar, as layout/ ships it.
fn image_pillar_is_intact(img: &str) {
    let o = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        img,
        "/srv/projects/example/pillar/init.sls",
        "/var/lib/mc-launcher/image-pillar.sls",
    ]);
    let want = std::fs::read_to_string(repo().join("layout/srv/projects/PROJECT/pillar/init.sls"))
        .expect("layout pillar");
    assert_eq!(o.stdout, format!("{want}{want}"), "{}", o.stderr);
}

#[test]
fn named_volume_keeps_data_across_restart_and_stops_fast() {
    let img = example_image();
    let vol = Volume::create("vol");
    let c = Container::run(
        "named",
        &["--health-interval=1s", "-v", &vol.mount(VOLUME_DIR)],
        &[img],
    );
    let page = c.page(8080, "heartbeat 1 of worker");
    assert!(
        page.contains("<h1>An example makina project</h1>"),
        "{page}"
    );
    assert!(page.contains("copied into the data volume"), "{page}");
    let healthy = wait_until(Duration::from_secs(20), || {
        c.state("Health.Status") == "healthy"
    });
    assert!(healthy, "never healthy: {}", c.state("Health.Status"));

    // The operator edits the prepopulated data: a restart keeps it and does
    // not run the unchanged reconfigure step again.
    let w = c.exec(&[
        "sh",
        "-c",
        "echo edited by the operator > /srv/projects/example/data/data/welcome.txt",
    ]);
    assert!(w.ok, "{}", w.stderr);
    must(&["restart", &c.name]);
    let page = c.page(8080, "edited by the operator");
    assert!(page.contains("heartbeat"), "{page}");
    let logs = c.logs();
    assert!(
        logs.contains("reconfigure: inputs unchanged since the last successful run, skipping"),
        "{logs}"
    );
    assert!(logs.contains("holds data: left as it is"), "{logs}");

    let took = timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}");
    assert_summaries(&c.logs(), &["web", "worker"]);
}

#[test]
fn bind_volume_override_and_key_then_ssh_login() {
    let img = example_image();
    let t = TempDir::new("docker-bind");
    let vol = t.join("volume");
    write(
        &vol.join("configuration/pillar.sls"),
        "makina-projects.example:\n  data:\n    site_name: Site from the bound volume\n",
    );
    let key = keygen(&t.join("op_key"));
    std::fs::create_dir_all(vol.join("ssh")).expect("ssh dir");
    std::fs::copy(t.join("op_key.pub"), vol.join("ssh/operator.pub")).expect("copy key");
    let mount = format!("{}:{VOLUME_DIR}", vol.display());
    let c = Container::run("bind", &["-v", &mount], &[img]);
    c.page(8080, "<h1>Site from the bound volume</h1>");
    ssh_login(&c, &key);
    // Host keys live in the volume, so they survive a new container.
    assert!(vol
        .join("configuration/ssh_host_keys")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));

    must(&["kill", "-s", "TERM", &c.name]);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0, "{}", c.logs());
    assert_summaries(&c.logs(), &["sshd", "web", "worker"]);
}

#[test]
fn usr1_goes_to_the_services_and_they_come_back() {
    let img = example_image();
    let c = Container::run("usr1", &[], &[img]);
    c.page(8080, "heartbeat 1 of worker");
    must(&["kill", "-s", "USR1", &c.name]);
    // Python's default for USR1 is to die: each service ends and respawns.
    let back = wait_until(Duration::from_secs(20), || {
        let o = c.exec(&["mc-launcher", "ctl", "--json", "status"]);
        o.ok && o.stdout.matches("\"restarts\":1").count() >= 2
    });
    let status = c.exec(&["mc-launcher", "ctl", "status"]).stdout;
    assert!(
        back,
        "services did not restart after USR1:\n{status}\n{}",
        c.logs()
    );
    assert_eq!(c.state("Running"), "true");
    c.page(8080, "<h1>An example makina project</h1>");
    timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
}

#[test]
fn read_only_root_with_tmpfs_run() {
    let img = example_image();
    let vol = Volume::create("rovol");
    let c = Container::run(
        "ro",
        &[
            "--read-only",
            "--tmpfs",
            "/run",
            "-v",
            &vol.mount(VOLUME_DIR),
        ],
        &[img],
    );
    c.page(8080, "heartbeat 1 of worker");
    let health = c.exec(&["mc-launcher", "ctl", "health"]);
    assert_eq!(health.code, Some(0), "{}{}", health.stdout, health.stderr);
    assert!(c.logs().contains("using /run/mc-launcher"), "{}", c.logs());
    timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    assert_summaries(&c.logs(), &["web", "worker"]);
}

#[test]
fn non_root_user_runs_what_it_can_and_says_what_it_skipped() {
    let img = example_image();
    let t = TempDir::new("docker-user");
    let vol = t.join("volume");
    std::fs::create_dir_all(vol.join("ssh")).expect("vol");
    // A key is there, but a non-root launcher cannot install it for root.
    write(
        &vol.join("ssh/x.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x\n",
    );
    chown_r("1000:1000", &vol);
    let mount = format!("{}:{VOLUME_DIR}", vol.display());
    let c = Container::run("user", &["--user", "1000:1000", "-v", &mount], &[img]);
    c.page(8080, "heartbeat 1 of worker");
    let health = c.exec(&["mc-launcher", "ctl", "health"]);
    assert_eq!(health.code, Some(0), "{}{}", health.stdout, health.stderr);
    let logs = c.logs();
    // One line for the keys and sshd it cannot use, nothing alarming.
    assert!(
        logs.contains("warning: ssh: skipped, not running as root\n"),
        "{logs}"
    );
    for bad in ["error:", "check the owner", "sshd:"] {
        assert!(!logs.contains(bad), "{bad:?} in {logs}");
    }
    let ps = c.exec(&["ps", "-o", "user=,args=", "-e"]).stdout;
    assert!(!ps.lines().any(|l| l.starts_with("root")), "{ps}");
    timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{logs}");
}

/// A fresh ed25519 key pair at `path` (and `path.pub`).
fn keygen(path: &Path) -> std::path::PathBuf {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("key dir");
    }
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    path.to_path_buf()
}

/// Log in to the container's sshd as root with `key`.
fn ssh_login(c: &Container, key: &Path) {
    let ip = c.ip();
    let mut said = String::new();
    let logged_in = wait_until(Duration::from_secs(20), || {
        let o = Command::new("ssh")
            .args(["-i"])
            .arg(key)
            .args(SSH_BATCH)
            .args([
                "-o",
                "ConnectTimeout=3",
                &format!("root@{ip}"),
                "echo logged in as $(id -un)",
            ])
            .output()
            .expect("ssh");
        said =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        said.contains("logged in as root")
    });
    assert!(logged_in, "ssh login failed: {said}\n{}", c.logs());
}

/// A preflight message as README.rst shows it: a literal block of the log
/// lines, the first with the launcher's `mc-launcher: error: ` prefix.
fn readme_block(message: &str) -> String {
    message
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            0 => format!("    mc-launcher: error: {l}\n"),
            _ => format!("    {l}\n"),
        })
        .collect()
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.rst")).expect("README.rst")
}

/// The preflight `message` holds every one of `parts`, and README.rst
/// shows this very message.
#[track_caller]
fn assert_message_shown(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} in\n{message}");
    }
    let shown = readme_block(message);
    assert!(
        readme().contains(&shown),
        "README.rst does not show:\n{shown}"
    );
}

/// The commands of the first literal block under README.rst's section
/// `title`, as a shell script.
fn readme_recipe(title: &str) -> String {
    let text = readme();
    let at = text
        .find(&format!("\n{title}\n"))
        .unwrap_or_else(|| panic!("no section {title:?} in README.rst"));
    let rest = &text[at..];
    let start = rest.find("::\n\n").expect("a literal block") + 4;
    let mut lines: Vec<&str> = rest[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A README recipe with this run's names: the image under test, the
/// container `ex` and the volume `ex-data` renamed; nothing else changes.
fn localize(script: &str, image: &str, container: &str, volume: &str) -> String {
    script
        .lines()
        .map(|l| {
            l.split(' ')
                .map(|w| match w {
                    "mc-launcher/example" => image.to_string(),
                    "ex" => container.to_string(),
                    w if w.starts_with("ex:") => format!("{container}{}", &w[2..]),
                    w => w.replace("ex-data", volume),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Run a recipe with `sh -e` in `dir`, HOME there too.
fn run_recipe(script: &str, dir: &Path) {
    let o = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .env("HOME", dir.join("home"))
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "the recipe failed:\n{script}\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn image_script_asks_before_installing_debootstrap() {
    let t = TempDir::new("no-debootstrap");
    let path = t.join("bin");
    std::fs::create_dir_all(&path).expect("bin");
    for tool in ["docker", "dirname", "id"] {
        let real = which(tool);
        std::os::unix::fs::symlink(&real, path.join(tool)).expect("symlink");
    }
    let base = format!("mc-launcher/base:absent-{}", std::process::id());
    let tag = test_tag("never-built");
    let o = Command::new("/bin/bash")
        .arg(repo().join("scripts/docker-image.sh"))
        .arg(bin())
        .arg(&tag)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", t.path())
        .env("MC_BASE_IMAGE", &base)
        .output()
        .expect("docker-image.sh");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "scripts/docker-image.sh: debootstrap is needed (once) to build the base image {base} from the Debian mirror:\n  \
             install it (apt-get install debootstrap), or set MC_INSTALL_DEPS=1 to let this script install it with apt-get\n"
        )
    );
    assert!(!docker(&["image", "inspect", &base]).ok);
    assert!(!docker(&["image", "inspect", &tag]).ok);
}

fn which(tool: &str) -> std::path::PathBuf {
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("sh");
    std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// `--read-only --tmpfs /run` with an override and a key, without the
/// recipe's other flags: `check` and the start both stop with the message
/// README.rst shows (78), and nothing in the volume or the image changed.
#[test]
fn read_only_without_the_tmpfs_flags_says_which_to_add() {
    let img = example_image();
    let t = TempDir::new("docker-ro-unfixed");
    let vol = t.join("volume");
    let over = "makina-projects.example:\n  data:\n    site_name: Read-only\n";
    write(&vol.join("configuration/pillar.sls"), over);
    keygen(&t.join("op_key"));
    std::fs::create_dir_all(vol.join("ssh")).expect("ssh dir");
    std::fs::copy(t.join("op_key.pub"), vol.join("ssh/operator.pub")).expect("copy key");
    let mount = format!("{}:{VOLUME_DIR}", vol.display());
    let flags = ["--read-only", "--tmpfs", "/run", "-v", &mount];

    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(&flags);
    args.extend_from_slice(&[img, "check"]);
    let chk = docker(&args);
    assert_eq!(chk.code, Some(78), "{}{}", chk.stdout, chk.stderr);
    assert_eq!(
        chk.stdout.lines().last(),
        Some("check: 2 error(s), 1 warning(s)"),
        "{}",
        chk.stdout
    );

    let c = Container::run("ro-unfixed", &flags, &[img]);
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 78, "{}", c.logs());
    let message = preflight_message(&c.logs());
    assert_eq!(message, preflight_message(&chk.stderr));
    assert_message_shown(
        &message,
        &[
            "\n  /srv/projects/example/pillar: read-only filesystem; needed to install the pillar override",
            "\n  /root/.ssh: cannot be created in /root: read-only filesystem; needed to install 1 SSH key(s) for root",
            "\n  fix: add to docker run: --tmpfs /srv/projects/example/pillar --tmpfs /root/.ssh:mode=0700\n",
        ],
    );

    assert_eq!(
        std::fs::read_to_string(vol.join("configuration/pillar.sls")).expect("override"),
        over
    );
    let mut left: Vec<String> = walk(&vol);
    left.sort();
    assert_eq!(
        left,
        [
            "configuration",
            "configuration/pillar.sls",
            "ssh",
            "ssh/operator.pub"
        ],
        "the volume was written"
    );
    image_pillar_is_intact(img);
}

/// Paths under `dir`, relative.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            out.push(
                p.strip_prefix(dir)
                    .expect("under")
                    .to_string_lossy()
                    .into_owned(),
            );
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

/// `--user 1000` on a new named volume (root's): the start and `check`
/// stop with the message README.rst shows, naming each path, the owner it
/// needs and the chown that gives it; nothing is written.
#[test]
fn non_root_on_a_root_owned_named_volume_says_how_to_give_it() {
    let img = example_image();
    let vol = Volume::create("user-root-vol");
    let mount = vol.mount(VOLUME_DIR);
    let c = Container::run("user-root-vol", &["--user", "1000", "-v", &mount], &[img]);
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 78, "{}", c.logs());
    let message = preflight_message(&c.logs());
    assert_message_shown(
        &message,
        &[
            "cannot be written by uid 1000 (nothing was written):",
            "\n  /srv/projects/example/data/configuration: owned by uid 0 with mode 0755, not writable by uid 1000; needed by template-1",
            "\n  /srv/projects/example/data/data: owned by uid 0 with mode 0755, not writable by uid 1000; needed to prepopulate",
            "\n  fix: give the data volume to uid 1000: `chown -R 1000` its directory on the host, or for a named volume `docker run --rm -v VOLUME:/srv/projects/example/data --entrypoint chown IMAGE -R 1000 /srv/projects/example/data`",
        ],
    );
    let chk = docker(&["run", "--rm", "--user", "1000", "-v", &mount, img, "check"]);
    assert_eq!(chk.code, Some(78), "{}{}", chk.stdout, chk.stderr);
    assert_eq!(preflight_message(&chk.stderr), message);
    let ls = docker(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "--entrypoint",
        "sh",
        img,
        "-c",
        "cd /srv/projects/example/data && ls -A data configuration",
    ]);
    assert_eq!(
        ls.stdout, "configuration:\nREADME\n\ndata:\n",
        "{}",
        ls.stderr
    );
}

/// README.rst "Read-only container with a pillar override and an SSH key",
/// run as written: the override is served, root logs in with the key, and
/// without the override the image default comes back.
#[test]
fn readme_read_only_recipe_works() {
    let img = example_image();
    let t = TempDir::new("docker-ro-recipe");
    let c = Container::named("ro-recipe");
    let data = test_name("ro-recipe-data");
    write(
        &t.join("my-pillar.sls"),
        "makina-projects.example:\n  data:\n    site_name: Site of a read-only container\n",
    );
    let key = keygen(&t.join("home/.ssh/id_ed25519"));
    let recipe = readme_recipe("Read-only container with a pillar override and an SSH key");
    assert!(recipe.contains("--read-only"), "{recipe}");
    run_recipe(&localize(&recipe, img, &c.name, &data), t.path());

    c.page(8080, "<h1>Site of a read-only container</h1>");
    ssh_login(&c, &key);
    let logs = c.logs();
    assert!(logs.contains("using /run/mc-launcher"), "{logs}");
    assert!(!logs.contains("mc-launcher: error:"), "{logs}");
    assert_eq!(
        must(&["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", &c.name]),
        "true"
    );

    // The override goes: the image default is back after a restart.
    std::fs::remove_file(t.join(&format!("{data}/configuration/pillar.sls"))).expect("rm");
    must(&["restart", &c.name]);
    c.page(8080, "<h1>An example makina project</h1>");
    must(&["stop", &c.name]);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    assert_summaries(&c.logs(), &["sshd", "web", "worker"]);
    image_pillar_is_intact(img);
}

/// README.rst "Non-root container (``--user 1000``)", run as written: a
/// root-owned named volume given to uid 1000, an override, and nothing
/// running as root.
#[test]
fn readme_non_root_recipe_works() {
    let img = example_image();
    let t = TempDir::new("docker-user-recipe");
    let vol = Volume::named("user-recipe-data");
    let c = Container::named("user-recipe");
    write(
        &t.join("my-pillar.sls"),
        "makina-projects.example:\n  data:\n    site_name: Site of uid 1000\n",
    );
    let recipe = readme_recipe("Non-root container (``--user 1000``)");
    assert!(recipe.contains("--user 1000"), "{recipe}");
    run_recipe(&localize(&recipe, img, &c.name, &vol.name), t.path());

    let page = c.page(8080, "heartbeat 1 of worker");
    assert!(page.contains("<h1>Site of uid 1000</h1>"), "{page}");
    let ps = c.exec(&["ps", "-o", "user=,args=", "-e"]).stdout;
    assert!(!ps.lines().any(|l| l.starts_with("root")), "{ps}");
    let owner = c.exec(&[
        "stat",
        "-c",
        "%u",
        "/srv/projects/example/data/configuration/app.json",
        "/srv/projects/example/pillar/init.sls",
    ]);
    assert_eq!(owner.stdout, "1000\n1000\n", "{}", owner.stderr);
    let health = c.exec(&["mc-launcher", "ctl", "health"]);
    assert_eq!(health.code, Some(0), "{}{}", health.stdout, health.stderr);
    let logs = c.logs();
    assert!(logs.contains("using /tmp/mc-launcher-1000"), "{logs}");
    assert!(!logs.contains("mc-launcher: error:"), "{logs}");
    timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    image_pillar_is_intact(img);
}

/// An original-style image (CMD bin/launch.sh …, circus INI files) becomes
/// an mc-launcher image by changing only its CMD (and adding the binary).
#[test]
fn original_style_image_migrates_by_changing_its_cmd() {
    let base = example_image(); // makes sure the base image exists
    assert!(!base.is_empty());
    let fixture = repo().join("tests/fixtures/migration");
    let (legacy, migrated) = (test_tag("legacy"), test_tag("legacy-migrated"));
    build(&fixture, &legacy, &[]);
    let t = TempDir::new("docker-migrate");
    std::fs::copy(static_bin(), t.join("mc-launcher")).expect("copy bin");
    write(
        &t.join("Dockerfile"),
        &format!(
            "FROM {legacy}\nCOPY mc-launcher /usr/local/bin/mc-launcher\n\
             CMD [\"mc-launcher\", \"ssh_config=True\", \"re_configure=True\"]\n"
        ),
    );
    build(t.path(), &migrated, &[]);
    let c = Container::run("migrated", &[], &[&migrated]);
    c.page(8000, "legacy project");
    // warmup_delay = 1 on the web watcher: the worker follows a second later.
    let mut ps = String::new();
    let both = wait_until(Duration::from_secs(10), || {
        ps = c.exec(&["ps", "-o", "args=", "-e"]).stdout;
        ps.contains("http.server 8000") && ps.contains("worker.log")
    });
    assert!(both, "{ps}");
    let status = c.exec(&["mc-launcher", "ctl", "status"]).stdout;
    assert!(
        status.contains("legacy-web") && status.contains("legacy-worker"),
        "{status}"
    );
    // The circus stream files still receive the output.
    let log = c
        .exec(&["cat", "/var/log/circus/legacy-web.stderr.log"])
        .stdout;
    assert!(log.contains("GET / "), "{log}");
    let took = timed_stop(&c);
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}");
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    assert_summaries(&c.logs(), &["legacy-web", "legacy-worker"]);
}

/// `docker build` of a test image (removed at exit).
fn build(ctx: &Path, tag: &str, extra: &[&str]) {
    remove_at_exit(tag);
    let mut args = vec!["build", "-q", "-t", tag];
    args.extend_from_slice(extra);
    let ctx = ctx.to_string_lossy().into_owned();
    args.push(&ctx);
    let o = Command::new("docker")
        .args(&args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        o.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A service that allocates past `docker run --memory 64m` is OOM-killed
/// by the kernel for real: the launcher says so (log, status, termination
/// report) and, the main command being critical, exits 137.
#[test]
fn a_real_oom_kill_is_attributed() {
    let img = example_image();
    // As the kubelet does: a file of the host bind-mounted there.
    let dir = TempDir::new("docker-oom");
    let report = dir.join("termination-log");
    std::fs::write(&report, "").expect("report file");
    let mount = format!("{}:/dev/termination-log", report.display());
    let c = Container::run(
        "oom",
        &["--memory", "64m", "--memory-swap", "64m", "-v", &mount],
        &[
            img,
            "--",
            "python3",
            "-c",
            "import sys; print('allocating', file=sys.stderr, flush=True); x = bytearray(512 * 1024 * 1024); print(len(x))",
        ],
    );
    let code = c.wait_exit(Duration::from_secs(60));
    let logs = c.logs();
    assert_eq!(code, 137, "{logs}");
    assert!(
        logs.contains("main: killed by the kernel: out of memory"),
        "{logs}"
    );
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(
        text.starts_with("exit 137: the main command ended (main: killed by KILL, OOM-killed)"),
        "{text}\n{logs}"
    );
    assert!(
        logs.trim_end()
            .ends_with(text.lines().next().unwrap_or("?")),
        "{logs}"
    );
}

/// `--cpus 1.5` is 2 CPUs for the templates: the example renders its
/// worker count from `cgroup.cpus`.
#[test]
fn the_cpu_quota_sizes_the_example() {
    let img = example_image();
    let c = Container::run("cpus", &["--cpus", "1.5"], &[img]);
    let page = c.page(8080, "heartbeat 1 of worker");
    assert!(!page.is_empty());
    let app = c.exec(&["cat", &format!("{VOLUME_DIR}/configuration/app.json")]);
    assert!(app.ok, "{}", app.stderr);
    assert!(app.stdout.contains("\"workers\": 2"), "{}", app.stdout);
    let logs = c.logs();
    assert!(logs.contains("sized for 2 CPU(s)"), "{logs}");
}

/// An image tag removed (with its layers) when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

/// Debian's busybox-static, fetched once from the Debian archive into the
/// test cache (`apt-get download` + `dpkg-deb -x`; nothing is installed).
fn busybox_static() -> PathBuf {
    let cache = PathBuf::from("/var/cache/mc-launcher-test/busybox-static");
    let bb = cache.join("bin/busybox");
    if !bb.exists() {
        let t = TempDir::new("busybox-deb");
        let st = Command::new("apt-get")
            .args(["download", "-qq", "busybox-static"])
            .current_dir(t.path())
            .status()
            .expect("apt-get download");
        assert!(st.success(), "apt-get download busybox-static failed");
        let deb = std::fs::read_dir(t.path())
            .expect("ls")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .expect("a .deb");
        let part = cache.with_extension(format!("part{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&part);
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&part)
            .status()
            .expect("dpkg-deb");
        assert!(st.success(), "dpkg-deb -x failed");
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::rename(&part, &cache).expect("cache busybox");
    }
    bb
}

/// The static binary needs nothing from the image: FROM scratch, with only
/// a static busybox, the launcher, /etc/passwd, /etc/group and a config. It
/// runs two services as a user of that /etc/passwd (with the supplementary
/// group of /etc/group), answers `ctl status`, and stops with 0.
#[test]
fn static_binary_runs_in_an_image_with_no_libc() {
    let t = TempDir::new("docker-scratch");
    let ctx = t.path();
    std::fs::copy(busybox_static(), ctx.join("busybox")).expect("busybox");
    std::fs::copy(static_bin(), ctx.join("mc-launcher")).expect("launcher");
    write(
        &ctx.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    );
    write(
        &ctx.join("etc/group"),
        "root:x:0:\napp:x:1000:\nweb:x:1001:app\n",
    );
    write(
        &ctx.join("etc/mc-launcher.yml"),
        "services:\n  loop:\n    cmd: [sh, -c, \"while :; do sleep 1; done\"]\n    user: app\n  \
         web:\n    cmd: [httpd, -f, -p, \"8080\", -h, /www]\n    user: app\n    \
         ready: {tcp: \"127.0.0.1:8080\"}\n",
    );
    write(&ctx.join("www/index.html"), "served from scratch\n");
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         COPY mc-launcher /usr/local/bin/mc-launcher\n\
         COPY etc/ /etc/\n\
         COPY www/ /www/\n\
         ENV PATH=/usr/local/bin:/bin\n\
         ENTRYPOINT [\"mc-launcher\"]\n",
    );
    let image = Image(format!("mc-launcher/scratch:test-{}", std::process::id()));
    build(ctx, &image.0, &[]);
    let c = Container::run("scratch", &[], &[&image.0]);
    c.page(8080, "served from scratch");
    // No libc, no loader: nothing but what the Dockerfile put there.
    let ls = c.exec(&["ls", "/"]);
    let mut top: Vec<&str> = ls.stdout.split_whitespace().collect();
    top.sort();
    assert!(
        !top.iter().any(|d| d.starts_with("lib")),
        "a lib dir in the image: {top:?}"
    );
    // Both running (web once its ready probe passed), as `ctl` reports.
    let mut v = serde_json::Value::Null;
    let running = wait_until(Duration::from_secs(20), || {
        let o = c.exec(&["mc-launcher", "ctl", "--json", "status"]);
        v = serde_json::from_str(&o.stdout).unwrap_or_default();
        v["services"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|s| s["state"] == "running"))
    });
    assert!(running, "{v}\n{}", c.logs());
    let services = v["services"].as_array().expect("services");
    for s in services {
        let pid = s["pids"][0].as_i64().expect("a pid");
        let st = c.exec(&["cat", &format!("/proc/{pid}/status")]).stdout;
        let field = |k: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|r| r.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(field("Uid:"), ["1000"; 4], "{}: {st}", s["name"]);
        assert_eq!(field("Gid:"), ["1000"; 4], "{}: {st}", s["name"]);
        assert_eq!(field("Groups:"), ["1000", "1001"], "{}: {st}", s["name"]);
    }
    let table = c.exec(&["mc-launcher", "ctl", "status"]);
    assert!(
        table.ok && table.stdout.contains("loop") && table.stdout.contains("web"),
        "{}{}",
        table.stdout,
        table.stderr
    );
    timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    assert_summaries(&c.logs(), &["loop", "web"]);
}

/// `web`'s pids, as `ctl status` in the container says.
fn service_pids(c: &Container, name: &str) -> Vec<i64> {
    let o = c.exec(&["mc-launcher", "ctl", "--json", "status"]);
    status_pids(&serde_json::from_str(&o.stdout).unwrap_or_default(), name)
}

/// README "Live reconfigure" in a real container, as the Kubernetes
/// manifests run it: the pillar comes from a bind-mounted directory that
/// the host updates exactly as the kubelet updates a ConfigMap volume (the
/// `..data` swap); the running example renders app.json again and reloads
/// web (same pid, HUP) within 3 s; an invalid update changes nothing and
/// is shown by `ctl status` with file:line:col.
#[test]
fn a_kubelet_style_pillar_update_is_applied_live_in_a_container() {
    let img = example_image();
    let t = TempDir::new("docker-live");
    let vol = t.join("volume");
    let cm = vol.join("configmap");
    std::fs::create_dir_all(&cm).expect("mount point");
    let pillar = |site: &str| {
        format!("makina-projects.example:\n  data:\n    site_name: {site}\n").into_bytes()
    };
    common::kubelet::kubelet_write(&cm, &[("pillar.sls", &pillar("Site A"), 0o644)])
        .expect("kubelet");
    let mount = format!("{}:{VOLUME_DIR}", vol.display());
    let source = format!("{VOLUME_DIR}/configmap/pillar.sls");
    let c = Container::run(
        "live",
        &[
            "-v",
            &mount,
            "-e",
            &format!("MC_EXAMPLE_PILLAR_SOURCE={source}"),
            "-e",
            "MC_EXAMPLE_RECONFIGURE_WATCH=true",
        ],
        &[img],
    );
    c.page(8080, "<h1>Site A</h1>");
    let web = service_pids(&c, "web");
    assert_eq!(web.len(), 1, "{}", c.logs());
    let addr = format!("{}:8080", c.ip());

    common::kubelet::kubelet_write(&cm, &[("pillar.sls", &pillar("Site B"), 0o644)])
        .expect("kubelet");
    let applied = wait_until(Duration::from_secs(3), || {
        http_get(&addr, "/").is_some_and(|p| p.contains("<h1>Site B</h1>"))
    });
    assert!(applied, "not applied within 3 s:\n{}", c.logs());
    assert_eq!(
        service_pids(&c, "web"),
        web,
        "web was reloaded, not restarted"
    );
    let logs = c.logs();
    assert!(logs.contains("reloaded web (HUP)"), "{logs}");
    assert!(logs.contains("web | reloaded: serving 'Site B'"), "{logs}");

    // An invalid update: nothing changes, ctl status says where.
    common::kubelet::kubelet_write(
        &cm,
        &[(
            "pillar.sls",
            b"makina-projects.example:\n  data: [1,\n",
            0o644,
        )],
    )
    .expect("kubelet");
    let mut table = String::new();
    let shown = wait_until(Duration::from_secs(3), || {
        table = c.exec(&["mc-launcher", "ctl", "status"]).stdout;
        table.contains("reconfigure: invalid")
    });
    assert!(shown, "{table}\n{}", c.logs());
    assert!(table.contains(&format!("{source}:")), "{table}");
    assert!(
        http_get(&addr, "/").is_some_and(|p| p.contains("<h1>Site B</h1>")),
        "the last good state keeps serving"
    );
    assert_eq!(service_pids(&c, "web"), web);

    let took = timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    assert!(took < Duration::from_secs(5), "docker stop took {took:?}");
}

// ----- the release (scripts/release.sh; its artifacts: tests/release.rs) -----

/// The base image of the example (built with it by docker-image.sh).
fn base_image() -> String {
    example_image(); // makes sure the base image exists
    std::env::var("MC_BASE_IMAGE").unwrap_or_else(|_| "mc-launcher/base:bookworm".into())
}

#[test]
fn release_deb_installs_with_dpkg_in_the_base_image() {
    let rel = common::release::release();
    let deb = rel.deb("x86_64");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let c = Container::named("deb");
    let o = docker(&[
        "run",
        "--rm",
        "--name",
        &c.name,
        "-v",
        &format!("{}:/dist:ro", rel.dist.display()),
        &base_image(),
        "sh",
        "-c",
        &format!(
            "dpkg -i /dist/{name} >/dev/null && dpkg -s mc-launcher | grep '^Status:' \
             && command -v mc-launcher && mc-launcher --version \
             && test -s /usr/share/doc/mc-launcher/copyright"
        ),
    ]);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("Status: install ok installed"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("/usr/bin/mc-launcher\n"), "{}", o.stdout);
    assert!(
        o.stdout.contains(&format!(
            "mc-launcher {}\ncommit:",
            common::release::version()
        )),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("target:    x86_64-unknown-linux-musl\n"),
        "{}",
        o.stdout
    );
}

/// The release images hold `/mc-launcher` only, for their platform; the
/// example built with `COPY --from=` one of them runs as the example does:
/// the page, healthy, a clean `docker stop`.
#[test]
fn release_image_copy_from_builds_the_example_that_runs() {
    use common::release::{deb_arch, platform, release, release_sh, version, ARCHES};
    let rel = release();
    let repo_name = format!("mc-launcher/release-test-{}", std::process::id());
    let tag = |arch: &str| format!("{repo_name}:{}-{}", version(), deb_arch(arch));
    let plain = format!("{repo_name}:{}", version());
    for t in ARCHES.iter().map(|a| tag(a)).chain([plain.clone()]) {
        remove_at_exit(&t);
    }
    release_sh(
        &["--out", &rel.dist.to_string_lossy(), "--images-only"],
        &[("MC_RELEASE_IMAGE", Path::new(&repo_name))],
    );
    assert_eq!(
        must(&["image", "inspect", "-f", "{{.Id}}", &plain]),
        must(&["image", "inspect", "-f", "{{.Id}}", &tag("x86_64")]),
        "{plain} is this machine's arch"
    );
    for arch in ARCHES {
        let img = tag(arch);
        assert_eq!(
            must(&[
                "image",
                "inspect",
                "-f",
                "{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}} {{json .Config.Entrypoint}}",
                &img
            ]),
            format!("{} [\"/mc-launcher\"]", platform(arch))
        );
        // Its one layer: /mc-launcher, the release binary (the saved image's
        // manifest names its layers).
        let t = TempDir::new("release-image");
        let saved = t.join("image.tar");
        must(&["save", "-o", &saved.to_string_lossy(), &img]);
        let tar = |args: &[&str]| -> Vec<u8> {
            let o = Command::new("tar")
                .args(args)
                .current_dir(t.path())
                .output()
                .expect("tar");
            assert!(
                o.status.success(),
                "tar {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            o.stdout
        };
        tar(&["-xf", "image.tar"]);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(t.join("manifest.json")).unwrap())
                .expect("manifest.json");
        let layers = manifest[0]["Layers"].as_array().expect("Layers");
        assert_eq!(layers.len(), 1, "{arch}: {manifest}");
        let layer = layers[0].as_str().unwrap();
        let files = String::from_utf8(tar(&["-tf", layer])).unwrap();
        assert_eq!(files, "mc-launcher\n", "{arch}");
        assert!(
            tar(&["-xOf", layer, "mc-launcher"]) == std::fs::read(rel.binary(arch)).unwrap(),
            "{arch}: not the release binary"
        );
    }

    // The example, its binary copied from the release image.
    let t = TempDir::new("docker-copy-from");
    for dir in ["layout", "example-project"] {
        let ok = Command::new("cp")
            .arg("-R")
            .arg(repo().join(dir))
            .arg(t.path())
            .status()
            .expect("cp")
            .success();
        assert!(ok, "cp {dir}");
    }
    let dockerfile = std::fs::read_to_string(repo().join("example-project/Dockerfile")).unwrap();
    let copy = "COPY mc-launcher /usr/local/bin/mc-launcher\n";
    assert!(dockerfile.contains(copy), "{dockerfile}");
    write(
        &t.join("Dockerfile"),
        &dockerfile.replace(
            copy,
            &format!("COPY --from={plain} /mc-launcher /usr/local/bin/mc-launcher\n"),
        ),
    );
    let img = test_tag("copy-from");
    build(
        t.path(),
        &img,
        &["--build-arg", &format!("BASE={}", base_image())],
    );
    let c = Container::run("copy-from", &["--health-interval=1s"], &[&img]);
    let page = c.page(8080, "heartbeat 1 of worker");
    assert!(
        page.contains("<h1>An example makina project</h1>"),
        "{page}"
    );
    let healthy = wait_until(Duration::from_secs(20), || {
        c.state("Health.Status") == "healthy"
    });
    assert!(healthy, "never healthy: {}", c.state("Health.Status"));
    let v = c.exec(&["mc-launcher", "--version"]);
    assert!(
        v.stdout
            .starts_with(&format!("mc-launcher {}\n", version())),
        "{}",
        v.stdout
    );
    must(&["stop", &c.name]);
    assert_eq!(c.state("ExitCode"), "0", "{}", c.logs());
    assert_summaries(&c.logs(), &["web", "worker"]);
}
