//! The example project as a real image on the local Docker engine
//! (scripts/docker-image.sh builds it from local files: a debootstrap
//! rootfs imported as the base, cached by tag, then
//! example-project/Dockerfile with the binary under test), and the
//! migration of an original-style image, and the static binary alone in an
//! image with no libc at all. Images hold the release artifact, the static
//! binary (scripts/build-static.sh, or `MC_STATIC_BIN`). Every container and
//! volume a test makes is removed when the test ends.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const IMAGE: &str = "mc-launcher/example:test";
const LEGACY: &str = "mc-launcher/legacy:test";
const MIGRATED: &str = "mc-launcher/legacy-migrated:test";
const VOLUME_DIR: &str = "/srv/projects/example/data";

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn docker(args: &[&str]) -> Out {
    let o = Command::new("docker").args(args).output().expect("docker");
    Out {
        ok: o.status.success(),
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn must(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.ok, "docker {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout.trim().to_string()
}

/// The release artifact: `MC_STATIC_BIN`, or what scripts/build-static.sh
/// builds (a cargo no-op when it is current).
fn static_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MC_STATIC_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let o = Command::new(repo().join("scripts/build-static.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("build-static.sh");
        assert!(o.status.success(), "scripts/build-static.sh failed");
        PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
    })
}

/// The example image, built once per test run from the static binary.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let st = Command::new(repo().join("scripts/docker-image.sh"))
            .arg(static_bin())
            .arg(IMAGE)
            .status()
            .expect("docker-image.sh");
        assert!(st.success(), "building {IMAGE} failed");
    });
    IMAGE
}

/// A container (and its volumes) removed when dropped.
struct Container {
    name: String,
    volumes: Vec<String>,
}

impl Container {
    fn run(tag: &str, opts: &[&str], cmd: &[&str]) -> Container {
        let name = format!("mcl-{tag}-{}", std::process::id());
        let _ = docker(&["rm", "-f", &name]);
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(opts);
        args.extend_from_slice(cmd);
        must(&args);
        Container {
            name,
            volumes: Vec::new(),
        }
    }
    fn ip(&self) -> String {
        must(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            &self.name,
        ])
    }
    fn logs(&self) -> String {
        let o = docker(&["logs", &self.name]);
        o.stdout + &o.stderr
    }
    fn state(&self, field: &str) -> String {
        must(&[
            "inspect",
            "-f",
            &format!("{{{{.State.{field}}}}}"),
            &self.name,
        ])
    }
    fn page(&self, port: u16, want: &str) -> String {
        let addr = format!("{}:{port}", self.ip());
        let mut page = String::new();
        let ok = wait_until(Duration::from_secs(30), || {
            page = http_get(&addr, "/").unwrap_or_default();
            page.contains(want)
        });
        assert!(ok, "{want:?} never on the page: {page:?}\n{}", self.logs());
        page
    }
    fn wait_exit(&self, limit: Duration) -> i32 {
        let ok = wait_until(limit, || self.state("Running") == "false");
        assert!(ok, "the container did not exit:\n{}", self.logs());
        self.state("ExitCode").parse().expect("exit code")
    }
    fn exec(&self, cmd: &[&str]) -> Out {
        let mut args = vec!["exec", &self.name];
        args.extend_from_slice(cmd);
        docker(&args)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // -v: the anonymous volumes (the image's VOLUME) go too.
        let _ = docker(&["rm", "-f", "-v", &self.name]);
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

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

#[test]
fn named_volume_keeps_data_across_restart_and_stops_fast() {
    let img = image();
    let vol = format!("mcl-vol-{}", std::process::id());
    let _ = docker(&["volume", "rm", "-f", &vol]);
    must(&["volume", "create", &vol]);
    let mount = format!("{vol}:{VOLUME_DIR}");
    let mut c = Container::run("named", &["--health-interval=1s", "-v", &mount], &[img]);
    c.volumes.push(vol.clone());
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
    let img = image();
    let t = TempDir::new("docker-bind");
    let vol = t.join("volume");
    write(
        &vol.join("configuration/pillar.sls"),
        "makina-projects.example:\n  data:\n    site_name: Site from the bound volume\n",
    );
    let key = t.join("op_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    std::fs::create_dir_all(vol.join("ssh")).expect("ssh dir");
    std::fs::copy(t.join("op_key.pub"), vol.join("ssh/operator.pub")).expect("copy key");
    let mount = format!("{}:{VOLUME_DIR}", vol.display());
    let c = Container::run("bind", &["-v", &mount], &[img]);
    c.page(8080, "<h1>Site from the bound volume</h1>");

    let ip = c.ip();
    let mut said = String::new();
    let logged_in = wait_until(Duration::from_secs(20), || {
        let o = Command::new("ssh")
            .args(["-i"])
            .arg(&key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
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
    let img = image();
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
    let img = image();
    let vol = format!("mcl-rovol-{}", std::process::id());
    let _ = docker(&["volume", "rm", "-f", &vol]);
    must(&["volume", "create", &vol]);
    let mount = format!("{vol}:{VOLUME_DIR}");
    let mut c = Container::run(
        "ro",
        &["--read-only", "--tmpfs", "/run", "-v", &mount],
        &[img],
    );
    c.volumes.push(vol);
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
    let img = image();
    let t = TempDir::new("docker-user");
    let vol = t.join("volume");
    std::fs::create_dir_all(vol.join("ssh")).expect("vol");
    // A key is there, but a non-root launcher cannot install it for root.
    write(
        &vol.join("ssh/x.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x\n",
    );
    let st = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(&vol)
        .status()
        .expect("chown");
    assert!(st.success());
    let mount = format!("{}:{VOLUME_DIR}", vol.display());
    let c = Container::run("user", &["--user", "1000:1000", "-v", &mount], &[img]);
    c.page(8080, "heartbeat 1 of worker");
    let health = c.exec(&["mc-launcher", "ctl", "health"]);
    assert_eq!(health.code, Some(0), "{}{}", health.stdout, health.stderr);
    let logs = c.logs();
    assert!(logs.contains("ssh: skipped, not running as root"), "{logs}");
    assert!(
        logs.contains("sshd: skipped, not running as root"),
        "{logs}"
    );
    let ps = c.exec(&["ps", "-o", "user=,args=", "-e"]).stdout;
    assert!(!ps.lines().any(|l| l.starts_with("root")), "{ps}");
    timed_stop(&c);
    assert_eq!(c.state("ExitCode"), "0", "{logs}");
}

/// An original-style image (CMD bin/launch.sh …, circus INI files) becomes
/// an mc-launcher image by changing only its CMD (and adding the binary).
#[test]
fn original_style_image_migrates_by_changing_its_cmd() {
    let base = image(); // makes sure the base image exists
    assert!(!base.is_empty());
    let fixture = repo().join("tests/fixtures/migration");
    build(&fixture, LEGACY, &[]);
    let t = TempDir::new("docker-migrate");
    std::fs::copy(static_bin(), t.join("mc-launcher")).expect("copy bin");
    write(
        &t.join("Dockerfile"),
        &format!(
            "FROM {LEGACY}\nCOPY mc-launcher /usr/local/bin/mc-launcher\n\
             CMD [\"mc-launcher\", \"ssh_config=True\", \"re_configure=True\"]\n"
        ),
    );
    build(t.path(), MIGRATED, &[]);
    let c = Container::run("migrated", &[], &[MIGRATED]);
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

fn build(ctx: &Path, tag: &str, extra: &[&str]) {
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
